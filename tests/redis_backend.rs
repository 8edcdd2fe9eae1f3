//! The Redis backend does what it promises when nothing goes wrong, against a real `redis-server`
//! (functional tests; the fault tests are in `redis_faults.rs`).
//!
//! * `a_second_instance_answers_from_the_shared_tier`: two instances, each with its own
//!   warehouse, on one Redis. A loads an answer; B answers the same request from Redis with no
//!   warehouse query of its own (`source` = cache); B's second get is served by its in-process
//!   tier without a single Redis `GET` (`INFO commandstats`) and without a new shared hit.
//! * `cross_process_stampede_loads_each_key_once`: the real binary,
//!   `bench stampede --processes 4 --requesters 200 --keys 5 --load-ms 100`: one warehouse query
//!   per key per phase across the four processes, no errors.
//! * `a_bump_reaches_other_instances_and_keeps_the_baseline_keys`: `etl-complete` through A is
//!   applied by B within the poll interval + 100 ms; Redis then holds the baseline's
//!   `warehouse_version` (the batch) and `warehouse_last_update` (epoch seconds), and a
//!   `redis-cli SUBSCRIBE warehouse_updated` receives the baseline's JSON (ISO-8601 `timestamp`,
//!   `tables`).
//! * `a_foreign_publish_bumps_once_for_all_instances`: `redis-cli PUBLISH warehouse_updated` of a
//!   plain payload with three instances subscribed raises sales by exactly one, on every instance.
//! * `no_keys_command_and_old_versions_are_counted_and_purged`: a workload of gets on many keys,
//!   bumps, store counts and purges, and the CLI's `get`, `invalidate`, `stats`, `events`,
//!   `warm`, `warehouse status`, `simulate-partial`, `etl-complete` and `etl run`, after which
//!   `INFO commandstats` shows no `KEYS`; old-version entries are counted as old per table and
//!   purged in bounded batches (the previous version kept by `purge`, dropped by
//!   `purge_all_below`).
//! * `running_instances_purge_old_versions_by_themselves`: entries two versions old are removed
//!   from Redis by the running instances' background work, without anyone calling a purge.
//! * `secrets_never_printed_and_bad_urls_fail_cleanly`: against a server with `--requirepass`,
//!   `stats`, `get` and `events` work with the right password and fail with one clear line and
//!   the documented exit code with a wrong one, none or a bad scheme; the password appears in no
//!   output and in nothing stored in Redis.
//! * `a_password_with_a_slash_is_masked_too`: a URL whose password holds a `/` is refused without
//!   printing the password.
//! * `cli_get_answers_from_the_warehouse_while_redis_is_down`: after `SHUTDOWN NOSAVE`,
//!   `freshcache --redis URL --json get ...` still answers, from the warehouse, with exit 0.
//! * `a_running_instance_reports_itself_degraded`: an instance whose cache Redis is shut down keeps
//!   answering from the warehouse and `stats --json` (read through its bus) counts it as degraded.
//! * `the_shared_tier_supplies_stale_if_error`: after an update whose loads fail, an instance
//!   with no in-process tier and a process started after the answer was stored both answer with
//!   the previous version from Redis, marked stale (`warehouse error`), not with an error.
//!
//! Every test starts its own `redis-server` on a free loopback port (see `common`), runs alone
//! (a shared lock), and stops every process and removes every directory it made, also when it
//! fails. Without `redis-server` and `redis-cli` the tests say so loudly and pass, unless
//! `FRESHCACHE_REQUIRE_REDIS=1`, where that is a failure.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use freshcache::bus::{Bus, CHANNEL};
use freshcache::engine::{Engine, Source};
use freshcache::exit::{EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE};
use freshcache::instance::InstanceConfig;
use freshcache::model::catalog::Request;
use freshcache::model::entry::EntryKey;
use freshcache::model::events::EventKind;
use freshcache::store::Store;
use freshcache::warehouse::EtlTarget;
use serde_json::Value;

mod common;

use common::*;

/// A password the tests look for in every output.
const SENTINEL: &str = "S3ntinel-pw-XYZ";

fn q1_2026(engine: &Engine) -> Request {
    engine
        .request("sales_by_region", &[("quarter", "Q1"), ("year", "2026")])
        .expect("a request")
}

/// The Redis key of `request`'s entry at sales version `sales_version` (every query used here
/// reads sales alone).
fn entry_name(node: &Node, request: &Request, sales_version: u64) -> String {
    node.store.entry_key(
        request,
        &EntryKey::new(request.fingerprint(), [sales_version, 0, 0, 0]),
    )
}

/// How many of `names` exist in Redis.
fn existing(server: &RedisServer, names: &[String]) -> i64 {
    names
        .chunks(100)
        .map(|chunk| {
            let mut args = vec!["EXISTS"];
            args.extend(chunk.iter().map(String::as_str));
            server.cli_int(&args)
        })
        .sum()
}

/// What one run of the binary gave.
struct CliRun {
    status: ExitStatus,
    out: String,
    err: String,
}

impl CliRun {
    fn code(&self) -> Option<u8> {
        self.status.code().and_then(|c| u8::try_from(c).ok())
    }

    fn json(&self, what: &str) -> Value {
        serde_json::from_str(self.out.trim()).unwrap_or_else(|e| {
            panic!(
                "{what} printed no JSON ({e}): stdout {:?}, stderr {:?}",
                self.out, self.err
            )
        })
    }
}

/// Starts the binary (see [`freshcache_in`]) with stdout and stderr going to `dir/name.out` and
/// `dir/name.err`; killed on drop.
fn spawn_cli(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let stdout = File::create(dir.join(format!("{name}.out"))).expect("a log file");
    let stderr = File::create(dir.join(format!("{name}.err"))).expect("a log file");
    let child = freshcache_in(dir, args)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("freshcache runs");
    Proc { child }
}

/// `freshcache --data-dir DIR warehouse init --sales 5000`: a small embedded demo warehouse.
fn init_data(dir: &Path) {
    let path = dir.to_str().expect("a UTF-8 path");
    let r = run_cli(
        dir,
        "init",
        &["--data-dir", path, "warehouse", "init", "--sales", "5000"],
        Duration::from_secs(60),
    );
    assert!(r.status.success(), "warehouse init failed: {}", r.err);
}

