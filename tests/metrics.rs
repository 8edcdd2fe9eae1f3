//! The metrics endpoint end to end: an embedded instance (in-memory bus, memory warehouse) serves
//! requests and receives a bump from a second instance on the same bus; a real HTTP client
//! scrapes `/metrics`, and a small parser written here, independently of the renderer, checks
//! the exposition format and that the counters say exactly what the test caused.

// Tests may unwrap, panic and cast freely: a failure is the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use freshcache::bus::LocalBus;
use freshcache::engine::Engine;
use freshcache::instance::{Instance, InstanceConfig};
use freshcache::metrics::{self, MetricsError};
use freshcache::model::catalog::{Catalog, Request};
use freshcache::model::clock::ManualClock;
use freshcache::warehouse::MemoryWarehouse;
use tokio::sync::watch;

/// 2026-11-26T10:00:30Z
const T1000: u64 = 1_795_687_230_000;

async fn instance(
    catalog: &Arc<Catalog>,
    bus: &LocalBus,
    clock: &Arc<ManualClock>,
    warehouse: Arc<MemoryWarehouse>,
) -> Instance {
    let engine = Engine::builder(catalog.clone(), warehouse.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let instance = Instance::new(
        engine,
        Arc::new(bus.clone()),
        warehouse,
        None,
        InstanceConfig::default(),
    );
    instance.start().await.unwrap();
    instance
}

// ---------------------------------------------------------------------------------------------
// A small parser of the text exposition format 0.0.4, strict about what the renderer promises.

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value {s:?}")),
    }
}

/// `name{a="x",b="y"} value`, label values unescaped.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line:?}"));
    let name = &line[..name_end];
    assert!(is_name(name), "bad metric name in {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inside) = rest.strip_prefix('{') {
        rest = inside;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("label without = in {line:?}"));
            assert!(is_name(label), "bad label name {label:?} in {line:?}");
            let quoted = after
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let close = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            };
            assert!(
                labels.insert(label.to_string(), value).is_none(),
                "label {label} twice in {line:?}"
            );
            rest = &quoted[close + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else {
                assert!(rest.starts_with('}'), "expected , or }} in {line:?}");
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value: {line:?}"));
    assert!(
        !value.contains(' '),
        "timestamp or junk after the value: {line:?}"
    );
    Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value),
    }
}

#[test]
fn the_parser_reads_escapes_and_refuses_garbage() {
    let s = parse_sample(r#"m{a="x\"y\\z\n",b="2"} 3.5"#);
    assert_eq!(s.name, "m");
    assert_eq!(s.labels["a"], "x\"y\\z\n");
    assert_eq!(s.labels["b"], "2");
    assert_eq!(s.value, 3.5);
    assert_eq!(parse_sample("m_total 7").value, 7.0);
    for bad in ["m{a=x} 1", "m{a=\"x} 1", "m 1 2", "m{a=\"x\"}1", "1m 1"] {
        assert!(
            std::panic::catch_unwind(|| parse_sample(bad)).is_err(),
            "{bad}"
        );
    }
}

/// Parses an exposition, checking: every line is a comment or a sample; every family has one
/// HELP and one TYPE before its samples; counters end in `_total`; no series appears twice;
/// histograms have monotonic buckets ending in `+Inf` equal to `_count`, and a `_sum`.
fn parse(text: &str) -> BTreeMap<String, Family> {
    assert!(text.ends_with('\n'), "the exposition ends with a line feed");
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default();
            let rest = parts.next().unwrap_or_default();
            match keyword {
                "HELP" => {
                    assert!(is_name(name), "{line:?}");
                    assert!(!rest.is_empty(), "empty HELP: {line:?}");
                    let f = families.entry(name.into()).or_default();
                    assert!(f.help.is_none(), "second HELP: {line:?}");
                    assert!(f.samples.is_empty(), "HELP after samples: {line:?}");
                    f.help = Some(rest.into());
                }
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest),
                        "{line:?}"
                    );
                    let f = families.entry(name.into()).or_default();
                    assert!(f.kind.is_none(), "second TYPE: {line:?}");
                    assert!(f.samples.is_empty(), "TYPE after samples: {line:?}");
                    f.kind = Some(rest.into());
                }
                _ => {}
            }
            continue;
        }
        assert!(!line.trim().is_empty(), "blank line in the exposition");
        let sample = parse_sample(line);
        let family = if families.contains_key(&sample.name) {
            sample.name.clone()
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| sample.name.strip_suffix(s))
                .filter(|base| {
                    families.get(*base).and_then(|f| f.kind.as_deref()) == Some("histogram")
                })
                .unwrap_or_else(|| panic!("sample of no declared family: {line:?}"))
                .to_string()
        };
        assert!(
            seen.insert((sample.name.clone(), sample.labels.clone())),
            "series twice: {line:?}"
        );
        families.get_mut(&family).unwrap().samples.push(sample);
    }
    for (name, f) in &families {
        assert!(f.help.is_some(), "{name} has no HELP");
        let kind = f
            .kind
            .as_deref()
            .unwrap_or_else(|| panic!("{name} has no TYPE"));
        assert!(!f.samples.is_empty(), "{name} has no samples");
        match kind {
            "counter" => {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
                assert!(f.samples.iter().all(|s| s.value >= 0.0), "{name}");
            }
            "histogram" => check_histogram(name, f),
            _ => {}
        }
    }
    families
}

