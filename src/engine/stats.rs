//! What the engine counts, cheaply enough to count on every hit.
//!
//! Counters are striped, and a stripe has one writer: each live thread claims a stripe index of its
//! own (returned when the thread ends), so it counts with a plain load and store — no atomic
//! read-modify-write, no cache line bounced between cores. Threads beyond [`OWNED_STRIPES`] share
//! one extra stripe and use atomic adds there. A [`StatsSnapshot`] sums the stripes. Latency
//! histograms (hdrhistogram, microseconds) are striped behind uncontended mutexes. Every miss,
//! stale answer and load is timed; hits are timed one in [`HIT_SAMPLE`] and recorded with that
//! weight, which keeps percentiles unbiased while keeping two clock reads off most hits.

use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Stripes with a single owning thread each.
pub const OWNED_STRIPES: usize = 64;
/// The stripe shared (with atomic adds) by threads that found no stripe of their own.
const SHARED_STRIPE: usize = OWNED_STRIPES;
const STRIPES: usize = OWNED_STRIPES + 1;
const HISTOGRAM_STRIPES: usize = 16;

/// One hit in this many is timed (and recorded with this weight).
pub const HIT_SAMPLE: u64 = 64;

/// A counter the engine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Every `get` that was not a fresh hit (fresh hits are counted once, in `FreshHits`, and
    /// added back by the snapshot).
    Requests,
    /// Answers served fresh from the cache.
    FreshHits,
    /// Answers served stale (kept apart from hits).
    StaleServed,
    /// Requests that found no servable entry and waited for a load.
    Misses,
    /// Requests that joined another caller's load instead of starting one.
    Coalesced,
    /// Warehouse queries started.
    Loads,
    /// Warehouse queries that failed (errors, panics, aborts).
    LoadErrors,
    /// Refreshes started early by XFetch.
    EarlyRefreshes,
    /// Background refreshes started by stale-while-revalidate.
    SwrRefreshes,
    /// Loads that absorbed a stampede (had at least the threshold of waiters).
    StampedesAbsorbed,
    /// Requests answered with an error.
    Errors,
    /// Requests that gave up waiting (max wait).
    WaitTimeouts,
    /// Answers too large to store.
    TooLarge,
    /// Refreshes started by refresh-ahead or warm.
    RefreshAhead,
    /// Loads answered by the shared tier (another process had stored it).
    SharedHits,
    /// Loads that waited on another process's lease.
    LeaseWaits,
    /// Loads done without the shared tier because it was unreachable.
    Degraded,
    /// Requests that waited (counted in `Misses`) and were answered stale: the load failed or
    /// was too slow, or the shared tier's entry was served while it revalidates.
    WaitedStale,
    /// Of `WaitedStale`, those that had joined another caller's load (counted in `Coalesced`).
    CoalescedStale,
    /// Loads whose answer was not stored in the shared tier because their lease had been taken
    /// over by another process (whose answer wins).
    LeaseLost,
}

const COUNTERS: usize = 20;

#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    counters: [AtomicU64; COUNTERS],
}

/// An empty latency histogram: 1 µs to 1 h, two significant figures (a few KiB).
pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 2 significant figures: a few KiB each.
    // Constant, valid bounds: this cannot fail at run time.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

struct Histograms {
    user: Histogram<u64>,
    load: Histogram<u64>,
}

