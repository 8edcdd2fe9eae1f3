//! How long an answer stays fresh, when it may be served stale, and when it is refreshed early.
//!
//! A [`Policy`] is set per query (with defaults) and validated when it is built: a zero or inverted
//! window, a negative or non-finite XFetch beta, or a stale limit shorter than the longest fresh TTL
//! is rejected with a message, never discovered at 10:00:01.
//!
//! The fresh TTL is a *backstop*: versioned keys do the real invalidation. It ends at the first
//! schedule boundary (on the hour by default) plus a grace period for the ETL to finish, plus a random
//! jitter so that entries filled together do not expire together. A floor keeps the baseline's flaw away:
//! at 9:59:59 the baseline caches for one second (and for zero seconds, which Redis rejects, in the
//! hour's last second); here the TTL is never shorter than `min_ttl`.
//!
//! [`Strategy`] picks the mechanism bundle. `freshcache` uses every mechanism together; the others
//! reproduce the baseline recipes, flaws included, so that benchmarks can put them side by side.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::Millis;
use super::num::{f64_to_u64, ms};

/// What a request does when its key misses right after a version bump while an answer computed at
/// the previous version is still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnUpdate {
    /// Wait for the fresh answer (coalesced onto one load). Nobody sees the old data after an update.
    #[default]
    Wait,
    /// Answer at once with the previous version, marked `Stale` with its age, and load in the background.
    ServeStale,
}

impl FromStr for OnUpdate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wait" => Ok(Self::Wait),
            "serve-stale" => Ok(Self::ServeStale),
            other => Err(format!(
                "unknown on-update behaviour `{}`; expected `wait` or `serve-stale`",
                other.escape_default()
            )),
        }
    }
}

/// Freshness rules for one query. Build with [`Policy::builder`] or start from [`Policy::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub(crate) update_interval: Duration,
    pub(crate) update_offset: Duration,
    pub(crate) grace: Duration,
    pub(crate) min_ttl: Duration,
    pub(crate) jitter: Duration,
    pub(crate) swr_window: Duration,
    pub(crate) max_stale: Duration,
    pub(crate) beta: f64,
    pub(crate) on_update: OnUpdate,
    pub(crate) max_wait: Duration,
    pub(crate) stampede_threshold: u32,
    /// `grace` in ms: `fresh_until - grace` is at or after the scheduled update.
    pub(crate) after_update_ms: u64,
    /// An integer bound on XFetch's reach per millisecond of load time (0 when `beta` is 0):
    /// `ceil(40 * beta) + 1`, so that `load_ms * xfetch_reach_per_ms` is never below the reach
    /// the exact formula computes in floating point (see `engine::xfetch_due`).
    pub(crate) xfetch_reach_per_ms: u64,
}

/// See [`Policy::xfetch_reach_per_ms`]: `-ln(rand) < 40` for every draw XFetch makes, so an
/// entry is never picked further than `40 * beta * load_ms` from its expiry. The `+ 1` per
/// millisecond covers the rounding of the float product (a relative error below 2^-50, far less
/// than `1 / (40 * beta)` for any beta below 10^10); above that, the bound saturates and the
/// pre-check never decides.
fn xfetch_reach_per_ms(beta: f64) -> u64 {
    let reach = 40.0 * beta;
    if beta <= 0.0 {
        0
    } else if reach < 1e12 {
        super::num::f64_to_u64(reach.ceil()) + 1
    } else {
        u64::MAX
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            update_interval: Duration::from_secs(3600),
            update_offset: Duration::ZERO,
            grace: Duration::from_secs(600),
            min_ttl: Duration::from_secs(60),
            jitter: Duration::from_secs(120),
            swr_window: Duration::from_secs(300),
            max_stale: Duration::from_secs(2 * 3600),
            beta: 1.0,
            on_update: OnUpdate::Wait,
            max_wait: Duration::from_secs(30),
            stampede_threshold: 10,
            after_update_ms: 600_000,
            xfetch_reach_per_ms: 41,
        }
    }
}

