//! Simulated chatbot traffic: N virtual users asking catalog questions with skewed popularity
//! (Zipf: a few questions are asked all the time, most rarely) and think time between questions,
//! all drawn from a seed so a run repeats.
//!
//! Each user counts what it got back — fresh or stale, from cache or warehouse, how long it
//! waited — and whether an answer presented as fresh was computed before the latest completed
//! update of a table it reads (`stale_after_update`: the baseline's "10:30 user still sees 9:05 data").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;

pub mod shadow;

use crate::engine::{Engine, Freshness, Source};
use crate::model::catalog::{Catalog, ParamKind, Request};
pub use shadow::{Shadow, ShadowFigures};

/// How the virtual users behave.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Concurrent users.
    pub users: usize,
    /// Mean think time between two questions of one user, in clock time (exponentially
    /// distributed; an accelerated clock shortens it in real time).
    pub think: Duration,
    /// Zipf exponent of question popularity.
    pub zipf_s: f64,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            users: 100,
            think: Duration::from_secs(30),
            zipf_s: 1.1,
            seed: 7,
        }
    }
}

/// The questions users ask, most popular first: every catalog query with its parameter
/// combinations (closed choices, years 2025 and 2026 for year parameters, defaults otherwise),
/// in an order shuffled by `seed`.
pub fn questions(catalog: &Catalog, seed: u64) -> Vec<Request> {
    let mut out = Vec::new();
    for q in catalog.queries() {
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for p in &q.params {
            let values: Vec<String> = match (&p.choices, p.kind) {
                (Some(c), _) => c.clone(),
                (None, ParamKind::Int { .. }) if p.name == "year" => {
                    vec!["2025".into(), "2026".into()]
                }
                _ => p.default.clone().into_iter().collect(),
            };
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((p.name.clone(), v.clone()));
                        c
                    })
                })
                .take(40)
                .collect();
        }
        for c in combos {
            if let Ok(r) = catalog.request(&q.name, &c) {
                out.push(r);
            }
        }
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    rng.shuffle(&mut out);
    out
}