/// Waits for `proc` to end, for at most `limit`.
fn wait_cli(mut proc: Proc, dir: &Path, name: &str, limit: Duration) -> CliRun {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proc.exited() {
            break status;
        }
        if started.elapsed() > limit {
            drop(proc);
            let (out, err) = read_log(dir, name);
            panic!("`freshcache` ({name}) did not end within {limit:?}: {out} {err}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (out, err) = read_log(dir, name);
    CliRun { status, out, err }
}

/// Runs the binary (see [`binary`]) with its output in files under `dir`, for at most `limit`.
fn run_cli(dir: &Path, name: &str, args: &[&str], limit: Duration) -> CliRun {
    wait_cli(spawn_cli(dir, name, args), dir, name, limit)
}

/// Milliseconds since the epoch of an ISO-8601 / RFC 3339 date-time
/// (`2026-11-26T10:00:03.123Z`, `...+01:00`, or without a zone: UTC), if it is one.
fn iso8601_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| -> Option<u64> {
        let part = b.get(from..from + n)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let (y, mo, d) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (h, mi, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = format!("{:0<3}", &s[start..i.min(start + 3)]);
        frac_ms = frac.parse::<u64>().ok()?;
    }
    let offset_s: i64 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let o = (digits(i + 1, 2)? * 3600 + digits(i + 4, 2)? * 60) as i64;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo, d) = (y as i64, mo as i64, d as i64);
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + (h * 3600 + mi * 60 + sec) as i64 - offset_s;
    u64::try_from(secs).ok().map(|s| s * 1000 + frac_ms)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn iso8601_parser_used_by_these_tests() {
    assert_eq!(iso8601_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(iso8601_ms("2024-11-02T10:00:00Z"), Some(1_730_541_600_000));
    assert_eq!(
        iso8601_ms("2024-11-02T11:00:00.5+01:00"),
        Some(1_730_541_600_500)
    );
    assert_eq!(
        iso8601_ms("2026-11-26T10:00:03.123456"),
        Some(1_795_687_203_123)
    );
    for bad in [
        "",
        "2024-11-02",
        "2024-13-02T10:00:00Z",
        "2024-11-02T10:00:00Q",
        "2024-11-02T10:00:00.Z",
        "1730541600",
    ] {
        assert_eq!(iso8601_ms(bad), None, "{bad:?}");
    }
}

#[test]
fn a_second_instance_answers_from_the_shared_tier() {
    with_redis(async |server| {
        let (wh_a, wh_b) = (
            warehouse(Duration::from_millis(20)),
            warehouse(Duration::from_millis(20)),
        );
        let a = Node::start(server, &wh_a, true, InstanceConfig::default()).await;
        let b = Node::start(server, &wh_b, true, InstanceConfig::default()).await;

        let request = q1_2026(a.engine());
        let first = a.engine().get(&request).await.expect("A's get");
        assert_eq!(first.source, Source::Warehouse);
        assert!(first.freshness.is_fresh());
        assert_eq!(wh_a.queries(), 1, "A loaded once from its own warehouse");
        let stored = entry_name(&a, &request, sales_version(&first));
        assert_eq!(
            blocking(|| server.cli_int(&["EXISTS", &stored])),
            1,
            "A's answer is in Redis under {stored}"
        );

        let request_b = q1_2026(b.engine());
        let gets_before = blocking(|| server.command_calls())
            .get("get")
            .copied()
            .unwrap_or(0);
        let from_redis = b.engine().get(&request_b).await.expect("B's first get");
        let gets_after_first = blocking(|| server.command_calls())["get"];
        let (shared_hits, fresh_hits) = {
            let s = b.engine().stats();
            (s.shared_hits, s.fresh_hits)
        };
        let local = b.engine().get(&request_b).await.expect("B's second get");
        let gets_after_second = blocking(|| server.command_calls())["get"];
        let b_stats = b.engine().stats();
        eprintln!(
            "shared tier: A loaded in {} ms; B's first get: source {}, {} Redis GET(s), shared \
             hits {shared_hits}; B's second get: source {}, {} Redis GET(s), shared hits {}; \
             warehouse queries A {} B {}",
            first.load_time().as_millis(),
            from_redis.source,
            gets_after_first - gets_before,
            local.source,
            gets_after_second - gets_after_first,
            b_stats.shared_hits,
            wh_a.queries(),
            wh_b.queries()
        );
        assert_eq!(from_redis.source, Source::Cache, "B answered from Redis");
        assert!(from_redis.freshness.is_fresh());
        assert_eq!(from_redis.value(), first.value(), "B got A's answer");
        assert_eq!(wh_b.queries(), 0, "B made no warehouse query");
        assert_eq!(wh_a.queries(), 1, "A made no second one either");
        assert_eq!(shared_hits, 1, "B's first get is a shared hit");
        assert!(
            gets_after_first > gets_before,
            "B's first get read Redis (GETs {gets_before} → {gets_after_first})"
        );
        assert_eq!(local.source, Source::Cache);
        assert!(local.freshness.is_fresh());
        assert_eq!(
            gets_after_second, gets_after_first,
            "B's second get went to Redis although its in-process tier holds the answer"
        );
        assert_eq!(b_stats.shared_hits, 1, "no new shared hit");
        assert_eq!(
            b_stats.fresh_hits,
            fresh_hits + 1,
            "B's second get is a fresh hit of its own tier"
        );
        assert_eq!(wh_b.queries(), 0);
    });
}

#[test]
fn cross_process_stampede_loads_each_key_once() {
    with_redis_sync(|server| {
        let logs = TempDir::new("stampede");
        let url = server.url();
        let run = run_cli(
            logs.path(),
            "stampede",
            &[
                "--redis",
                &url,
                "--json",
                "bench",
                "stampede",
                "--processes",
                "4",
                "--requesters",
                "200",
                "--keys",
                "5",
                "--load-ms",
                "100",
            ],
            Duration::from_secs(120),
        );
        assert!(
            run.status.success(),
            "bench stampede failed ({}): {} {}",
            run.status,
            run.out,
            run.err
        );
        let report = run.json("bench stampede");
        eprintln!("bench stampede --processes 4 --requesters 200 --keys 5 --load-ms 100: {report}");
        assert_eq!(report["processes"], 4, "{report}");
        assert_eq!(report["keys"], 5, "{report}");
        assert_eq!(report["requesters"], 200, "{report}");
        assert_eq!(
            report["max_queries_per_key"], 1,
            "some key was loaded more than once across the processes: {report}"
        );
        let phases = report["results"]
            .as_array()
            .unwrap_or_else(|| panic!("no results: {report}"));
        let names: Vec<&str> = phases.iter().filter_map(|p| p["phase"].as_str()).collect();
        assert_eq!(names, ["cold", "after_bump"], "{report}");
        for p in phases {
            assert_eq!(p["errors"], 0, "{p}");
            assert_eq!(p["warehouse_queries"], 5, "one query per key: {p}");
            assert_eq!(p["stale_answers"], 0, "{p}");
            // A sanity bound only: four debug processes on a loaded machine; the load is 100 ms.
            let max = p["max_ms"].as_f64().unwrap_or(f64::MAX);
            assert!(max < 30_000.0, "a requester waited {max} ms: {p}");
        }
    });
}

#[test]
fn cross_process_stampede_through_the_worker_processes() {
    const PROCESSES: usize = 4;
    const KEYS: usize = 5;
    with_redis_sync(|server| {
        let logs = TempDir::new("workers");
        let url = server.url();
        // What `bench stampede --processes 4 --requesters 200 --keys 5 --load-ms 100` runs per
        // phase: four worker processes releasing 50 requesters each at the same instant.
        let phase = |name: &str| -> Vec<Value> {
            let start_ms = (now_ms() + 2_500).to_string();
            let args = [
                "--redis",
                url.as_str(),
                "bench",
                "stampede-worker",
                "--requesters",
                "50",
                "--keys",
                "5",
                "--load-ms",
                "100",
                "--start-ms",
                start_ms.as_str(),
            ];
            let workers: Vec<(String, Proc)> = (0..PROCESSES)
                .map(|i| {
                    let n = format!("{name}{i}");
                    let p = spawn_cli(logs.path(), &n, &args);
                    (n, p)
                })
                .collect();
            workers
                .into_iter()
                .map(|(n, p)| {
                    let r = wait_cli(p, logs.path(), &n, Duration::from_secs(60));
                    assert!(
                        r.status.success(),
                        "worker {n} failed ({}): {}",
                        r.status,
                        r.err
                    );
                    r.json(&n)
                })
                .collect()
        };
        let cold = phase("cold");
        runtime().block_on(async {
            let bus = freshcache::redis::RedisBus::start(
                link(server),
                catalog().tables().clone(),
                clock(),
            );
            bus.bump(&[sales()], "bench", freshcache::bus::BumpMode::Force, false)
                .await
                .expect("the bump between the phases");
        });
        let after = phase("after");
        for (name, reports) in [("cold", cold), ("after_bump", after)] {
            let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
            let (mut errors, mut stale, mut answers) = (0, 0, 0);
            let mut worst = 0.0f64;
            for r in &reports {
                for (k, n) in r["loads"].as_object().unwrap_or_else(|| panic!("{r}")) {
                    *per_key.entry(k.clone()).or_default() += n.as_u64().unwrap_or(u64::MAX);
                }
                errors += r["errors"].as_u64().unwrap_or(u64::MAX);
                stale += r["stale"].as_u64().unwrap_or(u64::MAX);
                let latencies = r["latencies_ms"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{r}"));
                answers += latencies.len();
                worst = latencies
                    .iter()
                    .filter_map(Value::as_f64)
                    .fold(worst, f64::max);
            }
            eprintln!(
                "stampede workers, {name}: {answers} requesters in {PROCESSES} processes, warehouse \
             queries per key {per_key:?}, errors {errors}, stale {stale}, slowest {worst:.0} ms"
            );
            let expected: BTreeMap<String, u64> = (0..KEYS).map(|k| (k.to_string(), 1)).collect();
            assert_eq!(
                per_key, expected,
                "{name}: one warehouse query per key across the processes"
            );
            assert_eq!(answers, 200, "{name}");
            assert_eq!(errors, 0, "{name}");
            assert_eq!(stale, 0, "{name}");
        }
    });
}

#[test]
fn a_bump_reaches_other_instances_and_keeps_the_baseline_keys() {
    const BATCHES: [&str; 3] = ["20261126-10:00", "20261126-11:00", "20261126-12:00"];
    with_redis_sync(|server| {
        let watcher = Subscriber::start(server, CHANNEL);
        runtime().block_on(async {
        let wh = warehouse(Duration::from_millis(5));
        let config = InstanceConfig::default();
        let limit = config.poll_interval + Duration::from_millis(100);
        let a = Node::start(server, &wh, true, config.clone()).await;
        let b = Node::start(server, &wh, true, config).await;
        blocking(|| server.wait_for_subscribers(CHANNEL, 3));
        let sales = sales();
        let mut took = Vec::new();
        let mut last_update_before = 0.0;
        for (round, batch) in BATCHES.iter().enumerate() {
            let before = b.engine().versions().version(sales);
            wh.load_table("sales", batch, clock().now_ms(), false)
                .await
                .expect("the ETL load");
            let wall = now_ms();
            let complete = {
                let instance = a.instance.clone();
                let batch = batch.to_string();
                tokio::spawn(async move { instance.etl_complete(&batch, &[sales]).await })
            };
            let reached = wait_until(
                Duration::from_secs(10),
                "B to apply the bump",
                async || b.engine().versions().version(sales) > before,
                || format!("B has sales={before}"),
            )
            .await;
            took.push(reached);
            let report = complete.await.expect("the task").expect("etl-complete");
            assert_eq!(report.bumped, ["sales"], "{report:?}");
            let target = report.versions["sales"];
            assert_eq!(target, before + 1, "{report:?}");
            assert_eq!(b.engine().versions().version(sales), target);
            assert!(
                reached <= limit,
                "round {round}: B applied the bump {} after etl-complete began (limit {})",
                ms(reached),
                ms(limit)
            );

            // The baseline's keys.
            let label = blocking(|| server.cli(&["GET", "warehouse_version"]));
            assert_eq!(label.trim(), *batch, "warehouse_version");
            let last = blocking(|| server.cli(&["GET", "warehouse_last_update"]));
            let last_update: f64 = last.trim().parse().unwrap_or_else(|e| {
                panic!("warehouse_last_update {last:?} is not a number of seconds: {e}")
            });
            let after = now_ms() as f64 / 1000.0;
            assert!(
                last_update >= wall as f64 / 1000.0 - 1.0 && last_update <= after + 1.0,
                "warehouse_last_update {last_update} is not the time of the bump ({} .. {after})",
                wall as f64 / 1000.0
            );
            assert!(last_update >= last_update_before, "it went backwards");
            last_update_before = last_update;
            for key in ["warehouse_version", "warehouse_last_update"] {
                let kind = blocking(|| server.cli(&["TYPE", key]));
                assert_eq!(kind.trim(), "string", "{key} is a plain string key");
            }

            // The baseline's message, as a plain subscriber sees it.
            let started = Instant::now();
            let payload = loop {
                if let Some(m) = watcher.messages(CHANNEL).get(round) {
                    break m.clone();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "redis-cli received no message {round} on {CHANNEL}: {:?}",
                    watcher.lines()
                );
                tokio::time::sleep(POLL).await;
            };
            let message: Value = serde_json::from_str(&payload)
                .unwrap_or_else(|e| panic!("the payload is not JSON ({e}): {payload}"));
            let timestamp = message["timestamp"]
                .as_str()
                .unwrap_or_else(|| panic!("no string `timestamp`: {message}"));
            let at = iso8601_ms(timestamp)
                .unwrap_or_else(|| panic!("`timestamp` {timestamp:?} is not ISO-8601"));
            assert!(
                at.abs_diff((last_update * 1000.0) as u64) < 1_000,
                "`timestamp` {timestamp} is not the bump's time ({last_update})"
            );
            assert_eq!(message["tables"], serde_json::json!(["sales"]), "{message}");
            assert_eq!(message["batch"], *batch, "{message}");
            assert_eq!(message["versions"]["sales"], target, "{message}");
        }
        assert_eq!(
            watcher.messages(CHANNEL).len(),
            BATCHES.len(),
            "one message per bump: {:?}",
            watcher.messages(CHANNEL)
        );
        took.sort();
        eprintln!(
            "bump propagation: {} etl-completes through A; B applied each after {} (limit \
             {}); warehouse_version, warehouse_last_update and the plain payload checked",
            BATCHES.len(),
            took.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
            ms(limit)
        );
    });
    });
}

#[test]
fn a_foreign_publish_bumps_once_for_all_instances() {
    const PAYLOAD: &str = r#"{"timestamp":"2024-11-02T10:00:00Z","tables":["sales"]}"#;
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let nodes = Node::start_n(server, &wh, 3, &InstanceConfig::default()).await;
        let sales = sales();
        let before = nodes[0].bus.versions().await.expect("the truth");
        let v0 = before.version(sales);
        let received = blocking(|| server.publish(CHANNEL, PAYLOAD.as_bytes()));
        assert_eq!(received, 3, "three instances subscribed");
        let took = wait_until(
            Duration::from_secs(5),
            "every instance to apply the publish",
            async || versions_of(&nodes, sales).iter().all(|v| *v > v0),
            || format!("instances have sales={:?}", versions_of(&nodes, sales)),
        )
        .await;
        // Each instance handles its messages in order: once each has counted this malformed
        // one, each has handled the publish before it.
        assert_eq!(blocking(|| server.publish(CHANNEL, b"sentinel")), 3);
        wait_until(
            Duration::from_secs(5),
            "every instance to handle the sentinel",
            async || nodes.iter().all(|n| n.instance.counters().bad_events >= 1),
            || {
                let bad: Vec<u64> = nodes
                    .iter()
                    .map(|n| n.instance.counters().bad_events)
                    .collect();
                format!("bad events counted per instance: {bad:?}")
            },
        )
        .await;
        let truth = nodes[0].bus.versions().await.expect("the truth");
        let engines = versions_of(&nodes, sales);
        let updates: Vec<_> = nodes[0]
            .bus
            .history(0, 1000)
            .await
            .expect("the event log")
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::WarehouseUpdated { .. }))
            .collect();
        eprintln!(
            "foreign publish to 3 instances: sales {v0} → truth {}, instances {engines:?}, all \
             applied after {}; {} warehouse_updated event(s) logged",
            truth.version(sales),
            ms(took),
            updates.len()
        );
        assert_eq!(truth.version(sales), v0 + 1, "sales went up by exactly one");
        assert_eq!(engines, [v0 + 1; 3], "every instance applied it, once");
        for t in freshcache_tables() {
            if t != sales {
                assert_eq!(
                    truth.version(t),
                    before.version(t),
                    "only sales moved: {:?}",
                    truth.versions()
                );
            }
        }
        assert_eq!(updates.len(), 1, "{updates:?}");
        match &updates[0].kind {
            EventKind::WarehouseUpdated {
                tables, versions, ..
            } => {
                assert_eq!(tables, &["sales"]);
                assert_eq!(versions.get("sales"), Some(&(v0 + 1)));
            }
            other => panic!("{other:?}"),
        }
    });
}