fn check_histogram(name: &str, f: &Family) {
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    let mut sums = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for s in &f.samples {
        let mut key = s.labels.clone();
        if s.name == format!("{name}_bucket") {
            let le = key
                .remove("le")
                .unwrap_or_else(|| panic!("{name} bucket without le"));
            series
                .entry(key)
                .or_default()
                .push((parse_value(&le), s.value));
        } else if s.name == format!("{name}_sum") {
            sums.insert(key, s.value);
        } else if s.name == format!("{name}_count") {
            counts.insert(key, s.value);
        } else {
            panic!("{} in histogram {name}", s.name);
        }
    }
    assert!(!series.is_empty(), "{name} has no buckets");
    for (key, buckets) in &series {
        assert!(
            buckets.windows(2).all(|w| w[0].0 < w[1].0),
            "{name}: bounds not increasing: {buckets:?}"
        );
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}: buckets not cumulative: {buckets:?}"
        );
        let (last_le, last) = *buckets.last().unwrap();
        assert_eq!(last_le, f64::INFINITY, "{name}: no +Inf bucket");
        assert_eq!(Some(&last), counts.get(key), "{name}: +Inf != _count");
        let sum = sums.get(key).unwrap_or_else(|| panic!("{name}: no _sum"));
        assert!(*sum >= 0.0 && sum.is_finite(), "{name}: _sum {sum}");
    }
}

fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (family, f) = families
        .iter()
        .find(|(n, _)| name == n.as_str() || name.starts_with(&format!("{n}_")))
        .filter(|(_, f)| f.samples.iter().any(|s| s.name == name))
        .unwrap_or_else(|| panic!("no metric {name}"));
    let matching: Vec<&Sample> = f
        .samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{family}: {name}{labels:?} matches {matching:?}"
    );
    matching[0].value
}

// ---------------------------------------------------------------------------------------------
// HTTP, with a real client (and raw sockets for what a real client will not send).

struct Reply {
    status: u16,
    content_type: Option<String>,
    body: String,
}