/// The engine's counters and histograms.
pub struct Stats {
    /// A fixed-size array: an index bounded by `SHARED_STRIPE` needs no bounds check.
    stripes: Box<[Stripe; STRIPES]>,
    hist: Box<[Mutex<Histograms>]>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
static FREE_STRIPES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// This thread's stripe index, held from its first count until it ends.
struct ThreadSlot {
    stripe: usize,
    tick: Cell<u64>,
}

impl ThreadSlot {
    fn claim() -> Self {
        let reused = FREE_STRIPES.lock().pop();
        let stripe = reused.unwrap_or_else(|| {
            let next = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
            if next < OWNED_STRIPES {
                next
            } else {
                SHARED_STRIPE
            }
        });
        Self {
            stripe,
            tick: Cell::new(0),
        }
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        // Handing the index back through the mutex orders this thread's last plain store before
        // the next owner's first load.
        if self.stripe < OWNED_STRIPES {
            FREE_STRIPES.lock().push(self.stripe);
        }
    }
}

thread_local! {
    static SLOT: ThreadSlot = ThreadSlot::claim();
}

#[inline]
fn stripe_index() -> usize {
    SLOT.try_with(|s| s.stripe).unwrap_or(SHARED_STRIPE)
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Zeroed statistics.
    pub fn new() -> Self {
        Self {
            stripes: Box::new(std::array::from_fn(|_| Stripe::default())),
            hist: (0..HISTOGRAM_STRIPES)
                .map(|_| {
                    Mutex::new(Histograms {
                        user: histogram(),
                        load: histogram(),
                    })
                })
                .collect(),
        }
    }

    /// Adds one to a counter.
    #[inline]
    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.add_at(stripe_index(), c, n);
    }

    /// This thread's stripe, and whether this request should be timed (one in [`HIT_SAMPLE`] per
    /// thread): one thread-local access for both.
    #[inline]
    pub fn thread_slot(&self) -> (usize, bool) {
        SLOT.try_with(|s| {
            let n = s.tick.get().wrapping_add(1);
            s.tick.set(n);
            (s.stripe, n % HIT_SAMPLE == 0)
        })
        .unwrap_or((SHARED_STRIPE, false))
    }