/// Draws ranks 0..n with probability proportional to `1 / (rank + 1)^s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A distribution over `n` ranks (at least one).
    pub fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cdf = Vec::with_capacity(n.max(1));
        for rank in 0..n.max(1) {
            total += 1.0 / ((rank + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let u = rng.f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    fresh_from_cache: AtomicU64,
    fresh: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    stale_after_update: AtomicU64,
}

/// What a traffic run saw.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    /// Users.
    pub users: usize,
    /// How long it ran (real time, seconds).
    pub seconds: f64,
    /// Questions asked.
    pub requests: u64,
    /// Fresh answers.
    pub fresh: u64,
    /// Fresh answers served from the cache (hits).
    pub hits: u64,
    /// Stale answers (labelled with their age).
    pub stale: u64,
    /// Errors.
    pub errors: u64,
    /// Answers given as fresh although computed before the latest completed update of a table
    /// they read (as of when the question was asked).
    pub stale_after_update: u64,
    /// Hits over requests.
    pub hit_ratio: f64,
    /// Median user latency.
    pub user_p50_ms: f64,
    /// 99th percentile user latency.
    pub user_p99_ms: f64,
    /// Distinct questions asked.
    pub distinct_questions: usize,
    /// Warehouse queries the engine ran meanwhile.
    pub warehouse_queries: u64,
}

/// Runs `config.users` users against `engine` until `stop` turns true or `duration` (real time)
/// passes.
pub async fn run(
    engine: Engine,
    config: TrafficConfig,
    duration: Option<Duration>,
    stop: watch::Receiver<bool>,
) -> TrafficReport {
    run_with_shadow(engine, config, duration, stop, None).await
}

/// [`run`], with every question also put to `shadow` (what the baseline recipe would have done
/// with it) and freshcache's outcome recorded beside it.
pub async fn run_with_shadow(
    engine: Engine,
    config: TrafficConfig,
    duration: Option<Duration>,
    stop: watch::Receiver<bool>,
    shadow: Option<Arc<Shadow>>,
) -> TrafficReport {
    let questions = Arc::new(questions(engine.catalog(), config.seed));
    let zipf = Arc::new(Zipf::new(questions.len(), config.zipf_s));
    let tally = Arc::new(Tally::default());
    let latency: Arc<Mutex<Histogram<u64>>> =
        Arc::new(Mutex::new(crate::engine::stats::histogram()));
    let asked: Arc<Vec<AtomicBool>> = Arc::new(
        (0..questions.len())
            .map(|_| AtomicBool::new(false))
            .collect(),
    );
    let loads_before = engine.stats().loads;
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let speed = engine.clock().speed().max(1e-9);
    let mut users = Vec::with_capacity(config.users);
    for user in 0..config.users {
        let (engine, questions, zipf, tally, latency, asked, shadow) = (
            engine.clone(),
            questions.clone(),
            zipf.clone(),
            tally.clone(),
            latency.clone(),
            asked.clone(),
            shadow.clone(),
        );
        let mut stop = stop.clone();
        let think = config.think;
        let mut rng = fastrand::Rng::with_seed(config.seed.wrapping_add(user as u64 * 7919));
        users.push(tokio::spawn(async move {
            // Users arrive spread over one think time, not all at the same instant.
            let first = think.mul_f64(rng.f64()).div_f64(speed);
            if pause(first, deadline, &mut stop).await {
                return;
            }
            loop {
                let i = zipf.sample(&mut rng);
                if let Some(a) = asked.get(i) {
                    a.store(true, Ordering::Relaxed);
                }
                let before = engine.versions();
                if let Some(shadow) = &shadow {
                    shadow.ask(&questions[i], engine.clock().now_ms(), &before);
                }
                let t0 = Instant::now();
                let answer = engine.get(&questions[i]).await;
                if let (Some(shadow), Ok(a)) = (&shadow, &answer) {
                    shadow.freshcache_answered(&questions[i], &before, a, t0, Instant::now());
                }
                let took = t0.elapsed();
                tally.requests.fetch_add(1, Ordering::Relaxed);
                match &answer {
                    Ok(a) => match &a.freshness {
                        Freshness::Fresh => {
                            tally.fresh.fetch_add(1, Ordering::Relaxed);
                            if a.source == Source::Cache {
                                tally.fresh_from_cache.fetch_add(1, Ordering::Relaxed);
                            }
                            if a.versions().is_behind(&before) {
                                tally.stale_after_update.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Freshness::Stale { .. } => {
                            tally.stale.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                {
                    let mut h = latency.lock();
                    h.saturating_record(crate::model::num::us(took).max(1));
                }
                let wait = think.mul_f64(-(1.0 - rng.f64()).ln()).div_f64(speed);
                if pause(wait, deadline, &mut stop).await {
                    break;
                }
            }
        }));
    }
    // A user still waiting when time is up is not waited for long: a queue of recipe refreshes
    // in front of the warehouse could hold it for minutes. Its unanswered question is not counted.
    let mut stop_wait = stop.clone();
    let cutoff = async {
        match deadline {
            Some(end) => tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await,
            None => {
                // An error means the stop sender is gone: stop as well.
                let _ = stop_wait.wait_for(|s| *s).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::pin!(cutoff);
    let mut cut = false;
    for mut u in users {
        if !cut {
            tokio::select! {
                _ = &mut u => continue,
                _ = &mut cutoff => cut = true,
            }
        }
        u.abort();
        if let Err(e) = u.await
            && e.is_panic()
        {
            tracing::error!("a simulated user panicked: {e}");
        }
    }
    let h = latency.lock();
    let requests = tally.requests.load(Ordering::Relaxed);
    let hits = tally.fresh_from_cache.load(Ordering::Relaxed);
    let ms = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            (h.value_at_quantile(q) as f64 / 10.0).round() / 100.0
        }
    };
    TrafficReport {
        users: config.users,
        seconds: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        requests,
        fresh: tally.fresh.load(Ordering::Relaxed),
        hits,
        stale: tally.stale.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        stale_after_update: tally.stale_after_update.load(Ordering::Relaxed),
        hit_ratio: if requests == 0 {
            0.0
        } else {
            ((hits as f64 / requests as f64) * 10_000.0).round() / 10_000.0
        },
        user_p50_ms: ms(0.5),
        user_p99_ms: ms(0.99),
        distinct_questions: asked.iter().filter(|a| a.load(Ordering::Relaxed)).count(),
        warehouse_queries: engine.stats().loads - loads_before,
    }
}

/// Sleeps `d` unless the deadline or a stop comes first; returns whether to stop.
async fn pause(d: Duration, deadline: Option<Instant>, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let d = match deadline {
        Some(end) => {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            d.min(left)
        }
        None => d,
    };
    tokio::select! {
        _ = tokio::time::sleep(d) => deadline.is_some_and(|end| Instant::now() >= end),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_cover_the_catalog_and_repeat_with_the_seed() {
        let c = Catalog::bundled().unwrap();
        let a = questions(&c, 1);
        let b = questions(&c, 1);
        assert!(a.len() >= c.queries().len());
        assert_eq!(
            a.iter().map(Request::fingerprint).collect::<Vec<_>>(),
            b.iter().map(Request::fingerprint).collect::<Vec<_>>()
        );
        for q in c.queries() {
            assert!(a.iter().any(|r| r.query().name == q.name), "{}", q.name);
        }
    }

    #[test]
    fn zipf_prefers_the_first_ranks() {
        let z = Zipf::new(100, 1.1);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[90]);
        assert!(counts[0] > 15_000, "{}", counts[0]);
    }
}