async fn get(url: String) -> Reply {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let mut reply = agent.get(&url).call().unwrap();
        Reply {
            status: reply.status().as_u16(),
            content_type: reply
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string()),
            body: reply.body_mut().read_to_string().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// Sends `bytes` on a fresh connection and reads everything the server sends back.
async fn raw(addr: std::net::SocketAddr, bytes: Vec<u8>) -> String {
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_scrape_counts_exactly_what_happened() {
    let catalog = Arc::new(Catalog::bundled().unwrap());
    let tables = catalog.tables().clone();
    let clock = ManualClock::new(T1000);
    let bus = LocalBus::in_memory(tables.clone(), clock.clone()).unwrap();
    let warehouse = Arc::new(MemoryWarehouse::for_tables(&tables, Duration::ZERO));
    let a = instance(&catalog, &bus, &clock, warehouse.clone()).await;
    // Another API server on the same bus, with its own warehouse connection.
    let b = instance(
        &catalog,
        &bus,
        &clock,
        Arc::new(MemoryWarehouse::for_tables(&tables, Duration::ZERO)),
    )
    .await;
    let engine = a.engine().clone();
    let req = |q: &str| -> Request { engine.request::<&str, &str>(q, &[]).unwrap() };
    let (stock, segments, latest) = (
        req("stock_outs"),
        req("customers_by_segment"),
        req("latest_batch_sales"),
    );

    // 1 miss, then 3 fresh hits.
    engine.get(&stock).await.unwrap();
    for _ in 0..3 {
        engine.get(&stock).await.unwrap();
    }
    // 5 concurrent requests of one key during a slow load: 1 miss that loads, 4 coalesced.
    warehouse.set_latency(Duration::from_millis(300));
    let answers = futures_util::future::join_all((0..5).map(|_| engine.get(&segments))).await;
    assert!(answers.iter().all(Result::is_ok));
    warehouse.set_latency(Duration::ZERO);
    // A failing load: 1 miss, answered with an error.
    warehouse.fail_next(1);
    assert!(engine.get(&latest).await.is_err());

    // Another instance invalidates inventory; this one applies it from the feed (a lag sample)
    // and reloads its hot inventory keys (refresh-ahead).
    let inventory = tables.id("inventory").unwrap();
    b.invalidate(&[inventory]).await.unwrap();
    let mut progress = a.refresh_progress();
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.versions().version(inventory) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        progress
            .wait_for(|p| p.total > 0 && p.finished())
            .await
            .unwrap();
    })
    .await
    .expect("the bump reached the instance and its refresh-ahead finished");
    let refreshed = *progress.borrow();

    let listener = metrics::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(listener.serve(a.clone(), shutdown));

    // A client that connects and says nothing holds only its own connection.
    let silent = std::net::TcpStream::connect(addr).unwrap();

    let reply = get(format!("http://{addr}/metrics")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = parse(&reply.body);

    let requests = |outcome: &str| value(&m, "freshcache_requests_total", &[("outcome", outcome)]);
    assert_eq!(requests("fresh"), 3.0);
    assert_eq!(requests("miss"), 3.0);
    assert_eq!(requests("coalesced"), 4.0);
    assert_eq!(requests("stale"), 0.0);
    assert_eq!(value(&m, "freshcache_request_errors_total", &[]), 1.0);
    assert_eq!(value(&m, "freshcache_stale_answers_total", &[]), 0.0);

    // The warehouse's own count is the independent truth.
    let queries = value(&m, "freshcache_warehouse_queries_total", &[]);
    assert_eq!(queries, warehouse.queries() as f64);
    assert_eq!(queries, (3 + refreshed.done + refreshed.failed) as f64);
    assert_eq!(value(&m, "freshcache_warehouse_errors_total", &[]), 1.0);
    assert_eq!(
        value(&m, "freshcache_load_duration_seconds_count", &[]),
        queries
    );
    let slow = value(
        &m,
        "freshcache_load_duration_seconds_bucket",
        &[("le", "0.25")],
    );
    assert!(slow <= queries - 1.0, "the 300 ms load is not under 0.25 s");
    assert_eq!(
        value(&m, "freshcache_refresh_ahead_keys", &[("state", "done")]),
        f64::from(refreshed.done)
    );
    assert_eq!(
        value(&m, "freshcache_refresh_ahead_keys", &[("state", "total")]),
        f64::from(refreshed.total)
    );
    assert_eq!(
        value(&m, "freshcache_refreshes_total", &[("reason", "ahead")]),
        f64::from(refreshed.done + refreshed.failed)
    );

    // One bump applied from elsewhere, at once (the manual clock did not move).
    assert_eq!(
        value(&m, "freshcache_invalidation_lag_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "freshcache_invalidation_lag_seconds_bucket",
            &[("le", "0.001")]
        ),
        1.0
    );

    for t in tables.ids() {
        let name = tables.name(t);
        let expected = if t == inventory { 1.0 } else { 0.0 };
        assert_eq!(
            value(&m, "freshcache_table_version", &[("table", name)]),
            expected,
            "{name}"
        );
        let keys = engine.table_keys()[t.index()];
        for (generation, n) in [("current", keys.current), ("old", keys.old)] {
            assert_eq!(
                value(
                    &m,
                    "freshcache_keys",
                    &[
                        ("table", name),
                        ("generation", generation),
                        ("tier", "local")
                    ]
                ),
                n as f64,
                "{name} {generation}"
            );
        }
    }
    assert_eq!(
        value(
            &m,
            "freshcache_keys",
            &[
                ("table", "inventory"),
                ("generation", "old"),
                ("tier", "local")
            ]
        ),
        1.0,
        "the stock_outs answer of before the bump is still held"
    );
    assert!(
        !m["freshcache_keys"]
            .samples
            .iter()
            .any(|s| s.labels["tier"] == "shared"),
        "embedded: no shared tier"
    );
    assert_eq!(value(&m, "freshcache_breaker_open", &[]), 0.0);
    assert_eq!(value(&m, "freshcache_degraded", &[]), 0.0);
    assert_eq!(value(&m, "freshcache_bad_events_total", &[]), 0.0);
    let info = &m["freshcache_info"].samples[0];
    assert_eq!(info.value, 1.0);
    assert_eq!(info.labels["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info.labels["backend"], "embedded (in memory)");
    assert_eq!(info.labels["warehouse"], "memory");
    assert_eq!(info.labels["strategy"], "freshcache");

    // A malformed message is counted, and the next scrape shows it; counters never go down.
    let _ = a.ingest("warehouse_updated", b"{not json").await;
    let again = parse(&get(format!("http://{addr}/metrics")).await.body);
    assert_eq!(value(&again, "freshcache_bad_events_total", &[]), 1.0);
    for (name, f) in &m {
        if f.kind.as_deref() == Some("counter") {
            for s in &f.samples {
                let labels: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                assert!(
                    value(&again, &s.name, &labels) >= s.value,
                    "{name} went down"
                );
            }
        }
    }

    // The index page, unknown paths, methods and garbage.
    let index = get(format!("http://{addr}/")).await;
    assert_eq!(index.status, 200);
    assert!(index.body.contains("href=\"/metrics\""), "{}", index.body);
    assert_eq!(get(format!("http://{addr}/nope")).await.status, 404);
    let garbage = raw(addr, b"GARBAGE\r\n\r\n".to_vec()).await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    let post = raw(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("Allow: GET, HEAD"), "{post}");
    let head = raw(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body after HEAD: {head}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', metrics::MAX_HEAD + 100));
    let too_large = raw(addr, huge).await;
    assert!(too_large.starts_with("HTTP/1.1 431 "), "{too_large}");
    drop(silent);

    // Shutdown stops the server.
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops on shutdown")
        .unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn an_address_in_use_or_unparsable_is_an_error_not_a_panic() {
    let catalog = Arc::new(Catalog::bundled().unwrap());
    let clock = ManualClock::new(T1000);
    let bus = LocalBus::in_memory(catalog.tables().clone(), clock.clone()).unwrap();
    let warehouse = Arc::new(MemoryWarehouse::for_tables(
        catalog.tables(),
        Duration::ZERO,
    ));
    let a = instance(&catalog, &bus, &clock, warehouse).await;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (_stop, shutdown) = watch::channel(false);

    let e = metrics::serve(&addr, a.clone(), shutdown.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, MetricsError::Bind { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains(&addr), "names the address: {text}");
    assert!(text.to_lowercase().contains("in use"), "says why: {text}");

    let e = metrics::spawn(Some(&addr), &a, shutdown.clone()).unwrap_err();
    assert!(matches!(e, MetricsError::Bind { .. }), "{e}");
    let e = metrics::spawn(Some("localhost"), &a, shutdown.clone()).unwrap_err();
    assert!(matches!(e, MetricsError::BadAddress { .. }), "{e}");
    assert!(
        metrics::spawn(None, &a, shutdown.clone())
            .unwrap()
            .is_none()
    );

    // spawn binds before it returns: the port is taken by then.
    let (stop, shutdown) = watch::channel(false);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_addr = free.local_addr().unwrap().to_string();
    drop(free);
    let server = metrics::spawn(Some(&free_addr), &a, shutdown)
        .unwrap()
        .expect("an address was given");
    assert!(std::net::TcpListener::bind(&free_addr).is_err());
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    drop(taken);
    a.shutdown();
}