/// A policy that makes no sense, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {0}")]
pub struct PolicyError(pub String);

impl Policy {
    /// Starts from the defaults.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Self::default(),
        }
    }

    /// The schedule's period (an hour by default).
    pub fn update_interval(&self) -> Duration {
        self.update_interval
    }
    /// Stale-while-revalidate window after the fresh TTL ends.
    pub fn swr_window(&self) -> Duration {
        self.swr_window
    }
    /// The oldest answer ever served as stale (the stale-if-error limit).
    pub fn max_stale(&self) -> Duration {
        self.max_stale
    }
    /// XFetch's beta (0 turns early refresh off).
    pub fn beta(&self) -> f64 {
        self.beta
    }
    /// What a miss right after an update does.
    pub fn on_update(&self) -> OnUpdate {
        self.on_update
    }
    /// The longest a request waits for a load before giving up (or serving stale).
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }
    /// How many waiters make a load count as an absorbed stampede.
    pub fn stampede_threshold(&self) -> u32 {
        self.stampede_threshold
    }

    /// The longest fresh TTL this policy can give: a whole interval, plus grace, plus jitter.
    pub fn max_fresh_ttl(&self) -> Duration {
        self.update_interval + self.grace + self.jitter
    }

    /// When an entry created at `now_ms` stops being fresh: the next schedule boundary plus grace,
    /// never sooner than `min_ttl`, plus `jitter_fraction` (0..1) of the jitter.
    pub fn fresh_until(&self, now_ms: Millis, jitter_fraction: f64) -> Millis {
        let interval = ms(self.update_interval).max(1);
        let offset = ms(self.update_offset) % interval;
        // The next boundary strictly after now: boundaries are offset + k * interval.
        let since = now_ms.saturating_sub(offset) % interval;
        let next_boundary = now_ms + (interval - since);
        let by_schedule = next_boundary + ms(self.grace);
        let floor = now_ms + ms(self.min_ttl);
        let jitter = f64_to_u64(ms(self.jitter) as f64 * jitter_fraction.clamp(0.0, 1.0));
        by_schedule.max(floor) + jitter
    }

    /// Until when a store should keep an entry created at `created_ms` that is fresh until
    /// `fresh_until`: as long as any rule here could still serve it.
    pub fn keep_until(&self, created_ms: Millis, fresh_until: Millis) -> Millis {
        (fresh_until + ms(self.swr_window)).max(created_ms + ms(self.max_stale))
    }
}