fn freshcache_tables() -> Vec<freshcache::model::versions::TableId> {
    catalog().tables().ids().collect()
}

/// Sales counts of the Redis store: (current, old).
async fn sales_keys(node: &Node) -> (u64, u64) {
    let truth = node.bus.versions().await.expect("the truth");
    let keys = node.store.table_keys(&truth).await.expect("table_keys");
    let k = keys[sales().index()];
    (k.current, k.old)
}

#[test]
fn no_keys_command_and_old_versions_are_counted_and_purged() {
    const N: usize = 30;
    with_redis_sync(|server| {
        let data = TempDir::new("data");
        init_data(data.path());
        runtime().block_on(async {
            let wh = warehouse(Duration::from_millis(2));
            let a = Node::start(server, &wh, true, InstanceConfig::default()).await;
            let b = Node::start(server, &wh, false, InstanceConfig::default()).await;
            let sales = sales();
            let requests: Vec<Request> = (0..N).map(|i| distinct_request(a.engine(), i)).collect();
            let ask_all = async |node: &Node| {
                for r in &requests {
                    let answer = node.engine().get(r).await.expect("a get");
                    assert!(answer.freshness.is_fresh());
                }
            };
            let names_at =
                |v: u64| -> Vec<String> { requests.iter().map(|r| entry_name(&a, r, v)).collect() };

            ask_all(&a).await;
            ask_all(&b).await;
            let v0 = a.engine().versions().version(sales);
            assert_eq!(blocking(|| existing(server, &names_at(v0))), N as i64);
            assert_eq!(sales_keys(&a).await, (N as u64, 0));

            // One bump: every entry is now one version old, and counted so.
            a.instance.invalidate(&[sales]).await.expect("invalidate");
            let v1 = a.engine().versions().version(sales);
            assert_eq!(v1, v0 + 1);
            let (_, old) = sales_keys(&a).await;
            assert_eq!(old, N as u64, "the entries at sales={v0} count as old");
            ask_all(&b).await;
            ask_all(&a).await;
            let last = std::cell::Cell::new((0, 0));
            let counts = || format!("sales (current, old) in Redis: {:?}", last.get());
            wait_until(
                Duration::from_secs(5),
                "the counts after the first bump",
                async || {
                    last.set(sales_keys(&a).await);
                    last.get() == (N as u64, N as u64)
                },
                counts,
            )
            .await;

            // A second bump: two old versions; `purge` keeps the previous one.
            a.instance.invalidate(&[sales]).await.expect("invalidate");
            let v2 = a.engine().versions().version(sales);
            ask_all(&b).await;
            wait_until(
                Duration::from_secs(5),
                "the counts after the second bump",
                async || {
                    last.set(sales_keys(&a).await);
                    last.get() == (N as u64, 2 * N as u64)
                },
                counts,
            )
            .await;
            let truth = a.bus.versions().await.expect("the truth");
            assert_eq!(truth.version(sales), v2);
            let purged = a.store.purge(&truth, 10_000).await.expect("purge");
            assert_eq!(purged, N, "purge drops the {N} entries at sales={v0}");
            assert_eq!(blocking(|| existing(server, &names_at(v0))), 0);
            assert_eq!(
                blocking(|| existing(server, &names_at(v1))),
                N as i64,
                "the previous version stays (it may be served stale)"
            );
            assert_eq!(sales_keys(&a).await, (N as u64, N as u64));
            let indexed = |server: &RedisServer| -> BTreeSet<u64> {
                server
                    .cli(&["SMEMBERS", "fc:{sales}:iv"])
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect()
            };
            let old_index = format!("fc:{{sales}}:i:{v0}");
            assert_eq!(
                blocking(|| server.cli_int(&["EXISTS", &old_index])),
                0,
                "the index of sales={v0} is gone"
            );
            // The next purge finds nothing more to drop, and forgets the emptied index.
            assert_eq!(a.store.purge(&truth, 10_000).await.expect("purge"), 0);
            assert_eq!(blocking(|| indexed(server)), BTreeSet::from([v1, v2]));
            let purged = a
                .store
                .purge_all_below(sales, v2, 7)
                .await
                .expect("purge_all_below");
            assert_eq!(purged, 7, "the budget bounds a purge");
            let mut total = purged;
            loop {
                let n = a
                    .store
                    .purge_all_below(sales, v2, 7)
                    .await
                    .expect("purge_all_below");
                if n == 0 {
                    break;
                }
                total += n;
            }
            assert_eq!(total, N);
            assert_eq!(blocking(|| existing(server, &names_at(v1))), 0);
            assert_eq!(blocking(|| existing(server, &names_at(v2))), N as i64);
            assert_eq!(sales_keys(&a).await, (N as u64, 0));
            assert_eq!(
                a.store.purge_all_below(sales, v2, 7).await.expect("purge"),
                0
            );
            assert_eq!(blocking(|| indexed(server)), BTreeSet::from([v2]));
        });

        // The command line, on the same server.
        let url = server.url();
        let dir = data.path().to_str().expect("a UTF-8 path").to_string();
        let commands: [&[&str]; 10] = [
            &["get", "sales_by_region", "quarter=Q1", "year=2026"],
            &["get", "quarterly_trend", "year=2025"],
            &["invalidate", "--table", "sales", "--yes"],
            &["stats"],
            &["events", "--limit", "20"],
            &["warm", "--top", "5"],
            &["warehouse", "status"],
            &["simulate-partial", "--fail", "inventory", "--yes"],
            &["etl-complete", "--batch", "20200101-00:00"],
            &["etl", "run"],
        ];
        for (i, command) in commands.iter().enumerate() {
            let mut args = vec![
                "--redis",
                url.as_str(),
                "--data-dir",
                dir.as_str(),
                "--latency",
                "5ms",
                "--json",
            ];
            args.extend_from_slice(command);
            let run = run_cli(
                data.path(),
                &format!("cli{i}"),
                &args,
                Duration::from_secs(60),
            );
            assert!(
                run.status.success(),
                "`freshcache {}` failed ({}): {} {}",
                command.join(" "),
                run.status,
                run.out,
                run.err
            );
        }

        let calls = server.command_calls();
        eprintln!("no KEYS: INFO commandstats after the workload: {calls:?}");
        assert!(
            !calls.contains_key("keys"),
            "KEYS was called {} times",
            calls["keys"]
        );
        let info = server.cli(&["INFO", "commandstats"]);
        assert!(!info.contains("cmdstat_keys"), "{info}");
        // The workload did go through this server.
        for command in ["get", "evalsha", "unlink", "zcount", "zadd", "xadd"] {
            assert!(
                calls.get(command).is_some_and(|n| *n > 0),
                "no `{command}` call was counted: {calls:?}"
            );
        }
    });
}

