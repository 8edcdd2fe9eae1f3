//! The Redis backend keeps its promises under real faults, against a real `redis-server`.
//!
//! * `malformed_payloads_published_with_redis_cli`: 20 malformed payloads published on
//!   `warehouse_updated` with `redis-cli` (not JSON, wrong types, unknown tables, control and
//!   escape characters, invalid UTF-8 and NUL bytes, a payload over 64 KiB, ...) are each counted,
//!   logged as a `bad_input` event with a clean reason, and change no version. A valid seed-style
//!   payload received by two instances bumps its table exactly once, also when published twice.
//! * `lost_message_caught_within_the_poll_interval`: 20 times, every pub/sub connection is killed
//!   with `CLIENT KILL TYPE pubsub` right before a bump; each of three instances reaches the new
//!   version within the poll interval + 100 ms.
//! * `redis_killed_and_restarted_under_load`: `kill -9` of the server under load, then a restart
//!   on the same port, empty: no get fails, no answer is computed at a version older than one
//!   already served for its request, the engine reports itself degraded while Redis is down, the
//!   shared tier answers again within 2 s of the new server answering PING, and the version truth
//!   is re-seeded.
//! * `frozen_redis_costs_at_most_one_timeout`: a server stopped with `SIGSTOP` for 3 s while new
//!   requests keep arriving: no get fails and none takes longer than the Redis response timeout +
//!   the warehouse latency + 250 ms; after `SIGCONT` the shared tier is used again.
//! * `a_freeze_during_a_load_costs_at_most_one_timeout`: the same bound when the freeze lands
//!   while the warehouse works under the lease, so that storing the entry and releasing the lease
//!   meet the frozen server.
//! * `lease_holder_killed_mid_load`: the real binary. A `get` holding the lease on a 20 s load is
//!   killed with `kill -9`; three new `get`s for the same key all answer fresh within the lease +
//!   3 s, with exactly one takeover load, which exactly one of them reports as its own.
//! * `stats_sums_live_instances`: `freshcache --json stats` sees two running `traffic` processes
//!   and reports the summed counters and the versions.
//! * `a_bump_right_after_an_empty_restart_is_not_swallowed`: after Redis restarts empty, an ETL
//!   batch completed by a new process (as `freshcache etl-complete` would) reaches a running
//!   instance: on its live feed, and as a new version after its next poll, so that it stops
//!   answering with the old data as fresh.
//! * `corrupt_shared_entries_are_misses_and_never_panic`: 140 seeded cases of random bytes and
//!   JSON entries with out-of-range fields (a stamp of 200 tables, other tables, other versions, a
//!   value that is not JSON, truncations), written with `redis-cli` under the key an entry would
//!   have: each is counted as corrupt and is a miss answered fresh from the warehouse, on an
//!   instance with and one without an in-process tier; nothing panics, and a corrupt previous
//!   version is no stale fallback.
//! * `the_lease_holder_rechecks_the_shared_tier_before_loading`: another process stores the
//!   answer between this one's probe and its lease; the lease holder finds it, makes no warehouse
//!   query and releases the lease.
//! * `a_lost_lease_never_overwrites_the_new_holders_entry`: while A loads under its lease, B takes
//!   the lease over and stores its answer; A's store is refused (B's entry and lease stay) and
//!   counted as `lease_lost`, and A's own waiters still get A's answer.
//! * `a_late_old_version_never_becomes_the_shared_previous`: version 1 stored after version 2 (and
//!   9 after 10) leaves the newer version as the stale fallback.
//! * `forged_and_repeated_messages_follow_the_truth`: a plain message seen by three instances bumps
//!   once, the same payload after the delivery window bumps again, and messages claiming versions
//!   above the truth (on either channel) are refused by every instance and change nothing.
//! * `a_plain_message_during_a_freeze_is_applied_once_the_server_is_back`: three plain messages, each
//!   meeting a server frozen for 0.8 s, are each applied exactly once after it thaws.
//!
//! Every test starts its own `redis-server` on a free loopback port with a fresh directory and no
//! persistence, and kills it (and removes the directory) when it ends, also when it fails; no other
//! server is touched. The tests run one at a time (they share a lock), so that the timing margins
//! measure the product rather than the other tests. Without `redis-server` and `redis-cli` the
//! tests say loudly on stderr that they are skipped and pass, unless `FRESHCACHE_REQUIRE_REDIS=1`,
//! where that is a failure.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use freshcache::bus::{BumpMode, Bus, CHANNEL};
use freshcache::engine::{Engine, Freshness, Source};
use freshcache::instance::InstanceConfig;
use freshcache::model::BoxFuture;
use freshcache::model::catalog::Request;
use freshcache::model::entry::EntryKey;
use freshcache::model::events::EventKind;
use freshcache::redis::RedisBus;
use freshcache::redis::{FILLS_CHANNEL, RedisStore};
use freshcache::store::{PutOutcome, Store, StoreError};
use freshcache::warehouse::{EtlTarget, MemoryWarehouse};
use serde_json::Value;

mod common;

use common::*;