/// Builds a [`Policy`], validating it at the end.
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// The schedule period and its offset (the ETL lands at `offset + k * interval`).
    pub fn schedule(mut self, interval: Duration, offset: Duration) -> Self {
        self.policy.update_interval = interval;
        self.policy.update_offset = offset;
        self
    }
    /// Time the ETL may take after a boundary before entries expire by TTL.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.policy.grace = grace;
        self
    }
    /// The shortest fresh TTL ever given.
    pub fn min_ttl(mut self, min_ttl: Duration) -> Self {
        self.policy.min_ttl = min_ttl;
        self
    }
    /// The largest random addition to a fresh TTL.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.policy.jitter = jitter;
        self
    }
    /// Stale-while-revalidate window after the fresh TTL.
    pub fn swr_window(mut self, window: Duration) -> Self {
        self.policy.swr_window = window;
        self
    }
    /// The oldest answer ever served as stale (stale-if-error limit).
    pub fn max_stale(mut self, limit: Duration) -> Self {
        self.policy.max_stale = limit;
        self
    }
    /// XFetch beta: 1.0 is the paper's default, larger refreshes earlier, 0 disables.
    pub fn beta(mut self, beta: f64) -> Self {
        self.policy.beta = beta;
        self
    }
    /// What a miss right after an update does.
    pub fn on_update(mut self, on_update: OnUpdate) -> Self {
        self.policy.on_update = on_update;
        self
    }
    /// The longest a request waits for a load.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.policy.max_wait = max_wait;
        self
    }
    /// How many waiters make a load count as an absorbed stampede.
    pub fn stampede_threshold(mut self, waiters: u32) -> Self {
        self.policy.stampede_threshold = waiters;
        self
    }

    /// Validates and returns the policy.
    pub fn build(self) -> Result<Policy, PolicyError> {
        let mut p = self.policy;
        p.after_update_ms = ms(p.grace);
        p.xfetch_reach_per_ms = xfetch_reach_per_ms(p.beta);
        let bad = |msg: String| Err(PolicyError(msg));
        if p.update_interval.is_zero() {
            return bad("update interval must be greater than zero".into());
        }
        if p.min_ttl.is_zero() {
            return bad(
                "min TTL must be greater than zero (a zero TTL is the baseline's 9:59:59 bug)"
                    .into(),
            );
        }
        if p.swr_window.is_zero() {
            return bad("stale-while-revalidate window must be greater than zero".into());
        }
        if p.max_stale.is_zero() {
            return bad("stale limit must be greater than zero".into());
        }
        if p.max_wait.is_zero() {
            return bad("max wait must be greater than zero".into());
        }
        if !p.beta.is_finite() || p.beta < 0.0 {
            return bad(format!(
                "early-refresh beta must be a finite number >= 0, got {}",
                p.beta
            ));
        }
        if p.max_stale < p.max_fresh_ttl() {
            return bad(format!(
                "stale limit {:?} is shorter than the longest fresh TTL {:?} (interval + grace + jitter): \
                 an entry would be too old to serve stale before it stops being fresh",
                p.max_stale,
                p.max_fresh_ttl()
            ));
        }
        if p.stampede_threshold == 0 {
            return bad("stampede threshold must be at least 1 waiter".into());
        }
        Ok(p)
    }
}

/// A named bundle of mechanisms, selectable at runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Baseline strategy 1: TTL to the next hour; every miss queries the warehouse.
    Ttl,
    /// Baseline stampede fix 2: a lock; waiters poll every 100 ms for 5 s, then query anyway.
    Lock,
    /// Baseline stampede fix 3: serve up to 2 h old, refresh in the background after 1 h, one
    /// refresh per reader.
    Swr,
    /// Baseline stampede fix 1: refresh with probability `1 - ttl_left / 3600`, one refresh per reader.
    Early,
    /// Baseline strategy 4 (with strategy 2's events): a global minute-resolution version in the key;
    /// every miss queries the warehouse.
    Versioned,
    /// Everything together: per-table versions, single-flight, stale-while-revalidate, XFetch early
    /// refresh, stale-if-error.
    #[default]
    Freshcache,
}

impl Strategy {
    /// Every strategy, the baseline's first and ours last.
    pub const ALL: [Strategy; 6] = [
        Strategy::Ttl,
        Strategy::Lock,
        Strategy::Swr,
        Strategy::Early,
        Strategy::Versioned,
        Strategy::Freshcache,
    ];