    /// Adds `n` to a counter of this thread's stripe (from [`Stats::thread_slot`]).
    #[inline]
    pub fn add_at(&self, stripe: usize, c: Counter, n: u64) {
        let cell = &self.stripes[stripe.min(SHARED_STRIPE)].counters[c as usize];
        if stripe < OWNED_STRIPES {
            // This thread is the stripe's only writer: no read-modify-write needed.
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records a user-visible latency `weight` times.
    pub fn record_user(&self, latency: Duration, weight: u64) {
        let us = crate::model::num::us(latency).max(1);
        let mut h = self.hist[stripe_index() % HISTOGRAM_STRIPES].lock();
        h.user.saturating_record_n(us, weight);
    }

    /// Records how long a warehouse load took.
    pub fn record_load(&self, took: Duration) {
        let us = crate::model::num::us(took).max(1);
        let mut h = self.hist[stripe_index() % HISTOGRAM_STRIPES].lock();
        h.load.saturating_record(us);
    }

    /// The user-latency and load-time histograms since start, merged across stripes (to diff
    /// against an earlier copy for an interval's percentiles).
    pub fn histograms(&self) -> (Histogram<u64>, Histogram<u64>) {
        let mut user = histogram();
        let mut load = histogram();
        for h in self.hist.iter() {
            let h = h.lock();
            // Histograms of one shape, made by `histogram()`: adding cannot overflow their range.
            let _ = user.add(&h.user);
            let _ = load.add(&h.load);
        }
        (user, load)
    }

    /// Sums every stripe. Cost: a few microseconds; meant to be polled a few times a second.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut sums = [0u64; COUNTERS];
        for s in self.stripes.iter() {
            for (i, c) in s.counters.iter().enumerate() {
                sums[i] += c.load(Ordering::Relaxed);
            }
        }
        let (user, load) = self.histograms();
        let get = |c: Counter| sums[c as usize];
        StatsSnapshot {
            requests: get(Counter::Requests) + get(Counter::FreshHits),
            fresh_hits: get(Counter::FreshHits),
            stale_served: get(Counter::StaleServed),
            misses: get(Counter::Misses),
            coalesced: get(Counter::Coalesced),
            loads: get(Counter::Loads),
            load_errors: get(Counter::LoadErrors),
            early_refreshes: get(Counter::EarlyRefreshes),
            swr_refreshes: get(Counter::SwrRefreshes),
            refresh_ahead: get(Counter::RefreshAhead),
            stampedes_absorbed: get(Counter::StampedesAbsorbed),
            errors: get(Counter::Errors),
            wait_timeouts: get(Counter::WaitTimeouts),
            too_large: get(Counter::TooLarge),
            shared_hits: get(Counter::SharedHits),
            lease_waits: get(Counter::LeaseWaits),
            degraded_loads: get(Counter::Degraded),
            waited_stale: get(Counter::WaitedStale),
            coalesced_stale: get(Counter::CoalescedStale),
            lease_lost: get(Counter::LeaseLost),
            evictions: 0,
            user_latency: LatencySummary::of(&user),
            load_time: LatencySummary::of(&load),
        }
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Values recorded (sampled hits count with their weight).
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl LatencySummary {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// A point-in-time copy of the counters (cumulative since start) and latency percentiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Every `get`.
    pub requests: u64,
    /// Fresh answers from the cache.
    pub fresh_hits: u64,
    /// Stale answers (never counted as hits).
    pub stale_served: u64,
    /// Requests that waited for a load.
    pub misses: u64,
    /// Requests that joined another caller's load.
    pub coalesced: u64,
    /// Warehouse queries started.
    pub loads: u64,
    /// Warehouse queries that failed.
    pub load_errors: u64,
    /// XFetch early refreshes started.
    pub early_refreshes: u64,
    /// Stale-while-revalidate refreshes started.
    pub swr_refreshes: u64,
    /// Refresh-ahead and warm loads started.
    pub refresh_ahead: u64,
    /// Loads with at least the stampede threshold of waiters.
    pub stampedes_absorbed: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests that gave up waiting.
    pub wait_timeouts: u64,
    /// Answers too large to store.
    pub too_large: u64,
    /// Loads answered by the shared tier.
    #[serde(default)]
    pub shared_hits: u64,
    /// Loads that waited on another process's lease.
    #[serde(default)]
    pub lease_waits: u64,
    /// Loads done without the shared tier because it was unreachable.
    #[serde(default)]
    pub degraded_loads: u64,
    /// Requests that waited for a load (in `misses`) and were answered stale.
    #[serde(default)]
    pub waited_stale: u64,
    /// Of `waited_stale`, those that had joined another caller's load (in `coalesced`).
    #[serde(default)]
    pub coalesced_stale: u64,
    /// Loads not stored in the shared tier because their lease had been taken over.
    #[serde(default)]
    pub lease_lost: u64,
    /// Entries evicted by the store's bounds.
    pub evictions: u64,
    /// User-visible latency of `get`.
    pub user_latency: LatencySummary,
    /// Warehouse load time.
    pub load_time: LatencySummary,
}

impl StatsSnapshot {
    /// The sum of two instances' counters; latency percentiles are the larger of each (an upper
    /// bound: percentiles do not add up).
    pub fn plus(&self, o: &StatsSnapshot) -> StatsSnapshot {
        let lat = |a: &LatencySummary, b: &LatencySummary| LatencySummary {
            count: a.count + b.count,
            p50_us: a.p50_us.max(b.p50_us),
            p99_us: a.p99_us.max(b.p99_us),
            max_us: a.max_us.max(b.max_us),
        };
        StatsSnapshot {
            requests: self.requests + o.requests,
            fresh_hits: self.fresh_hits + o.fresh_hits,
            stale_served: self.stale_served + o.stale_served,
            misses: self.misses + o.misses,
            coalesced: self.coalesced + o.coalesced,
            loads: self.loads + o.loads,
            load_errors: self.load_errors + o.load_errors,
            early_refreshes: self.early_refreshes + o.early_refreshes,
            swr_refreshes: self.swr_refreshes + o.swr_refreshes,
            refresh_ahead: self.refresh_ahead + o.refresh_ahead,
            stampedes_absorbed: self.stampedes_absorbed + o.stampedes_absorbed,
            errors: self.errors + o.errors,
            wait_timeouts: self.wait_timeouts + o.wait_timeouts,
            too_large: self.too_large + o.too_large,
            shared_hits: self.shared_hits + o.shared_hits,
            lease_waits: self.lease_waits + o.lease_waits,
            degraded_loads: self.degraded_loads + o.degraded_loads,
            waited_stale: self.waited_stale + o.waited_stale,
            coalesced_stale: self.coalesced_stale + o.coalesced_stale,
            lease_lost: self.lease_lost + o.lease_lost,
            evictions: self.evictions + o.evictions,
            user_latency: lat(&self.user_latency, &o.user_latency),
            load_time: lat(&self.load_time, &o.load_time),
        }
    }

    /// Fresh hits over requests (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.fresh_hits as f64 / self.requests as f64
        }
    }
}

/// Requests by outcome; the four add up to every request. The metrics endpoint exposes them
/// (see its module docs for why the numbers can be trusted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOutcomes {
    /// Answered fresh from the cache without waiting.
    pub fresh: u64,
    /// Answered stale, at once or after waiting for a load that failed or was too slow.
    pub stale: u64,
    /// Waited for a load they led (or found a load just finished), and got its answer.
    pub miss: u64,
    /// Joined a load already in flight, and got its answer.
    pub coalesced: u64,
}

