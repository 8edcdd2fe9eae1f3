//! Time as the engine sees it.
//!
//! Freshness decisions (`fresh_until`, stale limits, schedule boundaries) use a [`Clock`] that reads
//! wall-clock milliseconds since the UNIX epoch: entries shared through Redis are compared across
//! processes and machines, so a per-process monotonic clock would not do. Tests drive a
//! [`ManualClock`]; demos run a [`ScaledClock`] where an hour can pass in a minute. User-visible
//! latency is measured separately with `std::time::Instant`, which no clock here replaces.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch.
pub type Millis = u64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the UNIX epoch.
    fn now_ms(&self) -> Millis;

    /// How many clock milliseconds pass per real millisecond (1.0 outside demos).
    fn speed(&self) -> f64 {
        1.0
    }
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's wall clock, read coarsely where that is cheaper.
///
/// On Linux it reads `CLOCK_REALTIME_COARSE`: the time of the last timer tick (1–4 ms old), in
/// about 5 ns instead of the 40–50 ns a precise read costs in a VM. Every freshness decision is
/// about TTLs of minutes, so a few milliseconds of coarseness change nothing, while a hit reads
/// the clock once and is otherwise ~50 ns.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> Millis {
        coarse_now_ms()
    }
}

/// `CLOCK_REALTIME_COARSE` in ms since the epoch (see [`SystemClock`]).
#[cfg(target_os = "linux")]
#[inline]
pub fn coarse_now_ms() -> Millis {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_REALTIME_COARSE exists on every Linux
    // since 2.6.32; clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        return system_now_ms();
    }
    super::num::to_u64(ts.tv_sec) * 1000 + super::num::to_u64(ts.tv_nsec) / 1_000_000
}

/// The wall clock in ms since the epoch (see [`SystemClock`]).
#[cfg(not(target_os = "linux"))]
#[inline]
pub fn coarse_now_ms() -> Millis {
    system_now_ms()
}

/// Wall-clock milliseconds since the epoch; a clock set before 1970 reads as 0.
pub fn system_now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(super::num::ms)
        .unwrap_or(0)
}

/// A clock that only moves when told to. Tests use it so that no test sleeps to wait for a TTL.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at `start_ms`.
    pub fn new(start_ms: Millis) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicU64::new(start_ms),
        })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(super::num::ms(by), Ordering::SeqCst);
    }

    /// Sets the clock; it may go backwards, as a real wall clock can.
    pub fn set(&self, to_ms: Millis) {
        self.now.store(to_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

/// A clock that runs `speed` times faster than real time from a chosen origin. The demo uses it so
/// that an hourly warehouse update happens every minute (`--hour 60s` is speed 60).
#[derive(Debug)]
pub struct ScaledClock {
    origin_ms: Millis,
    started: Instant,
    speed: f64,
}

impl ScaledClock {
    /// A clock that reads `origin_ms` now and runs `speed` times faster than real time.
    /// A speed that is not a positive finite number is taken as 1.
    pub fn new(origin_ms: Millis, speed: f64) -> Arc<Self> {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Arc::new(Self {
            origin_ms,
            started: Instant::now(),
            speed,
        })
    }

    /// Converts a span of clock time into the real time it takes to pass.
    pub fn real_duration(&self, clock_span: Duration) -> Duration {
        clock_span.div_f64(self.speed)
    }
}

impl Clock for ScaledClock {
    fn now_ms(&self) -> Millis {
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0 * self.speed;
        self.origin_ms
            .saturating_add(super::num::f64_to_u64(elapsed))
    }

    fn speed(&self) -> f64 {
        self.speed
    }
}

/// Parses a duration written like `90s`, `5m`, `1h`, `250ms`, `2h30m` or `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "`{}` is not a duration; write e.g. 500ms, 30s, 5m, 1h or 1h30m",
            t.escape_default()
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86_400.0,
            _ => return Err(bad()),
        };
        if !secs.is_finite() || secs > 1e12 {
            return Err(bad());
        }
        total += Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), without a date library.
pub fn format_rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days(super::num::to_i64(secs / 86_400));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

/// [`format_rfc3339`] into a fixed buffer, without an allocation or a formatter: for the
/// sidecar's answers, which carry one each. `None` past the year 9999 (the string form then has
/// more digits).
pub fn rfc3339_bytes(ms: Millis) -> Option<[u8; 24]> {
    fn put(slot: &mut [u8], mut value: u64) {
        for digit in slot.iter_mut().rev() {
            *digit = b'0' + u8::try_from(value % 10).unwrap_or(0);
            value /= 10;
        }
    }
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days(super::num::to_i64(secs / 86_400));
    let year = u64::try_from(y).ok().filter(|y| *y <= 9999)?;
    let rem = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put(&mut out[0..4], year);
    put(&mut out[5..7], u64::from(mo));
    put(&mut out[8..10], u64::from(d));
    put(&mut out[11..13], rem / 3600);
    put(&mut out[14..16], (rem / 60) % 60);
    put(&mut out[17..19], rem % 60);
    put(&mut out[20..23], ms % 1000);
    Some(out)
}

/// Formats a batch label the way the baseline's ETL does: `YYYYMMDD-HH:MM` (UTC).
pub fn format_batch_label(ms: Millis) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days(super::num::to_i64(secs / 86_400));
    let rem = secs % 86_400;
    format!(
        "{y:04}{mo:02}{d:02}-{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60
    )
}

/// The UTC calendar date (year, month 1-12, day 1-31) of a timestamp.
pub fn civil_date(ms: Millis) -> (i64, u32, u32) {
    civil_from_days(super::num::to_i64(ms / 86_400_000))
}

/// Days since 1970-01-01 to a (year, month, day) civil date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are small by construction (1..=31 and 1..=12).
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        // 2024-11-02T10:00:00Z
        let ms = 1_730_541_600_000;
        assert_eq!(format_rfc3339(ms), "2024-11-02T10:00:00.000Z");
        assert_eq!(format_batch_label(ms + 59_999), "20241102-10:00");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_fixed_buffer_form_is_the_string_form() {
        let mut rng = fastrand::Rng::with_seed(3339);
        let year_9999_end = 253_402_300_799_999;
        let samples = [0, 999, 1000, 86_399_999, 951_782_400_000, year_9999_end]
            .into_iter()
            .chain((0..10_000).map(|_| rng.u64(0..=year_9999_end)));
        for ms in samples {
            let bytes = rfc3339_bytes(ms).expect("within the year 9999");
            assert_eq!(
                std::str::from_utf8(&bytes).unwrap(),
                format_rfc3339(ms),
                "{ms}"
            );
        }
        assert_eq!(rfc3339_bytes(year_9999_end + 1), None);
        // A leap day.
        assert_eq!(format_batch_label(951_782_400_000), "20000229-00:00");
    }

    #[test]
    fn the_coarse_system_clock_agrees_with_the_precise_one() {
        let coarse = SystemClock.now_ms();
        let precise = system_now_ms();
        assert!(
            precise + 5 >= coarse && coarse + 50 >= precise,
            "{coarse} vs {precise}"
        );
    }

    #[test]
    fn durations_parse_and_nonsense_is_refused() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "10", "5 minutes", "-1s", "1e400s", "s", "1x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
        clock.set(10);
        assert_eq!(clock.now_ms(), 10);
    }

    #[test]
    fn scaled_clock_rejects_nonsense_speed() {
        let clock = ScaledClock::new(0, f64::NAN);
        assert_eq!(clock.speed(), 1.0);
        let fast = ScaledClock::new(0, 60.0);
        assert_eq!(
            fast.real_duration(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }
}