#[test]
fn running_instances_purge_old_versions_by_themselves() {
    const N: usize = 10;
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(2));
        let a = Node::start(server, &wh, true, InstanceConfig::default()).await;
        let _b = Node::start(server, &wh, true, InstanceConfig::default()).await;
        let sales = sales();
        let requests: Vec<Request> = (0..N).map(|i| distinct_request(a.engine(), i)).collect();
        for r in &requests {
            a.engine().get(r).await.expect("a get");
        }
        let v0 = a.engine().versions().version(sales);
        let old: Vec<String> = requests.iter().map(|r| entry_name(&a, r, v0)).collect();
        assert_eq!(blocking(|| existing(server, &old)), N as i64);
        // Two bumps: the entries at v0 are no longer even the previous version; nothing can
        // serve them.
        for _ in 0..2 {
            a.instance.invalidate(&[sales]).await.expect("invalidate");
        }
        let index = format!("fc:{{sales}}:i:{v0}");
        let limit = Duration::from_secs(10);
        let started = Instant::now();
        let left = loop {
            let left = blocking(|| existing(server, &old));
            if left == 0 || started.elapsed() > limit {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let index_left = blocking(|| server.cli_int(&["EXISTS", &index]));
        eprintln!(
            "old versions in Redis: {left} of {N} entries at sales={v0} (two versions old) left \
             {} after the bumps; index {index} exists: {index_left}",
            ms(started.elapsed())
        );
        assert!(
            left == 0 && index_left == 0,
            "{left} of {N} entries at sales={v0}, two versions behind the current sales={}, are \
             still in Redis {limit:?} after the bumps with two instances running (and their \
             index {index} exists: {index_left}): no running instance purges old versions. \
             RedisStore's Store::purge is never called outside `bench redis-invalidation`, so old \
             entries only leave when their TTL (keep_until, hours) ends",
            a.engine().versions().version(sales)
        );
    });
}