/// The payloads of `malformed_payloads_published_with_redis_cli`, each with the reason it must be
/// refused for.
fn malformed_payloads() -> Vec<(Vec<u8>, &'static str)> {
    let big = format!(
        "{{\"timestamp\": \"2026-11-26T10:00:00\", \"tables\": [\"sales\"], \"pad\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let text = |s: &str| s.as_bytes().to_vec();
    vec![
        (text("not json"), "not JSON"),
        (text(""), "not JSON"),
        (text(r#"{"tables": ["sales"]"#), "not JSON"),
        (text(r#"["sales"]"#), "not a JSON object"),
        (text(r#""sales""#), "not a JSON object"),
        (text("null"), "not a JSON object"),
        (text(r#"{"tables": "sales"}"#), "must be a list"),
        (text(r#"{"tables": [1, 2]}"#), "must be a list"),
        (text(r#"{"tables": []}"#), "names nothing"),
        (text(r#"{"tables": ["salez"]}"#), "unknown table"),
        (
            text(r#"{"tables": ["sales", "../../etc/passwd"]}"#),
            "unknown table",
        ),
        (text(r#"{"tables": ["sa\u001b[2Jles"]}"#), "unknown table"),
        (
            b"{\"tables\": [\"sales\x1b[2J\x1b]0;pwned\x07\"]}".to_vec(),
            "not JSON",
        ),
        (
            b"{\"tables\": [\"sales\xff\xfe\x00\"]}".to_vec(),
            "not JSON",
        ),
        (big.into_bytes(), "larger than"),
        (
            text(r#"{"tables": ["sales"], "versions": {"sales": "7"}}"#),
            "whole number",
        ),
        (
            text(r#"{"tables": ["sales"], "versions": {"sales": -1}}"#),
            "whole number",
        ),
        (
            text(r#"{"tables": ["sales"], "versions": {"sales": 1.5}}"#),
            "whole number",
        ),
        (
            text(r#"{"tables": ["sales"], "versions": [3]}"#),
            "must be an object",
        ),
        (
            text(r#"{"tables": ["sales"], "timestamp": "2026-11-26\u0007T10:00", "batch": 7}"#),
            "without control characters",
        ),
    ]
}

#[test]
fn malformed_payloads_published_with_redis_cli() {
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let a = Node::start(server, &wh, true, InstanceConfig::default()).await;
        blocking(|| server.wait_for_subscribers(CHANNEL, 1));

        let payloads = malformed_payloads();
        assert_eq!(payloads.len(), 20);
        for (payload, _) in &payloads {
            let received = blocking(|| server.publish(CHANNEL, payload));
            assert_eq!(received, 1, "one subscriber on {CHANNEL}");
        }
        let started = Instant::now();
        let bad_events = loop {
            let history = a.bus.history(0, 1000).await.expect("the event log");
            let bad: Vec<(String, String)> = history
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::BadInput {
                        reason, excerpt, ..
                    } => Some((reason.clone(), excerpt.clone())),
                    _ => None,
                })
                .collect();
            if a.instance.counters().bad_events >= 20 && bad.len() >= 20 {
                break bad;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "waited 10 s for 20 bad events; counted {}, logged {}",
                a.instance.counters().bad_events,
                bad.len()
            );
            tokio::time::sleep(POLL).await;
        };
        assert_eq!(a.instance.counters().bad_events, 20);
        assert_eq!(bad_events.len(), 20, "{bad_events:#?}");
        for ((reason, excerpt), (payload, expected)) in bad_events.iter().zip(&payloads) {
            assert!(
                reason.contains(expected),
                "payload {:?} was refused for {reason:?}, expected {expected:?}",
                String::from_utf8_lossy(&payload[..payload.len().min(60)])
            );
            assert!(
                !reason.chars().any(char::is_control) && !excerpt.chars().any(char::is_control),
                "control characters reached the log: {reason:?} {excerpt:?}"
            );
            assert!(excerpt.chars().count() <= 121, "{excerpt:?}");
        }
        let truth = a.bus.versions().await.expect("the version truth");
        assert!(
            truth.versions().iter().all(|v| *v == 0),
            "a malformed payload changed the truth: {:?}",
            truth.versions()
        );
        assert!(
            a.engine().versions().versions().iter().all(|v| *v == 0),
            "a malformed payload changed the engine: {:?}",
            a.engine().versions().versions()
        );

        // A valid seed-style payload, received by two instances, bumps sales once.
        let b = Node::start(server, &wh, true, InstanceConfig::default()).await;
        blocking(|| server.wait_for_subscribers(CHANNEL, 2));
        let seed = br#"{"timestamp": "2026-11-26T10:00:03.123456", "tables": ["sales"]}"#;
        assert_eq!(blocking(|| server.publish(CHANNEL, seed)), 2);
        let sales = sales();
        let at = |node: &Node| node.engine().versions().version(sales);
        let truth_at = std::cell::Cell::new(0);
        wait_until(
            Duration::from_secs(10),
            "the plain payload to bump sales",
            async || {
                truth_at.set(
                    a.bus
                        .versions()
                        .await
                        .expect("the version truth")
                        .version(sales),
                );
                truth_at.get() >= 1 && at(&a) >= 1 && at(&b) >= 1
            },
            || {
                format!(
                    "sales: truth {}, A {}, B {}",
                    truth_at.get(),
                    at(&a),
                    at(&b)
                )
            },
        )
        .await;
        // The same message again, then a sentinel each instance handles after it.
        assert_eq!(blocking(|| server.publish(CHANNEL, seed)), 2);
        assert_eq!(blocking(|| server.publish(CHANNEL, b"sentinel")), 2);
        let bad = |node: &Node| node.instance.counters().bad_events;
        wait_until(
            Duration::from_secs(10),
            "the sentinel",
            async || bad(&a) >= 21 && bad(&b) >= 1,
            || format!("bad events: A {}, B {}", bad(&a), bad(&b)),
        )
        .await;
        let truth = a.bus.versions().await.expect("the version truth");
        let history = a.bus.history(0, 1000).await.expect("the event log");
        let updates = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::WarehouseUpdated { .. }))
            .count();
        assert_eq!(truth.version(sales), 1, "truth {:?}", truth.versions());
        assert_eq!(a.engine().versions().version(sales), 1);
        assert_eq!(b.engine().versions().version(sales), 1);
        assert_eq!(
            truth.versions().iter().sum::<u64>(),
            1,
            "only sales moved: {:?}",
            truth.versions()
        );
        assert_eq!(updates, 1, "one warehouse_updated event for two deliveries");
        eprintln!(
            "malformed payloads: 20 published with redis-cli, 20 counted and logged as bad_input, \
             versions unchanged; the plain payload delivered twice to 2 instances bumped sales once"
        );
    });
}

#[test]
fn lost_message_caught_within_the_poll_interval() {
    const ROUNDS: usize = 20;
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let config = InstanceConfig::default();
        let limit = config.poll_interval + Duration::from_millis(100);
        let nodes = Node::start_n(server, &wh, 3, &config).await;
        let catalog = catalog();
        let etl = RedisBus::start(link(server), catalog.tables().clone(), clock());
        let sales = sales();
        let mut latencies = Vec::new();
        let mut late = Vec::new();
        for round in 1..=ROUNDS {
            // Everyone is subscribed again before the next cut, so every round cuts all four.
            blocking(|| server.wait_for_subscribers(CHANNEL, 4));
            let killed = blocking(|| server.cli_int(&["CLIENT", "KILL", "TYPE", "pubsub"]));
            assert_eq!(killed, 4, "CLIENT KILL TYPE pubsub cut every subscriber");
            let began = Instant::now();
            let outcome = etl
                .bump(&[sales], "manual", BumpMode::Force, false)
                .await
                .expect("the bump");
            let target = outcome.versions.version(sales);
            let mut reached: Vec<Option<Duration>> = vec![None; nodes.len()];
            while reached.iter().any(Option::is_none) && began.elapsed() < Duration::from_secs(5) {
                for (i, node) in nodes.iter().enumerate() {
                    if reached[i].is_none() && node.engine().versions().version(sales) >= target {
                        reached[i] = Some(began.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for (i, r) in reached.iter().enumerate() {
                let took = r.unwrap_or(Duration::from_secs(5));
                latencies.push(took);
                if took > limit {
                    late.push(format!(
                        "round {round}: instance {i} reached sales={target} after {}",
                        ms(took)
                    ));
                }
            }
        }
        latencies.sort();
        let worst = *latencies.last().expect("rounds ran");
        let resyncs: u64 = nodes.iter().map(|n| n.instance.counters().resyncs).sum();
        eprintln!(
            "lost messages: {ROUNDS} rounds of CLIENT KILL TYPE pubsub + bump, 3 instances: \
             p50 {}, p90 {}, worst {} (limit {}); {resyncs} caught by the poll",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.9)),
            ms(worst),
            ms(limit)
        );
        assert!(
            late.is_empty(),
            "{} of {} catch-ups were later than the poll interval + 100 ms:\n{}",
            late.len(),
            ROUNDS * 3,
            late.join("\n")
        );
    });
}

/// What one get of `redis_killed_and_restarted_under_load` gave.
struct Sample {
    at: Instant,
    request: usize,
    sales: u64,
    source: Source,
}

#[test]
fn redis_killed_and_restarted_under_load() {
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let node = Node::start(server, &wh, false, InstanceConfig::default()).await;
        let sales = sales();
        for _ in 0..2 {
            node.instance
                .invalidate(&[sales])
                .await
                .expect("invalidate");
        }
        assert_eq!(node.engine().versions().version(sales), 2);

        let engine = node.engine().clone();
        let mut requests = Vec::new();
        for year in ["2026", "2025"] {
            for quarter in ["Q1", "Q2", "Q3", "Q4"] {
                requests.push(
                    engine
                        .request("sales_by_region", &[("quarter", quarter), ("year", year)])
                        .expect("a request"),
                );
            }
        }
        requests.push(
            engine
                .request("quarterly_trend", &[("year", "2026")])
                .expect("a request"),
        );
        requests.push(
            engine
                .request("revenue_by_product", &[("year", "2026")])
                .expect("a request"),
        );
        let requests = Arc::new(requests);

        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..8 {
            let (engine, requests, stop) = (engine.clone(), requests.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut failures = Vec::new();
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    let i = n % requests.len();
                    n += 1;
                    match engine.get(&requests[i]).await {
                        Ok(a) => samples.push(Sample {
                            at: Instant::now(),
                            request: i,
                            sales: sales_version(&a),
                            source: a.source,
                        }),
                        Err(e) => failures.push(e.to_string()),
                    }
                    tokio::task::yield_now().await;
                }
                (samples, failures)
            }));
        }
        // Samples the engine's health while the load runs.
        let monitor = {
            let (engine, stop) = (engine.clone(), stop.clone());
            tokio::spawn(async move {
                let mut degraded = Vec::new();
                let mut shared_hits = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if engine.degraded().is_some() {
                        degraded.push(now);
                    }
                    shared_hits.push((now, engine.stats().shared_hits));
                    tokio::time::sleep(POLL).await;
                }
                (degraded, shared_hits)
            })
        };

        let start = Instant::now();
        tokio::time::sleep_until((start + Duration::from_secs(1)).into()).await;
        blocking(|| server.kill9());
        let killed = Instant::now();
        tokio::time::sleep_until((start + Duration::from_secs(3)).into()).await;
        let pong = blocking(|| server.restart());
        // The truth comes back empty and is re-seeded by the instance's next poll.
        let reseeded = loop {
            if let Ok(truth) = node.bus.versions().await
                && truth.version(sales) >= 2
            {
                break pong.elapsed();
            }
            assert!(
                pong.elapsed() < Duration::from_secs(5),
                "the version truth was not re-seeded within 5 s of the restart"
            );
            tokio::time::sleep(POLL).await;
        };
        tokio::time::sleep_until((start + Duration::from_secs(8)).into()).await;
        stop.store(true, Ordering::Relaxed);
        let (mut samples, failures) = gather(workers).await;
        let (degraded, shared_hits) = monitor.await.expect("the monitor");
        samples.sort_by_key(|s| s.at);

        // Versions never go backwards, per request.
        let mut highest = vec![0u64; requests.len()];
        let mut backwards = Vec::new();
        for s in &samples {
            if s.sales < highest[s.request] {
                backwards.push(format!(
                    "{} answered at sales={} after sales={} was served",
                    requests[s.request], s.sales, highest[s.request]
                ));
            }
            highest[s.request] = highest[s.request].max(s.sales);
        }
        let during_outage = samples
            .iter()
            .filter(|s| s.at > killed && s.at < pong)
            .count();
        let degraded_while_down = degraded.iter().any(|t| *t > killed && *t < pong);
        // The honest signal that the shared tier answers again: its hit counter moves.
        let hits_at_pong = shared_hits
            .iter()
            .rev()
            .find(|(t, _)| *t <= pong)
            .map_or(0, |(_, n)| *n);
        let first_shared_hit = shared_hits
            .iter()
            .find(|(t, n)| *t > pong && *n > hits_at_pong)
            .map(|(t, _)| t.duration_since(pong));
        // And the first answer marked as coming from the cache (local tier off: the shared one).
        let first_cache_answer = samples
            .iter()
            .find(|s| s.at > pong && s.source == Source::Cache)
            .map(|s| s.at.duration_since(pong));
        let counters = node.instance.counters();
        eprintln!(
            "kill -9 and restart under load: {} gets ({} while Redis was down), {} failed; \
             degraded while down: {degraded_while_down}; after PING: first shared hit {}, first \
             cache answer {}; truth re-seeded after {} ({} reseeds); breaker opened {} times",
            samples.len(),
            during_outage,
            failures.len(),
            first_shared_hit.map_or("never".into(), ms),
            first_cache_answer.map_or("never".into(), ms),
            ms(reseeded),
            counters.reseeds,
            node.store.link().breaker().times_opened()
        );
        assert_no_failed_gets(&failures);
        assert!(
            backwards.is_empty(),
            "versions went backwards:\n{}",
            backwards.join("\n")
        );
        assert!(
            during_outage > 0,
            "no get was answered while Redis was down"
        );
        assert!(
            degraded_while_down,
            "engine.degraded() was never Some while Redis was down"
        );
        assert!(
            counters.reseeds >= 1,
            "the truth was not re-seeded by a resync"
        );
        let limit = Duration::from_secs(2);
        assert!(
            first_shared_hit.is_some_and(|d| d <= limit),
            "the shared tier did not answer within {limit:?} of the restart (first shared hit: \
             {first_shared_hit:?})"
        );
        assert!(
            first_cache_answer.is_some_and(|d| d <= limit),
            "no answer came from the shared tier within {limit:?} of the restart (first: \
             {first_cache_answer:?})"
        );
    });
}

#[test]
fn frozen_redis_costs_at_most_one_timeout() {
    with_redis(async |server| {
        let latency = Duration::from_millis(50);
        let limit = RESPONSE_TIMEOUT + latency + Duration::from_millis(250);
        let wh = warehouse(latency);
        let node = Node::start(server, &wh, true, InstanceConfig::default()).await;
        let engine = node.engine().clone();
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (engine, next, stop) = (engine.clone(), next.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut took = Vec::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let request = distinct_request(&engine, next.fetch_add(1, Ordering::Relaxed));
                    let began = Instant::now();
                    match engine.get(&request).await {
                        Ok(_) => took.push((began, began.elapsed())),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (took, failures)
            }));
        }
        let start = Instant::now();
        tokio::time::sleep_until((start + Duration::from_secs(1)).into()).await;
        server.signal(libc::SIGSTOP);
        let stopped = Instant::now();
        tokio::time::sleep_until((stopped + Duration::from_secs(3)).into()).await;
        server.signal(libc::SIGCONT);
        let resumed = Instant::now();
        tokio::time::sleep_until((resumed + Duration::from_millis(500)).into()).await;
        stop.store(true, Ordering::Relaxed);
        let (took, failures) = gather(workers).await;
        assert!(
            next.load(Ordering::Relaxed) < 5_500,
            "ran out of distinct requests"
        );

        // After SIGCONT the shared tier is used again: the breaker closes and a new answer is
        // stored in Redis.
        healthy_again(&engine).await;
        let recovered = resumed.elapsed();
        let request = distinct_request(&engine, next.fetch_add(1, Ordering::Relaxed));
        let answer = engine.get(&request).await.expect("a get after SIGCONT");
        let key = EntryKey::new(request.fingerprint(), [sales_version(&answer), 0, 0, 0]);
        let name = node.store.entry_key(&request, &key);
        let stored = blocking(|| server.cli_int(&["EXISTS", &name]));

        let during: Vec<Duration> = took
            .iter()
            .filter(|(began, d)| *began + *d > stopped && *began < resumed)
            .map(|(_, d)| *d)
            .collect();
        let mut all: Vec<Duration> = took.iter().map(|(_, d)| *d).collect();
        all.sort();
        let mut during_sorted = during.clone();
        during_sorted.sort();
        let slow: Vec<String> = took
            .iter()
            .filter(|(_, d)| *d > limit)
            .map(|(began, d)| {
                let when = if *began >= stopped {
                    format!("{} after", ms(began.duration_since(stopped)))
                } else {
                    format!("{} before", ms(stopped.duration_since(*began)))
                };
                format!("a get that began {when} SIGSTOP took {}", ms(*d))
            })
            .collect();
        eprintln!(
            "SIGSTOP for 3 s: {} gets ({} during the freeze), {} failed; during the freeze p50 {}, \
             p99 {}, worst {}; worst overall {} (limit {}); breaker opened {} times; healthy again \
             {} after SIGCONT",
            took.len(),
            during.len(),
            failures.len(),
            ms(percentile(&during_sorted, 0.5)),
            ms(percentile(&during_sorted, 0.99)),
            ms(during_sorted.last().copied().unwrap_or_default()),
            ms(all.last().copied().unwrap_or_default()),
            ms(limit),
            node.store.link().breaker().times_opened(),
            ms(recovered)
        );
        assert_no_failed_gets(&failures);
        assert!(
            during.len() >= 20,
            "only {} gets ran during the freeze",
            during.len()
        );
        assert!(
            slow.is_empty(),
            "{} gets took longer than the response timeout + warehouse latency + 250 ms (a get \
             that began shortly before SIGSTOP was loading under the lease; see \
             a_freeze_during_a_load_costs_at_most_one_timeout):\n{}",
            slow.len(),
            slow.join("\n")
        );
        assert_eq!(
            stored, 1,
            "the answer after SIGCONT was not stored in Redis ({name})"
        );
    });
}

#[test]
fn a_freeze_during_a_load_costs_at_most_one_timeout() {
    const ROUNDS: usize = 3;
    with_redis(async |server| {
        let latency = Duration::from_millis(100);
        let limit = RESPONSE_TIMEOUT + latency + Duration::from_millis(250);
        let wh = warehouse(latency);
        let node = Node::start(server, &wh, true, InstanceConfig::default()).await;
        let engine = node.engine().clone();
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            healthy_again(&engine).await;
            let request = distinct_request(&engine, round);
            let fingerprint = format!("{:032x}", request.fingerprint());
            let queries = wh.queries();
            let began = Instant::now();
            let get = {
                let engine = engine.clone();
                tokio::spawn(async move { engine.get(&request).await.map(|a| a.source) })
            };
            // The freeze lands while the warehouse works under the lease.
            while wh.queries() == queries {
                assert!(
                    began.elapsed() < Duration::from_secs(5),
                    "the load did not start"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let leases = blocking(|| server.scan(&format!("fc:*:l:*:{fingerprint}:*")));
            assert_eq!(leases.len(), 1, "the load runs under its lease: {leases:?}");
            server.signal(libc::SIGSTOP);
            let stopped = Instant::now();
            let outcome = get.await.expect("the get task");
            let took = began.elapsed();
            let after_stop = stopped.elapsed();
            server.signal(libc::SIGCONT);
            assert!(
                outcome.is_ok(),
                "round {round}: the get failed: {outcome:?}"
            );
            rounds.push((took, after_stop));
        }
        eprintln!(
            "SIGSTOP during a {} load under the lease: gets took {} (limit {}), of which {} after \
             the freeze",
            ms(latency),
            rounds
                .iter()
                .map(|(t, _)| ms(*t))
                .collect::<Vec<_>>()
                .join(", "),
            ms(limit),
            rounds
                .iter()
                .map(|(_, a)| ms(*a))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let slow: Vec<String> = rounds
            .iter()
            .enumerate()
            .filter(|(_, (took, _))| *took > limit)
            .map(|(i, (took, after))| {
                format!(
                    "round {i}: the get took {} ({} of them after the freeze began), more than the \
                     {} load + one {} response timeout + 250 ms",
                    ms(*took),
                    ms(*after),
                    ms(latency),
                    ms(RESPONSE_TIMEOUT)
                )
            })
            .collect();
        assert!(
            slow.is_empty(),
            "a Redis freeze during a load under the lease cost the user more than one timeout: \
             the answer waits for storing the entry and releasing the lease, each bounded by its \
             own response timeout:\n{}",
            slow.join("\n")
        );
    });
}

#[test]
fn lease_holder_killed_mid_load() {
    const LEASE: Duration = Duration::from_secs(2);
    with_redis_sync(|server| {
        let data = TempDir::new("data");
        let dir = data.path().to_str().expect("a UTF-8 path").to_string();
        init_warehouse(data.path());
        let url = server.url();

        // Every fill notification (one per load stored under a lease), as a user would watch them.
        let watcher = Subscriber::start(server, FILLS_CHANNEL);
        let fills = || watcher.messages(FILLS_CHANNEL);

        let query = ["get", "sales_by_region", "quarter=Q1", "year=2026"];
        let args = |latency: &str| -> Vec<String> {
            let mut a: Vec<String> = [
                "--redis",
                &url,
                "--data-dir",
                &dir,
                "--latency",
                latency,
                "--lease",
                "2s",
                "--json",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(query.iter().map(|s| s.to_string()));
            a
        };
        let holder_args = args("20s");
        let mut holder = spawn_logged(data.path(), "holder", &as_refs(&holder_args));
        let started = Instant::now();
        let lease_key = loop {
            if let Some(k) = server.scan("fc:*:l:*").into_iter().next() {
                break k;
            }
            if let Some(status) = holder.exited() {
                let (out, err) = read_log(data.path(), "holder");
                panic!("the holder exited ({status}) before taking the lease: {out} {err}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the holder took no lease within 20 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        holder.child.kill().expect("kill -9 the holder");
        let killed = Instant::now();
        let _ = holder.child.wait();
        let pttl = server.cli_int(&["PTTL", &lease_key]);

        let waiter_args = args("300ms");
        let mut waiters: Vec<Proc> = (0..3)
            .map(|i| spawn_logged(data.path(), &format!("waiter{i}"), &as_refs(&waiter_args)))
            .collect();
        let limit = LEASE + Duration::from_secs(3);
        let mut statuses = vec![None; waiters.len()];
        while statuses.iter().any(Option::is_none)
            && killed.elapsed() < limit + Duration::from_secs(10)
        {
            for (i, w) in waiters.iter_mut().enumerate() {
                if statuses[i].is_none()
                    && let Some(status) = w.exited()
                {
                    statuses[i] = Some((status, killed.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let all_done = killed.elapsed();
        // Everything published before this sentinel has been read once the sentinel is.
        assert_eq!(server.cli_int(&["PUBLISH", FILLS_CHANNEL, "sentinel"]), 1);
        let started = Instant::now();
        while !fills().iter().any(|f| f == "sentinel") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the sentinel never arrived"
            );
            std::thread::sleep(POLL);
        }
        let loads: Vec<String> = fills().into_iter().filter(|f| f != "sentinel").collect();

        let mut sources = Vec::new();
        let mut report = Vec::new();
        for (i, status) in statuses.iter().enumerate() {
            let (out, err) = read_log(data.path(), &format!("waiter{i}"));
            let (status, took) = status.unwrap_or_else(|| {
                panic!(
                    "waiter {i} did not finish within {:?}: {out} {err}",
                    limit + Duration::from_secs(10)
                )
            });
            assert!(
                status.success(),
                "waiter {i} failed ({status}): {out} {err}"
            );
            let answer: Value = serde_json::from_str(out.trim())
                .unwrap_or_else(|e| panic!("waiter {i} printed no JSON ({e}): {out} {err}"));
            assert_eq!(answer["freshness"], "fresh", "waiter {i}: {answer}");
            let source = answer["source"].as_str().unwrap_or("?").to_string();
            report.push(format!("waiter {i}: {source} after {}", ms(took)));
            sources.push(source);
        }
        eprintln!(
            "lease holder killed: its lease had {pttl} ms left; 3 waiters done {} after the kill \
         (limit {}); {} takeover load(s) stored; {}",
            ms(all_done),
            ms(limit),
            loads.len(),
            report.join(", ")
        );
        assert_eq!(
            loads.len(),
            1,
            "expected exactly one takeover load after the lease expired; fills: {loads:?}"
        );
        assert!(
            all_done >= Duration::from_millis(pttl.max(0) as u64),
            "a waiter finished {} after the kill, before the dead holder's lease ({pttl} ms left) \
         expired",
            ms(all_done)
        );
        assert!(
            all_done <= limit,
            "the waiters took {} (limit {})",
            ms(all_done),
            ms(limit)
        );
        let from_warehouse = sources.iter().filter(|s| *s == "warehouse").count();
        assert!(
            from_warehouse == 1
                && sources
                    .iter()
                    .all(|s| s == "warehouse" || s == "cache" || s == "coalesced"),
            "exactly one waiter loaded from the warehouse (one fill was stored), but {from_warehouse} \
         of 3 report \"source\":\"warehouse\": {sources:?}. An answer another process loaded under \
         its lease while this one waited is labelled as this request's own warehouse query"
        );
    });
}

#[test]
fn stats_sums_live_instances() {
    with_redis_sync(|server| {
        let data = TempDir::new("data");
        let dir = data.path().to_str().expect("a UTF-8 path").to_string();
        init_warehouse(data.path());
        let url = server.url();
        let traffic = [
            "--redis",
            &url,
            "--data-dir",
            &dir,
            "--latency",
            "10ms",
            "--json",
            "traffic",
            "--users",
            "5",
            "--duration",
            "4s",
            "--think",
            "1s",
        ];
        let mut runs: Vec<Proc> = (0..2)
            .map(|i| spawn_logged(data.path(), &format!("traffic{i}"), &traffic))
            .collect();
        let started = Instant::now();
        let stats = loop {
            let out = freshcache(&["--redis", &url, "--data-dir", &dir, "--json", "stats"])
                .output()
                .expect("freshcache runs");
            assert!(
                out.status.success(),
                "stats failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "stats printed no JSON ({e}): {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            });
            let running = runs.iter_mut().all(|r| r.exited().is_none());
            assert!(
                running,
                "a traffic process ended before stats saw both: {:?}",
                (0..2)
                    .map(|i| read_log(data.path(), &format!("traffic{i}")))
                    .collect::<Vec<_>>()
            );
            let both = doc["instances"].as_u64().is_some_and(|n| n >= 2);
            let asked = doc["hits"].as_u64().unwrap_or(0) + doc["misses"].as_u64().unwrap_or(0) > 0;
            if both && asked {
                break doc;
            }
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "stats never saw 2 live instances with traffic: {doc}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let versions = stats["versions"]
            .as_object()
            .unwrap_or_else(|| panic!("`versions` is not an object: {stats}"));
        let names: Vec<&str> = versions.keys().map(String::as_str).collect();
        assert_eq!(names, ["customers", "inventory", "sales"], "{stats}");
        assert!(versions.values().all(Value::is_u64), "{stats}");
        for key in [
            "instances",
            "hits",
            "stale",
            "misses",
            "warehouse_queries",
            "bad_events",
        ] {
            assert!(
                stats[key].is_u64(),
                "`{key}` is missing or not a number: {stats}"
            );
        }
        assert!(stats["instances"].as_u64() >= Some(2), "{stats}");

        let started = Instant::now();
        let mut summaries = BTreeMap::new();
        for (i, r) in runs.iter_mut().enumerate() {
            let status = loop {
                if let Some(s) = r.exited() {
                    break s;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "traffic {i} did not end"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            let (out, err) = read_log(data.path(), &format!("traffic{i}"));
            assert!(status.success(), "traffic {i} failed ({status}): {err}");
            let summary: Value = serde_json::from_str(out.trim())
                .unwrap_or_else(|e| panic!("traffic {i} printed no JSON ({e}): {out}"));
            assert_eq!(summary["errors"], 0, "traffic {i}: {summary}");
            summaries.insert(i, summary["requests"].clone());
        }
        eprintln!(
            "stats over 2 traffic processes: instances {}, hits {}, misses {}, warehouse queries {}, \
         versions {}; the processes asked {:?} questions",
            stats["instances"],
            stats["hits"],
            stats["misses"],
            stats["warehouse_queries"],
            stats["versions"],
            summaries.values().collect::<Vec<_>>()
        );
    });
}

#[test]
fn a_bump_right_after_an_empty_restart_is_not_swallowed() {
    const BATCH: &str = "20261126-11:00";
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        // A polls the truth only when the test says so: the ETL's bump below lands before A's
        // next poll, as it does whenever an ETL completes within one poll interval of a restart.
        let a = Node::start(
            server,
            &wh,
            true,
            InstanceConfig {
                poll_interval: Duration::from_secs(3600),
                ..InstanceConfig::default()
            },
        )
        .await;
        let sales = sales();
        for _ in 0..2 {
            a.instance.invalidate(&[sales]).await.expect("invalidate");
        }
        let request = a
            .engine()
            .request("sales_by_region", &[("quarter", "Q1"), ("year", "2026")])
            .expect("a request");
        let before = a.engine().get(&request).await.expect("a get");
        assert_eq!(sales_version(&before), 2);
        assert_eq!(MemoryWarehouse::versions_in(before.value()), Some(vec![0]));
        let seq_before = a
            .bus
            .history(0, 1000)
            .await
            .expect("the event log")
            .last()
            .map_or(0, |e| e.seq);

        blocking(|| {
            server.kill9();
            server.restart();
        });
        // The ETL process starts on the restarted server, new data lands, and it completes the
        // batch, as `freshcache etl-complete --batch B` does.
        let etl = Node::start(server, &wh, true, InstanceConfig::default()).await;
        blocking(|| server.wait_for_subscribers(CHANNEL, 2));
        let mut feed = a.bus.subscribe();
        let now = clock().now_ms();
        wh.load_table("sales", BATCH, now, false)
            .await
            .expect("the ETL load");
        let report = etl
            .instance
            .etl_complete(BATCH, &[sales])
            .await
            .expect("etl-complete");
        assert_eq!(report.bumped, ["sales"], "{report:?}");
        let heard = first_event(
            &mut feed,
            Duration::from_secs(2),
            |e| matches!(&e.kind, EventKind::WarehouseUpdated { batch, .. } if batch == BATCH),
        )
        .await;
        let logged_seq = etl
            .bus
            .history(0, 1000)
            .await
            .expect("the event log")
            .iter()
            .find(
                |e| matches!(&e.kind, EventKind::WarehouseUpdated { batch, .. } if batch == BATCH),
            )
            .map(|e| e.seq);
        // What A's next poll does.
        a.instance.resync().await;
        let after = a.engine().get(&request).await.expect("a get");
        let truth = a.bus.versions().await.expect("the version truth");
        let data_after = MemoryWarehouse::versions_in(after.value());

        let mut violations = Vec::new();
        if heard.is_none() {
            violations.push(format!(
                "A's live feed never delivered the warehouse_updated event of batch {BATCH}: the \
                 restarted server numbered it seq {logged_seq:?}, while A had already delivered \
                 seqs up to {seq_before} before the restart, so RedisBus dropped it as a duplicate \
                 (the event seq counter restarts at 1 when Redis comes back empty)"
            ));
        }
        if after.freshness == Freshness::Fresh && data_after == Some(vec![0]) {
            violations.push(format!(
                "stale data served as fresh: after batch {BATCH} loaded sales data version 1 and \
                 was bumped (the bump took the emptied truth's sales from 0 to {}), A answers {} \
                 with sales data version 0 marked fresh, computed at sales={}; A's engine has \
                 sales={}, the truth now sales={}. The bump's version was lower than the {} A had \
                 seen, so A's merge ignored it, and A's resync then raised the truth back to {}: \
                 the update was swallowed",
                report.versions["sales"],
                request,
                sales_version(&after),
                a.engine().versions().version(sales),
                truth.version(sales),
                sales_version(&before),
                truth.version(sales),
            ));
        }
        eprintln!(
            "bump right after an empty restart: A heard it on its feed: {}; A answers data \
             version {:?} ({}) at sales={}, truth sales={}",
            heard.is_some(),
            data_after,
            if after.freshness.is_fresh() {
                "fresh"
            } else {
                "stale"
            },
            sales_version(&after),
            truth.version(sales)
        );
        assert!(violations.is_empty(), "{}", violations.join("\n\n"));
    });
}

/// A Redis restored from an older state keeps the log's epoch but its event counter goes back:
/// the numbers a running instance has already delivered are used again, for new events. Those
/// must still reach its feed.
#[test]
fn events_after_the_counter_went_back_still_reach_the_feed() {
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let quiet = InstanceConfig {
            poll_interval: Duration::from_secs(3600),
            ..InstanceConfig::default()
        };
        let a = Node::start(server, &wh, true, quiet.clone()).await;
        let sales = sales();
        for _ in 0..5 {
            a.instance.invalidate(&[sales]).await.expect("invalidate");
        }
        let counter = blocking(|| server.cli_int(&["GET", "{freshcache}:seq"]));
        assert!(counter >= 5, "the counter is at {counter}");
        // The restore: the counter is back at 2, the epoch and the log are as they were.
        blocking(|| server.cli(&["SET", "{freshcache}:seq", "2"]));
        let mut feed = a.bus.subscribe();
        let b = Node::start(server, &wh, true, quiet).await;
        let wanted = a.engine().versions().version(sales) + 1;
        b.instance
            .invalidate(&[sales])
            .await
            .expect("invalidate by B");
        let heard = first_event(&mut feed, Duration::from_secs(3), |e| {
            matches!(&e.kind, EventKind::WarehouseUpdated { versions, .. }
                if versions.get("sales") == Some(&wanted))
        })
        .await;
        assert!(
            heard.is_some(),
            "A's feed never delivered B's bump to sales={wanted}, numbered after a counter that \
             went back from {counter} to 2"
        );
        assert_eq!(heard, Some(3), "B's bump was numbered 3");
    });
}

/// The sequence number of the first event on `feed` that is `wanted`, within `limit`.
async fn first_event(
    feed: &mut tokio::sync::broadcast::Receiver<freshcache::model::events::Event>,
    limit: Duration,
    wanted: impl Fn(&freshcache::model::events::Event) -> bool,
) -> Option<u64> {
    tokio::time::timeout(limit, async {
        loop {
            match feed.recv().await {
                Ok(e) if wanted(&e) => return Some(e.seq),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

fn as_refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Waits for every worker of a load and puts together what they gave: their samples and the
/// errors of their failed gets.
async fn gather<T>(
    workers: Vec<tokio::task::JoinHandle<(Vec<T>, Vec<String>)>>,
) -> (Vec<T>, Vec<String>) {
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for w in workers {
        let (s, f) = w.await.expect("a worker");
        samples.extend(s);
        failures.extend(f);
    }
    (samples, failures)
}

fn assert_no_failed_gets(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} gets failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// The key `request` has at `engine`'s current versions.
fn current_key(engine: &Engine, request: &Request) -> EntryKey {
    let versions = engine.versions();
    let mut out = [0u64; 4];
    for (slot, t) in out.iter_mut().zip(&request.query().tables) {
        *slot = versions.version(*t);
    }
    EntryKey::new(request.fingerprint(), out)
}

/// An entry body as the store writes it (JSON), with the stamp's fields given raw so that they
/// can be out of range.
fn raw_entry(len: u64, tables: [u64; 4], versions: [u64; 4], value: &str) -> Vec<u8> {
    let now = freshcache::model::clock::system_now_ms();
    serde_json::json!({
        "fresh_until": now + 3_600_000,
        "created_ms": now,
        "load_ms": 1,
        "keep_until": now + 7_200_000,
        "value": value,
        "versions": { "len": len, "tables": tables, "versions": versions },
    })
    .to_string()
    .into_bytes()
}

/// Case `i` of [`corrupt_shared_entries_are_misses_and_never_panic`]: bytes that must not be
/// served for `key` of `request`, and what is wrong with them.
fn corrupt_entry(
    rng: &mut fastrand::Rng,
    request: &Request,
    key: &EntryKey,
    i: usize,
) -> (Vec<u8>, &'static str) {
    let n = request.query().tables.len();
    let mut tables = [0u64; 4];
    for (slot, t) in tables.iter_mut().zip(&request.query().tables) {
        *slot = t.0 as u64;
    }
    let good = raw_entry(n as u64, tables, key.versions, "[]");
    match i % 7 {
        0 => {
            let len = rng.usize(0..200);
            (
                std::iter::repeat_with(|| rng.u8(..)).take(len).collect(),
                "random bytes",
            )
        }
        1 => (
            raw_entry(rng.u64(5..=255), tables, key.versions, "[]"),
            "stamp length out of range",
        ),
        2 => {
            let mut t = tables;
            t[0] = rng.u64(1_000..=65_535);
            (
                raw_entry(n as u64, t, key.versions, "[]"),
                "a table the query does not read",
            )
        }
        3 => {
            let mut v = key.versions;
            v[0] = v[0].wrapping_add(rng.u64(1..));
            (
                raw_entry(n as u64, tables, v, "[]"),
                "versions other than the key's",
            )
        }
        4 => (
            raw_entry(n as u64, tables, key.versions, "not json {"),
            "a value that is not JSON",
        ),
        5 => {
            let cut = rng.usize(1..good.len());
            (good[..cut].to_vec(), "truncated")
        }
        _ => (
            raw_entry(rng.u64(0..=255), [rng.u64(..); 4], [rng.u64(..); 4], "{}"),
            "every stamp field random",
        ),
    }
}

/// Regression (issue 10): anything read from Redis is validated. Random bytes and well-formed
/// JSON with out-of-range fields (a stamp length of 200 used to panic while holding a shard
/// lock), written with a real client under the key an entry would have, are misses: the get is
/// answered from the warehouse, fresh, at the current versions, and nothing panics; the same as
/// a stale fallback after a bump.
#[test]
fn corrupt_shared_entries_are_misses_and_never_panic() {
    const CASES: usize = 140;
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(1));
        let with_tier = Node::start(server, &wh, true, InstanceConfig::default()).await;
        let without_tier = Node::start(server, &wh, false, InstanceConfig::default()).await;
        let seed = fastrand::u64(..);
        eprintln!("corrupt entries: seed {seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut served = Vec::new();
        for i in 0..CASES {
            let node = if i % 2 == 0 {
                &with_tier
            } else {
                &without_tier
            };
            let engine = node.engine().clone();
            let request = distinct_request(&engine, i);
            let key = current_key(&engine, &request);
            let name = node.store.entry_key(&request, &key);
            let (bytes, what) = corrupt_entry(&mut rng, &request, &key, i);
            blocking(|| server.cli_with_stdin(&["SET", &name], Some(&bytes)));
            let queries = wh.queries();
            let get = tokio::spawn({
                let request = request.clone();
                async move {
                    engine.get(&request).await.map(|a| {
                        (
                            a.source,
                            a.freshness.is_fresh(),
                            a.versions().versions().to_vec(),
                            a.value().to_string(),
                        )
                    })
                }
            });
            let (source, fresh, versions, value) = match get.await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => panic!("case {i} ({what}, seed {seed}): the get failed: {e}"),
                Err(e) => panic!("case {i} ({what}, seed {seed}): the get panicked: {e}"),
            };
            let n = request.query().tables.len();
            assert!(
                source == Source::Warehouse && fresh && versions == key.versions[..n],
                "case {i} ({what}, seed {seed}): served {source} fresh={fresh} at {versions:?} \
                 instead of a fresh warehouse answer at {:?}",
                &key.versions[..n]
            );
            assert!(
                serde_json::from_str::<Value>(&value).is_ok(),
                "case {i} ({what}): served a value that is not JSON"
            );
            assert_eq!(wh.queries(), queries + 1, "case {i} ({what}): one load");
            served.push(what);
        }

        let counted = with_tier.store.corrupt_entries() + without_tier.store.corrupt_entries();
        assert!(
            counted >= CASES as u64,
            "{counted} corrupt entries counted for {CASES} cases"
        );
        // ... and shown in the feed as bad input (within a report tick or two).
        let mut shown = false;
        for _ in 0..100 {
            let events = with_tier.bus.history(0, 10_000).await.expect("the log");
            shown = events.iter().any(|e| {
                matches!(&e.kind, EventKind::BadInput { source, reason, .. }
                    if source == "shared store" && reason.contains("could not be read"))
            });
            if shown {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(shown, "corrupt entries are shown in the feed");

        // A corrupt previous version is no stale fallback either: the failed load is an error.
        let engine = without_tier.engine().clone();
        let request = distinct_request(&engine, CASES);
        engine.get(&request).await.expect("a first load");
        let key = current_key(&engine, &request);
        let name = without_tier.store.entry_key(&request, &key);
        let mut tables = [0u64; 4];
        for (slot, t) in tables.iter_mut().zip(&request.query().tables) {
            *slot = t.0 as u64;
        }
        let bytes = raw_entry(200, tables, key.versions, "[]");
        blocking(|| server.cli_with_stdin(&["SET", &name], Some(&bytes)));
        without_tier
            .bus
            .bump(&[sales()], "corrupt", BumpMode::Force, false)
            .await
            .expect("a bump");
        without_tier.instance.resync().await;
        wh.set_failing(true);
        let outcome = tokio::spawn({
            let (engine, request) = (engine.clone(), request.clone());
            async move { engine.get(&request).await.map(|a| a.freshness.is_fresh()) }
        })
        .await;
        wh.set_failing(false);
        match outcome {
            Ok(Err(_)) => {}
            Ok(Ok(fresh)) => panic!("a corrupt previous entry was served (fresh={fresh})"),
            Err(e) => panic!("the get panicked on a corrupt previous entry: {e}"),
        }
        eprintln!("corrupt entries: {} cases, all misses", served.len());
    });
}

/// An entry another process would have stored for `key` of `request`, with `value`.
fn entry_of(
    request: &Request,
    key: &EntryKey,
    value: &str,
) -> Arc<freshcache::model::entry::Entry> {
    let now = freshcache::model::clock::system_now_ms();
    let mut versions = key.versions.iter().copied();
    Arc::new(freshcache::model::entry::Entry {
        fresh_until: now + 3_600_000,
        created_ms: now,
        load_ms: 1,
        keep_until: now + 7_200_000,
        value: Arc::from(value),
        versions: freshcache::model::entry::Stamp::from_fn(&request.query().tables, |_| {
            versions.next().unwrap_or(0)
        }),
    })
}

/// A Redis store that, the first time a lease is asked for, lets another process store the
/// entry first: the race between a process's probe of the shared tier and its lease.
struct FilledBeforeTheLease {
    store: Arc<RedisStore>,
    other: Arc<RedisStore>,
    armed: std::sync::Mutex<Option<Arc<freshcache::model::entry::Entry>>>,
}

impl Store for FilledBeforeTheLease {
    fn describe(&self) -> String {
        self.store.describe()
    }
    fn get<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
    ) -> BoxFuture<'a, Result<Option<Arc<freshcache::model::entry::Entry>>, StoreError>> {
        self.store.get(request, key)
    }
    fn previous<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
    ) -> BoxFuture<'a, Result<Option<Arc<freshcache::model::entry::Entry>>, StoreError>> {
        self.store.previous(request, key)
    }
    fn put<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        entry: Arc<freshcache::model::entry::Entry>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        self.store.put(request, key, entry)
    }
    fn table_keys<'a>(
        &'a self,
        current: &'a freshcache::model::versions::VersionVector,
    ) -> BoxFuture<'a, Result<Vec<freshcache::model::entry::TableKeys>, StoreError>> {
        self.store.table_keys(current)
    }
    fn lease<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
        token: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let armed = self.armed.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(entry) = armed {
                self.other
                    .put(request, *key, entry)
                    .await
                    .expect("the other process stores its entry");
            }
            self.store.lease(request, key, token, ttl).await
        })
    }
    fn extend_lease<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
        token: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.store.extend_lease(request, key, token, ttl)
    }
    fn put_and_release<'a>(
        &'a self,
        request: &'a Request,
        key: EntryKey,
        entry: Option<Arc<freshcache::model::entry::Entry>>,
        token: u64,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        self.store.put_and_release(request, key, entry, token)
    }
    fn release_lease<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
        token: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.store.release_lease(request, key, token)
    }
    fn wait_fill<'a>(
        &'a self,
        request: &'a Request,
        key: &'a EntryKey,
        timeout: Duration,
    ) -> BoxFuture<'a, ()> {
        self.store.wait_fill(request, key, timeout)
    }
    fn purge<'a>(
        &'a self,
        current: &'a freshcache::model::versions::VersionVector,
        budget: usize,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.store.purge(current, budget)
    }
}

/// Regression (issue 10): a process that took the lease looks in the shared tier again before
/// loading: another process may have stored the answer between this one's probe and its lease.
#[test]
fn the_lease_holder_rechecks_the_shared_tier_before_loading() {
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(20));
        let catalog = catalog();
        let tables = catalog.tables().clone();
        let store = Arc::new(RedisStore::new(link(server), tables.clone()));
        let other = Arc::new(RedisStore::new(link(server), tables));
        let racing = Arc::new(FilledBeforeTheLease {
            store,
            other,
            armed: std::sync::Mutex::new(None),
        });
        let engine = Engine::builder(catalog, wh.clone())
            .shared(racing.clone())
            .build()
            .expect("an engine");
        let request = distinct_request(&engine, 1);
        let key = current_key(&engine, &request);
        *racing.armed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(entry_of(&request, &key, r#"{"from":"the other process"}"#));
        let answer = engine.get(&request).await.expect("a get");
        assert_eq!(
            answer.value(),
            r#"{"from":"the other process"}"#,
            "the lease holder loaded although the answer was in the shared tier"
        );
        assert!(answer.freshness.is_fresh());
        assert_eq!(wh.queries(), 0, "no warehouse query");
        let leases =
            blocking(|| server.scan(&format!("fc:*:l:*:{:032x}:*", request.fingerprint())));
        assert!(leases.is_empty(), "the lease was released: {leases:?}");
        // A load under the lease stores its answer and releases the lease in the same script.
        let other = distinct_request(&engine, 4);
        let loaded = engine.get(&other).await.expect("a load");
        assert_eq!(loaded.source, Source::Warehouse);
        assert_eq!(wh.queries(), 1);
        let leases = blocking(|| server.scan(&format!("fc:*:l:*:{:032x}:*", other.fingerprint())));
        assert!(leases.is_empty(), "the lease was released: {leases:?}");
        let name = racing
            .store
            .entry_key(&other, &current_key(&engine, &other));
        assert_eq!(blocking(|| server.cli_int(&["EXISTS", &name])), 1, "stored");
    });
}

/// Regression (issue 10): a loader whose lease was taken over (it expired and another process
/// holds it now) does not overwrite what the new holder stored: the shared put is conditional on
/// the lease, and the refusal is counted.
#[test]
fn a_lost_lease_never_overwrites_the_new_holders_entry() {
    with_redis(async |server| {
        let slow = warehouse(Duration::from_millis(600));
        let a = Node::start(server, &slow, true, InstanceConfig::default()).await;
        let b = Node::start(server, &slow, true, InstanceConfig::default()).await;
        let request = distinct_request(a.engine(), 2);
        let key = current_key(a.engine(), &request);
        let get = tokio::spawn({
            let (engine, request) = (a.engine().clone(), request.clone());
            async move { engine.get(&request).await }
        });
        let pattern = format!("fc:*:l:*:{:032x}:*", request.fingerprint());
        let started = Instant::now();
        let lease = loop {
            if let Some(l) = blocking(|| server.scan(&pattern)).pop() {
                break l;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "A took no lease"
            );
            tokio::time::sleep(POLL).await;
        };
        // B takes the lease over and stores its answer while A is still loading.
        blocking(|| server.cli(&["SET", &lease, "4242", "PX", "10000"]));
        let b_entry = entry_of(&request, &key, r#"{"from":"B"}"#);
        freshcache::store::Store::put(&*b.store, &request, key, b_entry)
            .await
            .expect("B stores");
        let a_answer = get.await.expect("A's get").expect("A answers");
        assert!(
            a_answer.freshness.is_fresh(),
            "A's own waiters get its load"
        );
        let name = a.store.entry_key(&request, &key);
        let stored = blocking(|| server.cli(&["GET", &name]));
        assert!(
            stored.contains(r#"{\"from\":\"B\"}"#),
            "A overwrote the new lease holder's entry: {stored}"
        );
        assert_eq!(
            blocking(|| server.cli(&["GET", &lease])).trim(),
            "4242",
            "A removed B's lease"
        );
        assert_eq!(
            a.engine().stats().lease_lost,
            1,
            "the lost lease is counted"
        );
    });
}

/// Regression (issue 10): the shared tier's previous answer is the newest *version* stored, not
/// the latest-created entry: a slow load of an old version that finishes after the new version
/// was stored does not become the stale fallback.
#[test]
fn a_late_old_version_never_becomes_the_shared_previous() {
    with_redis(async |server| {
        let store = RedisStore::new(link(server), catalog().tables().clone());
        let engine = Engine::builder(catalog(), warehouse(Duration::from_millis(1)))
            .build()
            .expect("an engine");
        let request = distinct_request(&engine, 3);
        let at = |v: u64| EntryKey::new(request.fingerprint(), [v, 0, 0, 0]);
        // Stores the answer `{"v":v}` at sales version `v`.
        let put = async |v: u64| {
            let value = format!(r#"{{"v":{v}}}"#);
            store
                .put(&request, at(v), entry_of(&request, &at(v), &value))
                .await
                .unwrap_or_else(|e| panic!("version {v} not stored: {e}"));
        };
        // The previous answer's value for a request at sales version `v`.
        let previous_at = async |v: u64| {
            store
                .previous(&request, &at(v))
                .await
                .expect("Redis answers")
                .expect("a previous answer")
                .value
                .to_string()
        };
        put(2).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The slow loader of version 1 finishes later.
        put(1).await;
        assert_eq!(
            previous_at(3).await,
            r#"{"v":2}"#,
            "the newest version is the previous answer"
        );
        // Versions compare as numbers, not as text: 10 is newer than 9.
        put(10).await;
        put(9).await;
        assert_eq!(previous_at(11).await, r#"{"v":10}"#);
    });
}

/// Waits (at most 5 s) until `engine` no longer reports itself degraded, as after a `SIGCONT`.
async fn healthy_again(engine: &Engine) {
    wait_until(
        Duration::from_secs(5),
        "the engine to be healthy after SIGCONT",
        async || engine.degraded().is_none(),
        || format!("still degraded: {:?}", engine.degraded()),
    )
    .await;
}

/// Regression (issue 10 A and B), with three instances on a real server and `redis-cli PUBLISH`:
/// a plain message seen by all three bumps once; the same payload after the delivery window bumps
/// again; a message (on either channel) claiming versions above the truth is refused by every
/// instance, counted, and leaves every instance at the truth — and the next real update applies.
#[test]
fn forged_and_repeated_messages_follow_the_truth() {
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let nodes = Node::start_n(server, &wh, 3, &InstanceConfig::default()).await;
        let inventory = catalog().tables().id("inventory").expect("inventory");
        let truth = |nodes: &[Node]| {
            let bus = nodes[0].bus.clone();
            async move { bus.versions().await.expect("the truth") }
        };
        let seed = br#"{"timestamp": "2026-11-30T01:00:00.123456", "tables": ["inventory"]}"#;

        blocking(|| server.publish(CHANNEL, seed));
        let all_at = |v: u64| versions_of(&nodes, inventory).iter().all(|n| *n == v);
        let versions = || {
            format!(
                "the instances have inventory={:?}",
                versions_of(&nodes, inventory)
            )
        };
        wait_until(
            Duration::from_secs(5),
            "every instance at inventory=1",
            async || all_at(1),
            versions,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            truth(&nodes).await.version(inventory),
            1,
            "one message, one bump"
        );

        // The same payload again inside the window: the same message, delivered twice.
        blocking(|| server.publish(CHANNEL, seed));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(truth(&nodes).await.version(inventory), 1);
        // ... and after the window (its mark expired): a new update.
        let marks = blocking(|| server.scan("{freshcache}:delivered:*"));
        assert_eq!(marks.len(), 1, "{marks:?}");
        let ttl = blocking(|| server.cli_int(&["PTTL", &marks[0]]));
        assert!(
            ttl > 0 && ttl <= 30_000,
            "the mark lasts the delivery window, not a day: {ttl} ms"
        );
        blocking(|| server.cli_int(&["PEXPIRE", &marks[0], "1"]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        blocking(|| server.publish(CHANNEL, seed));
        wait_until(
            Duration::from_secs(5),
            "every instance at inventory=2",
            async || all_at(2),
            versions,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(truth(&nodes).await.version(inventory), 2);

        // Forged: versions the truth never had, on the baseline's channel and on the event channel.
        let bad_before: u64 = nodes.iter().map(|n| n.instance.counters().bad_events).sum();
        blocking(|| {
            server.publish(
                CHANNEL,
                br#"{"timestamp":"2026-11-30T01:00:00","tables":["sales"],"versions":{"sales":18446744073709551615}}"#,
            )
        });
        blocking(|| {
            server.publish(
                "freshcache:events",
                br#"{"seq":999999,"at_ms":1,"origin":"x:1","type":"warehouse_updated","timestamp":"t","tables":["sales"],"versions":{"sales":4000000000},"batch":"20261130-01:00"}"#,
            )
        });
        let counted = || {
            nodes
                .iter()
                .map(|n| n.instance.counters().bad_events)
                .sum::<u64>()
                - bad_before
        };
        wait_until(
            Duration::from_secs(5),
            "each of 3 instances to refuse both",
            async || counted() >= 6,
            || format!("{} counted", counted()),
        )
        .await;
        let t = truth(&nodes).await;
        assert_eq!(t.version(sales()), 0, "the truth is untouched");
        for n in &nodes {
            assert_eq!(n.engine().versions().versions(), t.versions());
        }
        // The next real update is applied everywhere.
        nodes[0]
            .bus
            .bump(&[sales()], "manual", BumpMode::Force, false)
            .await
            .expect("the bump");
        wait_until(
            Duration::from_secs(5),
            "every instance at sales=1",
            async || versions_of(&nodes, sales()) == [1; 3],
            || {
                format!(
                    "the instances have sales={:?}",
                    versions_of(&nodes, sales())
                )
            },
        )
        .await;
    });
}

/// Regression (issue 10 B): a plain message whose bump meets a frozen server is not lost: the
/// dedupe mark and the bump are one step, and the bump is retried until it lands.
#[test]
fn a_plain_message_during_a_freeze_is_applied_once_the_server_is_back() {
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let node = Node::start(server, &wh, true, InstanceConfig::default()).await;
        let inventory = catalog().tables().id("inventory").expect("inventory");
        for (applied, round) in (1..).zip(0..3u8) {
            blocking(|| server.signal(libc::SIGSTOP));
            let payload =
                format!(r#"{{"timestamp": "2026-11-30T01:00:0{round}", "tables": ["inventory"]}}"#);
            // The message reaches the instance while the server is frozen (as if delivered just
            // before the freeze); its bump cannot complete now.
            let ingest = node.instance.ingest(CHANNEL, payload.as_bytes());
            let thaw = async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                blocking(|| server.signal(libc::SIGCONT));
            };
            let (result, ()) = tokio::join!(ingest, thaw);
            let want: u64 = applied;
            let inventory_at = || node.engine().versions().version(inventory);
            wait_until(
                Duration::from_secs(10),
                &format!("round {round} ({result:?}) to be applied"),
                async || inventory_at() >= want,
                || format!("update lost; inventory at {}", inventory_at()),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let v = node
            .bus
            .versions()
            .await
            .expect("the truth")
            .version(inventory);
        assert_eq!(v, 3, "three updates, three bumps");
    });
}

/// Regression (issue 10 C): an instance behind a blackholed connection for 10 s while another
/// bumps serves no answer marked fresh at the old version later than `max-unverified` + 100 ms
/// after the bump, and `stats` lists it as unverified meanwhile instead of dropping it.
#[test]
fn a_partitioned_instance_stops_presenting_old_answers_as_fresh() {
    use freshcache::bench::chaos::proxy::{FaultProxy, Mode};
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let config = InstanceConfig::default();
        let upstream = server
            .url()
            .trim_start_matches("redis://")
            .trim_end_matches("/0")
            .parse()
            .expect("the server's address");
        let proxy = FaultProxy::start(upstream).await.expect("the proxy");
        let other = Node::start(server, &wh, true, config.clone()).await;
        let cut = Node::start_at(&format!("redis://{}/0", proxy.addr()), &wh, config.clone()).await;
        let request = cut
            .engine()
            .request("sales_by_region", &[("quarter", "Q4"), ("year", "2026")])
            .expect("a request");
        let answer = cut.engine().get(&request).await.expect("an answer");
        let old = sales_version(&answer);
        // Both have reported (so `stats` knows the instance before it goes silent).
        tokio::time::sleep(Duration::from_millis(1_500)).await;

        proxy.set(Mode::Blackhole);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let outcome = other
            .bus
            .bump(&[sales()], "manual", BumpMode::Force, false)
            .await
            .expect("the bump");
        let bumped = Instant::now();
        let new = outcome.versions.version(sales());
        assert!(new > old);
        let bound = config.max_unverified + Duration::from_millis(100);
        let mut late_fresh = Vec::new();
        let mut served = 0;
        let mut listed_unverified = false;
        while bumped.elapsed() < Duration::from_secs(10) {
            let got =
                tokio::time::timeout(Duration::from_secs(5), cut.engine().get(&request)).await;
            if let Ok(Ok(a)) = got {
                served += 1;
                if a.freshness.is_fresh() && sales_version(&a) < new && bumped.elapsed() > bound {
                    late_fresh.push(bumped.elapsed());
                }
            }
            if !listed_unverified && bumped.elapsed() > Duration::from_secs(4) {
                let out = freshcache(&["--redis", &server.url(), "--json", "stats"])
                    .output()
                    .expect("stats runs");
                let doc: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
                listed_unverified = doc["instance_states"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|i| i["id"] == cut.instance.id() && i["state"] == "unverified");
                assert!(listed_unverified, "not listed as unverified: {doc}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served > 10, "the cut instance kept answering ({served})");
        assert!(
            late_fresh.is_empty(),
            "{} answers at sales={old} marked fresh more than {} after the bump, first at {}",
            late_fresh.len(),
            ms(bound),
            ms(late_fresh[0])
        );
        // Healed: it converges and answers fresh at the new version again.
        proxy.set(Mode::Pass);
        let cut_at = || cut.engine().versions().version(sales());
        wait_until(
            Duration::from_secs(10),
            &format!("the healed instance to reach sales={new}"),
            async || cut_at() >= new,
            || format!("it has sales={}", cut_at()),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let a = cut.engine().get(&request).await.expect("an answer");
            if a.freshness.is_fresh() && sales_version(&a) >= new {
                break;
            }
            assert!(Instant::now() < deadline, "never fresh again: {a:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