    /// The strategy's name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Ttl => "ttl",
            Strategy::Lock => "lock",
            Strategy::Swr => "swr",
            Strategy::Early => "early",
            Strategy::Versioned => "versioned",
            Strategy::Freshcache => "freshcache",
        }
    }

    /// One line on what it does.
    pub fn describe(self) -> &'static str {
        match self {
            Strategy::Ttl => "baseline: TTL to the next hour, no coalescing",
            Strategy::Lock => "baseline: lock, waiters poll 100 ms for 5 s then query anyway",
            Strategy::Swr => {
                "baseline: serve up to 2 h old, refresh after 1 h, a refresh per reader"
            }
            Strategy::Early => "baseline: probabilistic early refresh, a refresh per reader",
            Strategy::Versioned => "baseline: global version in the key, no coalescing",
            Strategy::Freshcache => {
                "per-table versions, single-flight, SWR, XFetch, stale-if-error"
            }
        }
    }

    pub(crate) fn from_index(i: u8) -> Self {
        Self::ALL.get(i as usize).copied().unwrap_or_default()
    }

    pub(crate) fn index(self) -> u8 {
        u8::try_from(Self::ALL.iter().position(|s| *s == self).unwrap_or(5)).unwrap_or(5)
    }

    /// How long a baseline recipe caches an answer loaded at `now_ms`, in ms; `None` when it
    /// does not cache it at all. `ttl` is the original recipe's
    /// `int((next_hour - now).total_seconds())`: whole seconds, so 0 in the hour's last second,
    /// which Redis rejects (`SETEX` with 0) — the answer is not cached. `freshcache` has no
    /// such rule (its policy decides); it gets the hour, as the other baselines do.
    pub fn baseline_ttl_ms(self, now_ms: Millis) -> Option<u64> {
        const HOUR_MS: u64 = 3_600_000;
        match self {
            Strategy::Ttl => {
                let secs = (HOUR_MS - now_ms % HOUR_MS) / 1000;
                (secs > 0).then_some(secs * 1000)
            }
            Strategy::Swr => Some(2 * HOUR_MS),
            _ => Some(HOUR_MS),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown strategy `{}`; expected one of: {}",
                    s.escape_default(),
                    Self::ALL.map(|s| s.name()).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_carries_the_same_derived_values_as_a_built_policy() {
        assert_eq!(Policy::builder().build(), Ok(Policy::default()));
    }

    const HOUR: u64 = 3_600_000;
    // 2024-11-02T09:05:00Z
    const T0905: u64 = 1_730_538_300_000;

    #[test]
    fn fresh_until_is_next_boundary_plus_grace() {
        let p = Policy::builder().jitter(Duration::ZERO).build().unwrap();
        let ten = T0905 - 5 * 60_000 + HOUR;
        assert_eq!(p.fresh_until(T0905, 0.5), ten + 600_000);
    }

    #[test]
    fn fresh_until_is_never_shorter_than_the_floor() {
        let p = Policy::builder()
            .grace(Duration::ZERO)
            .jitter(Duration::ZERO)
            .build()
            .unwrap();
        // 09:59:59.500: the baseline would cache for 0 s.
        let late = T0905 - 5 * 60_000 + HOUR - 500;
        assert_eq!(p.fresh_until(late, 0.0), late + 60_000);
        // Exactly on the boundary: the boundary is "now", so the next one is an hour away.
        let on = T0905 - 5 * 60_000;
        assert_eq!(p.fresh_until(on, 0.0), on + HOUR);
    }

    #[test]
    fn jitter_spreads_expiry() {
        let p = Policy::default();
        let a = p.fresh_until(T0905, 0.0);
        let b = p.fresh_until(T0905, 1.0);
        assert_eq!(b - a, 120_000);
    }

    #[test]
    fn bad_policies_are_rejected_with_a_message() {
        let cases = [
            Policy::builder().swr_window(Duration::ZERO).build(),
            Policy::builder().max_stale(Duration::from_secs(60)).build(),
            Policy::builder().beta(-0.5).build(),
            Policy::builder().beta(f64::NAN).build(),
            Policy::builder().min_ttl(Duration::ZERO).build(),
            Policy::builder().max_wait(Duration::ZERO).build(),
            Policy::builder()
                .schedule(Duration::ZERO, Duration::ZERO)
                .build(),
        ];
        for c in cases {
            let err = c.expect_err("must be rejected");
            assert!(err.to_string().starts_with("invalid policy: "), "{err}");
        }
        assert!(Policy::builder().beta(0.0).build().is_ok());
    }

    #[test]
    fn strategies_round_trip_by_name() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>().unwrap(), s);
            assert_eq!(Strategy::from_index(s.index()), s);
        }
        let err = "nope".parse::<Strategy>().unwrap_err();
        assert!(err.contains("freshcache"));
    }
}