/// Every value stored in the server (strings, hashes, sets, sorted sets, lists, streams), as
/// text, to look for what must not be there.
fn dump(server: &RedisServer) -> String {
    let mut all = String::new();
    for key in server.scan("*") {
        all.push_str(&key);
        all.push('\n');
        let kind = server.cli(&["TYPE", &key]);
        let value = match kind.trim() {
            "string" => server.cli(&["GET", &key]),
            "hash" => server.cli(&["HGETALL", &key]),
            "set" => server.cli(&["SMEMBERS", &key]),
            "zset" => server.cli(&["ZRANGE", &key, "0", "-1"]),
            "list" => server.cli(&["LRANGE", &key, "0", "-1"]),
            "stream" => server.cli(&["XRANGE", &key, "-", "+"]),
            _ => String::new(),
        };
        all.push_str(&value);
    }
    all
}

#[test]
fn secrets_never_printed_and_bad_urls_fail_cleanly() {
    let _serial = serial();
    let Some(server) = RedisServer::start_with_password(
        "secrets_never_printed_and_bad_urls_fail_cleanly",
        SENTINEL,
    ) else {
        return;
    };
    let data = TempDir::new("data");
    init_data(data.path());
    let dir = data.path().to_str().expect("a UTF-8 path").to_string();
    let port = server.port;
    let good = format!("redis://:{SENTINEL}@127.0.0.1:{port}/0");
    let commands: [&[&str]; 3] = [
        &["stats"],
        &["get", "sales_by_region", "quarter=Q1", "year=2026"],
        &["events", "--limit", "5"],
    ];
    let mut n = 0;
    let mut run = |url: &str, json: bool, command: &[&str]| -> CliRun {
        n += 1;
        let mut args = vec![
            "--redis",
            url,
            "--data-dir",
            dir.as_str(),
            "--latency",
            "5ms",
        ];
        if json {
            args.push("--json");
        }
        args.extend_from_slice(command);
        let r = run_cli(
            data.path(),
            &format!("run{n}"),
            &args,
            Duration::from_secs(30),
        );
        for (stream, text) in [("stdout", &r.out), ("stderr", &r.err)] {
            assert!(
                !text.contains(SENTINEL),
                "the password appeared on {stream} of `freshcache {}`: {text}",
                args.join(" ").replace(SENTINEL, "<password>")
            );
        }
        r
    };

    // The right password: everything works.
    let mut report: BTreeMap<&str, BTreeSet<Option<i32>>> = BTreeMap::new();
    for command in commands {
        let r = run(&good, true, command);
        assert_eq!(
            r.code(),
            Some(EXIT_OK),
            "`{}` with the right password failed: {} {}",
            command.join(" "),
            r.out,
            r.err
        );
        if command[0] != "events" {
            r.json(command[0]);
        }
    }
    let r = run(&good, true, &["invalidate", "--table", "sales", "--yes"]);
    assert_eq!(r.code(), Some(EXIT_OK), "{} {}", r.out, r.err);
    let r = run(&good, true, &["events", "--limit", "5"]);
    assert!(
        r.out.contains("invalidate"),
        "events shows the invalidation: {}",
        r.out
    );
    let stats = run(&good, true, &["stats"]).json("stats");
    assert_eq!(stats["versions"]["sales"], 1, "{stats}");
    // The human text names the server with the password masked.
    let text = run(&good, false, &["stats"]);
    assert_eq!(text.code(), Some(EXIT_OK), "{}", text.err);
    assert!(
        text.out
            .contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "stats names the server, masked: {}",
        text.out
    );

    // Wrong passwords (themselves sentinels), no password, bad URLs.
    let wrong = format!("redis://:{SENTINEL}-wrong@127.0.0.1:{port}/0");
    let wrong_user = format!("redis://default:{SENTINEL}-wrong@127.0.0.1:{port}/0");
    let none = format!("redis://127.0.0.1:{port}/0");
    let bad_scheme = format!("http://:{SENTINEL}@127.0.0.1:1");
    let bad_db = format!("redis://:{SENTINEL}@127.0.0.1:{port}/notadb");
    let bad_port = format!("redis://:{SENTINEL}@127.0.0.1:notaport");
    // A URL that cannot be used is a configuration error (the flag's value is checked with the
    // rest of the configuration); a server that refuses the credentials is a backend that cannot
    // be used.
    let cases: [(&str, &str, u8, &[&str]); 6] = [
        ("a wrong password", &wrong, EXIT_UNAVAILABLE, &["auth"]),
        ("a wrong user", &wrong_user, EXIT_UNAVAILABLE, &["auth"]),
        ("no password", &none, EXIT_UNAVAILABLE, &["auth"]),
        (
            "a bad scheme",
            &bad_scheme,
            EXIT_CONFIG,
            &["redis url", "redis://"],
        ),
        ("a bad db", &bad_db, EXIT_CONFIG, &["redis url"]),
        ("a bad port", &bad_port, EXIT_CONFIG, &["redis url"]),
    ];
    for (what, url, code, says) in cases {
        for command in commands {
            for json in [true, false] {
                let r = run(url, json, command);
                let lines: Vec<&str> = r.err.lines().filter(|l| !l.trim().is_empty()).collect();
                report.entry(what).or_default().insert(r.status.code());
                // A server that refuses the credentials leaves `get` degraded, not failed: it
                // answers from the warehouse and warns in one line that says why.
                if command[0] == "get" && code == EXIT_UNAVAILABLE {
                    assert_eq!(r.code(), Some(EXIT_OK), "`get` with {what}: {}", r.err);
                    if json {
                        assert_eq!(r.json("get")["source"], "warehouse", "{}", r.out);
                    }
                    let warning: Vec<&str> = lines
                        .iter()
                        .copied()
                        .filter(|l| l.contains("warning"))
                        .collect();
                    assert_eq!(warning.len(), 1, "`get` with {what}: {:?}", r.err);
                    let line = warning[0].to_lowercase();
                    assert!(
                        line.contains("degraded") && says.iter().all(|s| line.contains(s)),
                        "`get` with {what}: the warning does not say why: {}",
                        warning[0]
                    );
                    continue;
                }
                assert_eq!(
                    r.code(),
                    Some(code),
                    "`{}` with {what}: exit {}, expected {code}: {}",
                    command.join(" "),
                    r.status,
                    r.err
                );
                assert!(
                    r.out.trim().is_empty(),
                    "`{}` with {what} printed on stdout: {}",
                    command.join(" "),
                    r.out
                );
                assert_eq!(
                    lines.len(),
                    1,
                    "`{}` with {what}: one line of error expected: {:?}",
                    command.join(" "),
                    r.err
                );
                // With --json the error is an object whose `error` says it.
                let line = match serde_json::from_str::<serde_json::Value>(lines[0]) {
                    Ok(e) => format!("freshcache: {}", e["error"].as_str().unwrap_or_default()),
                    Err(_) => lines[0].to_string(),
                }
                .to_lowercase();
                assert!(
                    line.starts_with("freshcache: ") && says.iter().all(|s| line.contains(s)),
                    "`{}` with {what}: the error does not say {says:?}: {}",
                    command.join(" "),
                    lines[0]
                );
            }
        }
    }
    let stored = dump(&server);
    assert!(
        !stored.contains(SENTINEL),
        "the password is stored in Redis: {}",
        stored
            .lines()
            .filter(|l| l.contains(SENTINEL))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    eprintln!(
        "secrets: {n} runs, the password in none of their outputs nor in Redis ({} bytes \
         dumped); exit codes of stats, get and events (text and JSON) with {report:?}",
        stored.len(),
    );
}

#[test]
fn a_password_with_a_slash_is_masked_too() {
    let _serial = serial();
    if let Some(why) = redis_tools_missing() {
        // Needs no server, but belongs with the others.
        skip("a_password_with_a_slash_is_masked_too", &why);
        return;
    }
    let data = TempDir::new("data");
    let dir = data.path().to_str().expect("a UTF-8 path").to_string();
    let mut leaks = Vec::new();
    for (i, url) in [
        "redis://:S3ntinel/pw-XYZ@127.0.0.1:1/0",
        "redis://ann:S3ntinel/pw-XYZ@127.0.0.1:1",
        "rediss://:S3ntinel/pw-XYZ@127.0.0.1:1",
    ]
    .iter()
    .enumerate()
    {
        let r = run_cli(
            data.path(),
            &format!("slash{i}"),
            &["--redis", url, "--data-dir", &dir, "--json", "stats"],
            Duration::from_secs(30),
        );
        assert_ne!(r.code(), Some(EXIT_OK), "{url} cannot work");
        for (stream, text) in [("stdout", &r.out), ("stderr", &r.err)] {
            if text.contains("S3ntinel") || text.contains("pw-XYZ") {
                leaks.push(format!("{stream}: {}", text.trim()));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "a password containing `/` is printed (mask_url in src/redis_link.rs ends the authority \
         at the first `/`, so the `@` after it is never seen):\n{}",
        leaks.join("\n")
    );
}

/// `bench redis-invalidation` fills its Redis and runs KEYS there: on a Redis that holds anything
/// (possibly someone else's) it refuses before writing or scanning.
#[test]
fn the_invalidation_bench_refuses_a_redis_that_is_not_empty() {
    with_redis_sync(|server| {
        server.cli(&["SET", "someone:else", "1"]);
        let dir = TempDir::new("bench");
        let url = server.url();
        let r = run_cli(
            dir.path(),
            "bench",
            &[
                "--redis",
                &url,
                "bench",
                "redis-invalidation",
                "--keys",
                "10",
            ],
            Duration::from_secs(30),
        );
        assert_eq!(r.code(), Some(3), "{}: {}", r.status, r.err.trim());
        assert!(r.err.contains("empty Redis"), "{}", r.err.trim());
        assert_eq!(server.cli_int(&["DBSIZE"]), 1, "the bench wrote into it");
        assert!(
            !server.command_calls().contains_key("keys"),
            "the bench ran KEYS: {:?}",
            server.command_calls()
        );
    });
}

#[test]
fn cli_get_answers_from_the_warehouse_while_redis_is_down() {
    with_redis_sync(|server| {
        let data = TempDir::new("data");
        init_data(data.path());
        let dir = data.path().to_str().expect("a UTF-8 path").to_string();
        let url = server.url();
        let args = [
            "--redis",
            &url,
            "--data-dir",
            &dir,
            "--latency",
            "20ms",
            "--json",
            "get",
            "sales_by_region",
            "quarter=Q1",
            "year=2026",
        ];
        let get = |name: &str| {
            let r = run_cli(data.path(), name, &args, Duration::from_secs(30));
            assert_eq!(
                r.code(),
                Some(EXIT_OK),
                "{name}: `freshcache get` with --redis {url} failed ({}): {}",
                r.status,
                r.err.trim()
            );
            r.json("get")
        };
        let first = get("up1");
        assert_eq!(first["source"], "warehouse", "{first}");
        let second = get("up2");
        assert_eq!(second["source"], "cache", "the second process reads Redis");

        server.shutdown_nosave();
        let began = Instant::now();
        let down = get("down");
        eprintln!(
            "get with Redis down: {} in {} ({})",
            down["source"],
            ms(began.elapsed()),
            down["freshness"]
        );
        assert_eq!(down["source"], "warehouse", "{down}");
        assert_eq!(down["freshness"], "fresh", "{down}");
        assert_eq!(down["value"], first["value"], "the same answer");
    });
}

#[test]
fn a_running_instance_reports_itself_degraded() {
    let _serial = serial();
    let Some(cache) = RedisServer::start("a_running_instance_reports_itself_degraded") else {
        return;
    };
    let Some(bus) = RedisServer::start("a_running_instance_reports_itself_degraded") else {
        return;
    };
    let data = TempDir::new("data");
    init_data(data.path());
    let dir = data.path().to_str().expect("a UTF-8 path").to_string();
    let bus_url = bus.url();
    let mut n = 0;
    let mut stats = || -> Value {
        n += 1;
        let r = run_cli(
            data.path(),
            &format!("stats{n}"),
            &["--redis", &bus_url, "--data-dir", &dir, "--json", "stats"],
            Duration::from_secs(30),
        );
        assert_eq!(r.code(), Some(EXIT_OK), "stats failed: {}", r.err);
        r.json("stats")
    };
    runtime().block_on(async {
        let wh = warehouse(Duration::from_millis(5));
        let node = Node::start_split(&cache, &bus, &wh, true, InstanceConfig::default()).await;
        let engine = node.engine().clone();
        let first = engine
            .get(&distinct_request(&engine, 0))
            .await
            .expect("a get");
        assert_eq!(first.source, Source::Warehouse);
        assert!(engine.degraded().is_none());
        // Runs `stats` every 100 ms until its document is `done`, for at most `limit`; gives the
        // document and how long that took.
        let mut stats_until = async |limit: Duration, done: fn(&Value) -> bool, never: &str| {
            let started = Instant::now();
            loop {
                let doc = blocking(&mut stats);
                if done(&doc) {
                    return (doc, started.elapsed());
                }
                assert!(started.elapsed() < limit, "{never}: {doc}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let (healthy, _) = stats_until(
            Duration::from_secs(10),
            |doc| doc["instances"] == 1,
            "stats never saw the instance",
        )
        .await;
        assert_eq!(healthy["degraded_instances"], 0, "{healthy}");

        blocking(|| cache.shutdown_nosave());
        let down = Instant::now();
        let mut i = 1;
        let mut answers = BTreeMap::new();
        while engine.degraded().is_none() {
            let answer = engine
                .get(&distinct_request(&engine, i))
                .await
                .expect("a get while the cache is down");
            assert!(answer.freshness.is_fresh());
            *answers.entry(answer.source.to_string()).or_insert(0) += 1;
            i += 1;
            assert!(
                down.elapsed() < Duration::from_secs(10),
                "{i} gets and the engine does not report itself degraded"
            );
        }
        let degraded_after = down.elapsed();
        let reason = engine.degraded().unwrap_or_default();
        let answer = engine
            .get(&distinct_request(&engine, i))
            .await
            .expect("a get while degraded");
        assert_eq!(answer.source, Source::Warehouse);
        assert!(answer.freshness.is_fresh());
        let report = serde_json::to_value(node.instance.report(Default::default()))
            .expect("the report as JSON");
        assert_eq!(report["degraded"], true, "{report}");
        let (seen, seen_after) = stats_until(
            Duration::from_secs(5),
            |doc| doc["degraded_instances"] == 1,
            "stats does not count the instance as degraded",
        )
        .await;
        eprintln!(
            "degraded: the cache server shut down; the engine said so after {} and {} gets \
             ({answers:?}): {reason:?}; stats --json saw degraded_instances={} after another {}",
            ms(degraded_after),
            i,
            seen["degraded_instances"],
            ms(seen_after)
        );
        assert!(
            reason.contains("unreachable") && reason.contains(&format!("127.0.0.1:{}", cache.port)),
            "{reason}"
        );
        node.instance.shutdown();
    });
}

/// Regression (issue 10): stale fallbacks come from the shared tier too. After an update whose
/// loads fail, an instance with no in-process tier, and a process started after the answer was
/// stored, both answer with the previous version from Redis, marked stale, instead of an error.
#[test]
fn the_shared_tier_supplies_stale_if_error() {
    with_redis(async |server| {
        let wh = warehouse(Duration::from_millis(5));
        let no_tier = Node::start(server, &wh, false, InstanceConfig::default()).await;
        let request = q1_2026(no_tier.engine());
        let first = no_tier.engine().get(&request).await.expect("a first load");
        let v0 = sales_version(&first);
        // The warehouse fails from before the update: no refresh-ahead can load the new version.
        wh.set_failing(true);
        no_tier
            .bus
            .bump(
                &[sales()],
                "stale-if-error",
                freshcache::bus::BumpMode::Force,
                false,
            )
            .await
            .expect("a bump");
        no_tier.instance.resync().await;
        assert_eq!(no_tier.engine().versions().version(sales()), v0 + 1);
        let newcomer = Node::start(server, &wh, true, InstanceConfig::default()).await;
        assert_eq!(newcomer.engine().versions().version(sales()), v0 + 1);
        for (who, node) in [
            ("no in-process tier", &no_tier),
            ("a new process", &newcomer),
        ] {
            let request = q1_2026(node.engine());
            let answer = node
                .engine()
                .get(&request)
                .await
                .unwrap_or_else(|e| panic!("{who}: no stale-if-error from Redis: {e}"));
            assert!(
                matches!(
                    answer.freshness,
                    freshcache::engine::Freshness::Stale {
                        reason: freshcache::engine::StaleReason::WarehouseError(_),
                        ..
                    }
                ),
                "{who}: {:?}",
                answer.freshness
            );
            assert_eq!(sales_version(&answer), v0, "{who}: the previous version");
            assert_eq!(answer.value(), first.value(), "{who}");
        }
        wh.set_failing(false);
    });
}