impl RequestOutcomes {
    /// The outcomes in a stats snapshot. Every `get` is a fresh hit, answered stale at once, or
    /// waits for a load (`misses`, of which `coalesced` joined another's), so the stale-at-once
    /// answers are what remains; the waiting requests that ended stale (`waited_stale`, of which
    /// `coalesced_stale` had joined another's load) move from `miss`/`coalesced` to `stale`.
    pub fn of(s: &StatsSnapshot) -> Self {
        let coalesced = s.coalesced.min(s.misses);
        let waited_stale = s.waited_stale.min(s.misses);
        let coalesced_stale = s.coalesced_stale.min(waited_stale).min(coalesced);
        let led = s.misses - coalesced;
        Self {
            fresh: s.fresh_hits,
            stale: s
                .requests
                .saturating_sub(s.fresh_hits)
                .saturating_sub(s.misses)
                + waited_stale,
            miss: led.saturating_sub(waited_stale - coalesced_stale),
            coalesced: coalesced - coalesced_stale,
        }
    }

    /// Each outcome at least as high as in `floor`.
    pub fn at_least(self, floor: Self) -> Self {
        Self {
            fresh: self.fresh.max(floor.fresh),
            stale: self.stale.max(floor.stale),
            miss: self.miss.max(floor.miss),
            coalesced: self.coalesced.max(floor.coalesced),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_across_threads() {
        let stats = std::sync::Arc::new(Stats::new());
        // More threads than owned stripes: the shared stripe must count correctly too.
        let threads = OWNED_STRIPES + 8;
        let all_claimed = std::sync::Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (s, all_claimed) = (stats.clone(), all_claimed.clone());
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        s.incr(Counter::Requests);
                        s.incr(Counter::Misses);
                        s.incr(Counter::FreshHits);
                        if i == 0 {
                            // Every thread holds a stripe (or the shared one) at once.
                            all_claimed.wait();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let snap = stats.snapshot();
        // Fresh hits are counted once and added to requests by the snapshot.
        let n = (OWNED_STRIPES as u64 + 8) * 1000;
        assert_eq!(snap.requests, 2 * n);
        assert_eq!(snap.fresh_hits, n);
        assert_eq!(snap.misses, n);
        assert_eq!(snap.hit_ratio(), 0.5);
    }

    #[test]
    fn weighted_samples_keep_percentiles_honest() {
        let stats = Stats::new();
        // 15 misses at 100 ms, 1 sampled hit standing for HIT_SAMPLE hits at 1 µs: hits are the
        // majority.
        for _ in 0..15 {
            stats.record_user(Duration::from_millis(100), 1);
        }
        stats.record_user(Duration::from_micros(1), HIT_SAMPLE);
        let snap = stats.snapshot();
        assert_eq!(snap.user_latency.count, 15 + HIT_SAMPLE);
        assert!(snap.user_latency.p50_us <= 1, "{:?}", snap.user_latency);
        assert!(
            snap.user_latency.p99_us >= 99_000,
            "{:?}",
            snap.user_latency
        );
    }
}
