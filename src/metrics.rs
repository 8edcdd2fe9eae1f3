//! Prometheus metrics of this process, and the small HTTP endpoint that serves them.
//!
//! [`render`] writes the text exposition format 0.0.4 from an [`Instance`]; [`spawn`] (or
//! [`serve`]) answers `GET /metrics` with it on a plain HTTP/1.1 responder over
//! `tokio::net::TcpListener`. Two paths and one method need no HTTP framework: each connection
//! carries one request and is closed after the answer.
//!
//! ```no_run
//! # async fn example(instance: freshcache::instance::Instance) -> Result<(), freshcache::metrics::MetricsError> {
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! // A bad address or a port in use is reported here, before anything runs.
//! let server = freshcache::metrics::spawn(Some("127.0.0.1:9464"), &instance, shutdown)?;
//! // ... serve requests ...
//! stop.send_replace(true);
//! if let Some(server) = server {
//!     let _ = server.await;
//! }
//! # Ok(()) }
//! ```
//!
//! What the numbers mean, and why they can be trusted:
//! * Everything is of *this* process; Prometheus sums across processes. The one exception is
//!   `freshcache_keys{tier="shared"}`: the shared store's keys, the same in every process (take the
//!   maximum across processes, not the sum).
//! * `freshcache_requests_total{outcome}` partitions requests, so its sum is every request, and
//!   each request is counted by how it was answered: `fresh` answered fresh from the cache,
//!   `stale` answered stale (at once: stale-while-revalidate, the previous version during an
//!   update; or after waiting: its load failed or was too slow), `miss` waited for a load it led,
//!   `coalesced` joined a load already in flight. So `outcome="stale"` equals
//!   `freshcache_stale_answers_total`. The engine counts a request's stages one after the other
//!   (a waiting request is a miss until it ends stale), so a scrape can catch one between two of
//!   them; [`Exporter`] keeps each outcome from going down between scrapes, which a counter must
//!   never do.
//! * Histograms are read from hdrhistogram (two significant figures). A recorded value counts
//!   under a bucket `le` only when the whole range it was recorded in lies at or below `le`, so no
//!   bucket claims an answer faster than it may have been; `_sum` adds each range's midpoint.
//!   Fresh hits are timed one in 16 and recorded with weight 16, so the request histogram's
//!   `_count` estimates the number of requests rather than counting them.
//! * `freshcache_invalidation_lag_seconds` is [`Instance::invalidation_lag`]: from a bump made
//!   elsewhere to this instance applying it.
//! * No label carries a secret: backends are shown by their secret-free `describe()`.
//!
//! The endpoint is bounded so that a slow or hostile client cannot hang or exhaust it: a request
//! head must arrive within [`READ_TIMEOUT`] and fit in [`MAX_HEAD`] bytes, an answer must be taken
//! within [`WRITE_TIMEOUT`], at most [`MAX_CONNECTIONS`] connections are served at once (more are
//! closed at once), and each runs in its own task.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::engine::stats::RequestOutcomes;
use crate::instance::Instance;
use crate::model::entry::TableKeys;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The largest request head (request line and headers) read, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a scrape waits for the shared store's key counts before leaving them out.
const SHARED_KEYS_TIMEOUT: Duration = Duration::from_secs(2);
/// After answering, how long unread request bytes are drained so that closing the socket does not
/// reset the connection under the client before it has read the answer.
const LINGER: Duration = Duration::from_millis(500);

/// Bucket bounds of the request and load durations, in µs: 0.1 ms … 10 s.
const DURATION_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Bucket bounds of the invalidation lag, in µs: 1 ms … 5 min (a lost message waits for the
/// next re-read of the truth, a poll interval; a partitioned instance longer).
const LAG_BOUNDS_US: &[u64] = &[
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not `HOST:PORT`, or its host does not resolve.
    #[error(
        "metrics address `{addr}`: {reason}; write HOST:PORT, e.g. 127.0.0.1:9464, [::1]:9464 or localhost:9464"
    )]
    BadAddress {
        /// The address given (escaped).
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address is fine but cannot be listened on (in use, not local, not permitted).
    #[error("cannot serve metrics on {addr}: {error}")]
    Bind {
        /// The address given (escaped).
        addr: String,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// Called outside a tokio runtime.
    #[error("the metrics endpoint must be started inside a tokio runtime")]
    NoRuntime,
}

/// What a scrape reads besides the instance's own synchronous state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsExtra {
    /// Requests by outcome, never lower than at the previous scrape (see [`Exporter`]).
    pub requests: RequestOutcomes,
    /// Live keys per table (in table order) in the shared store, when there is one and it
    /// answered in time.
    pub shared_keys: Option<Vec<TableKeys>>,
}

/// Scrapes one instance: gathers what [`render`] needs and keeps the derived request counters
/// monotonic from one scrape to the next.
#[derive(Debug)]
pub struct Exporter {
    instance: Instance,
    floor: Mutex<RequestOutcomes>,
}

impl Exporter {
    /// An exporter of `instance`.
    pub fn new(instance: Instance) -> Self {
        Self {
            instance,
            floor: Mutex::new(RequestOutcomes::default()),
        }
    }

    /// Reads the request outcomes and, with a shared store, its key counts (bounded by a
    /// timeout: a slow store leaves them out rather than stalling the scrape).
    pub async fn gather(&self) -> MetricsExtra {
        let engine = self.instance.engine();
        let now = RequestOutcomes::of(&engine.stats());
        let requests = {
            let mut floor = self.floor.lock().unwrap_or_else(|p| p.into_inner());
            *floor = now.at_least(*floor);
            *floor
        };
        let shared_keys = match engine.shared_store() {
            Some(store) => {
                let versions = engine.versions();
                match tokio::time::timeout(SHARED_KEYS_TIMEOUT, store.table_keys(&versions)).await {
                    Ok(Ok(keys)) => Some(keys),
                    _ => None,
                }
            }
            None => None,
        };
        MetricsExtra {
            requests,
            shared_keys,
        }
    }

    /// One scrape: the exposition text.
    pub async fn scrape(&self) -> String {
        let extra = self.gather().await;
        render(&self.instance, &extra)
    }
}

/// The metrics of `instance` in the Prometheus text exposition format 0.0.4:
///
/// * counters: `freshcache_requests_total{outcome}`, `freshcache_stale_answers_total`,
///   `freshcache_request_errors_total`, `freshcache_warehouse_queries_total`,
///   `freshcache_warehouse_errors_total`, `freshcache_refreshes_total{reason}`,
///   `freshcache_stampedes_absorbed_total`, `freshcache_evictions_total`,
///   `freshcache_bad_events_total`, `freshcache_lagged_events_total`, `freshcache_resyncs_total`,
///   `freshcache_sync_errors_total`, `freshcache_failed_bumps_total`,
///   `freshcache_task_restarts_total`, `freshcache_audit_checked_total`,
///   `freshcache_audit_violations_total`, `freshcache_corrupt_entries_total`,
///   `freshcache_lease_lost_total`;
/// * histograms (seconds): `freshcache_request_duration_seconds`,
///   `freshcache_load_duration_seconds`, `freshcache_invalidation_lag_seconds`;
/// * gauges: `freshcache_table_version{table}`, `freshcache_keys{table,generation,tier}`,
///   `freshcache_breaker_open`, `freshcache_degraded`, `freshcache_unverified`,
///   `freshcache_loads_in_flight`,
///   `freshcache_refresh_ahead_keys{state}`, `freshcache_info{version,backend,warehouse,strategy,env}`.
pub fn render(instance: &Instance, extra: &MetricsExtra) -> String {
    let engine = instance.engine();
    let stats = engine.stats();
    let counters = instance.counters();
    let tables = engine.catalog().tables();
    let versions = engine.versions();
    let mut x = Exposition::default();

    x.family(
        "freshcache_requests_total",
        Kind::Counter,
        "Requests by outcome; the outcomes add up to every request. fresh: answered fresh from \
         the cache; stale: answered stale, at once (stale-while-revalidate, previous version \
         during an update) or after its load failed or was too slow; miss: waited for a load it \
         led; coalesced: joined a load already in flight.",
    );
    let r = extra.requests;
    for (outcome, n) in [
        ("fresh", r.fresh),
        ("stale", r.stale),
        ("miss", r.miss),
        ("coalesced", r.coalesced),
    ] {
        x.sample(
            "freshcache_requests_total",
            &[("outcome", outcome)],
            Value::Int(n),
        );
    }
    x.counter(
        "freshcache_stale_answers_total",
        "Answers served stale, including those given after a failed or slow load.",
        stats.stale_served,
    );
    x.counter(
        "freshcache_lease_lost_total",
        "Loads whose answer was not written to the shared store because another process had \
         taken their lease over (its answer wins).",
        stats.lease_lost,
    );
    x.counter(
        "freshcache_corrupt_entries_total",
        "Entries read from the shared store that failed validation (unreadable, a stamp that \
         does not match their key, a value that is not JSON); each was treated as a miss.",
        engine.shared_store().map_or(0, |s| s.corrupt_entries()),
    );
    x.counter(
        "freshcache_request_errors_total",
        "Requests answered with an error (warehouse failed or too slow, nothing servable).",
        stats.errors,
    );
    x.counter(
        "freshcache_warehouse_queries_total",
        "Warehouse queries started, for users and in the background.",
        stats.loads,
    );
    x.counter(
        "freshcache_warehouse_errors_total",
        "Warehouse queries that failed (errors, panics, aborts).",
        stats.load_errors,
    );
    x.family(
        "freshcache_refreshes_total",
        Kind::Counter,
        "Background reloads started. early: XFetch early refresh; swr: \
         stale-while-revalidate; ahead: refresh-ahead after an update, warm, serve-previous.",
    );
    for (reason, n) in [
        ("early", stats.early_refreshes),
        ("swr", stats.swr_refreshes),
        ("ahead", stats.refresh_ahead),
    ] {
        x.sample(
            "freshcache_refreshes_total",
            &[("reason", reason)],
            Value::Int(n),
        );
    }
    x.counter(
        "freshcache_stampedes_absorbed_total",
        "Loads that had at least the stampede threshold of requests waiting on them.",
        stats.stampedes_absorbed,
    );
    x.counter(
        "freshcache_evictions_total",
        "Entries evicted from the in-process tier to respect its bounds.",
        stats.evictions,
    );
    x.counter(
        "freshcache_bad_events_total",
        "Malformed warehouse_updated messages received (counted, logged, ignored).",
        counters.bad_events,
    );
    x.counter(
        "freshcache_lagged_events_total",
        "Feed events this instance missed (it re-read the version truth instead).",
        counters.lagged_events,
    );
    x.counter(
        "freshcache_resyncs_total",
        "Re-reads of the version truth that raised a version (a message was lost or late).",
        counters.resyncs,
    );
    x.counter(
        "freshcache_sync_errors_total",
        "Failed attempts to reach the bus.",
        counters.sync_errors,
    );
    x.counter(
        "freshcache_audit_checked_total",
        "Fresh answers the live consistency audit checked against the truth and update_log.",
        counters.audit_checked,
    );
    x.counter(
        "freshcache_audit_violations_total",
        "Of those, answers found served as fresh behind the truth (each an incident in the feed).",
        counters.audit_violations,
    );
    x.counter(
        "freshcache_task_restarts_total",
        "Background tasks (sync, report) restarted after a panic.",
        counters.task_restarts,
    );
    x.counter(
        "freshcache_failed_bumps_total",
        "Bumps that failed (bus unreachable): each is reported; a foreign message's is retried.",
        counters.failed_bumps,
    );

    let (user, load) = engine.latency_histograms();
    x.histogram(
        "freshcache_request_duration_seconds",
        "Time to answer a request. Fresh hits are timed 1 in 16 with weight 16, so _count \
         estimates requests.",
        &Buckets::of(&user, DURATION_BOUNDS_US),
    );
    x.histogram(
        "freshcache_load_duration_seconds",
        "Time a warehouse query took.",
        &Buckets::of(&load, DURATION_BOUNDS_US),
    );
    x.histogram(
        "freshcache_invalidation_lag_seconds",
        "Time from a bump made elsewhere (its event, or the truth's update time when a re-read \
         found it) to this instance applying it.",
        &Buckets::of(&instance.invalidation_lag(), LAG_BOUNDS_US),
    );

    x.family(
        "freshcache_table_version",
        Kind::Gauge,
        "The version of each table this instance serves (only ever goes up).",
    );
    for t in tables.ids() {
        x.sample(
            "freshcache_table_version",
            &[("table", tables.name(t))],
            Value::Int(versions.version(t)),
        );
    }
    x.family(
        "freshcache_keys",
        Kind::Gauge,
        "Live cache entries per table, at its current or an old version. tier=local: this \
         process's in-memory tier; tier=shared: the shared store, the same in every process \
         (aggregate with max, not sum).",
    );
    let local = engine.table_keys();
    let tiers = [
        ("local", Some(&local)),
        ("shared", extra.shared_keys.as_ref()),
    ];
    for (tier, keys) in tiers {
        let Some(keys) = keys else { continue };
        for t in tables.ids() {
            let k = keys.get(t.index()).copied().unwrap_or_default();
            for (generation, n) in [("current", k.current), ("old", k.old)] {
                x.sample(
                    "freshcache_keys",
                    &[
                        ("table", tables.name(t)),
                        ("generation", generation),
                        ("tier", tier),
                    ],
                    Value::Int(n),
                );
            }
        }
    }
    let degraded = engine.degraded().is_some();
    x.gauge(
        "freshcache_breaker_open",
        "1 while the shared store's circuit breaker refuses calls (open or probing), else 0 (also \
         when embedded).",
        engine
            .shared_store()
            .is_some_and(|s| s.degraded().is_some()) as u64,
    );
    x.gauge(
        "freshcache_degraded",
        "1 while requests are answered without the shared store (unreachable), else 0.",
        degraded as u64,
    );
    x.gauge(
        "freshcache_unverified",
        "1 while this instance has not confirmed the version truth for longer than its \
         max-unverified bound (its cached answers are served as stale), else 0.",
        engine.unverified_since().is_some() as u64,
    );
    x.gauge(
        "freshcache_loads_in_flight",
        "Warehouse loads running now.",
        engine.loads_in_flight() as u64,
    );
    x.family(
        "freshcache_refresh_ahead_keys",
        Kind::Gauge,
        "Keys of the latest refresh-ahead or warm: total scheduled, done, failed, skipped \
         (already fresh or loading).",
    );
    let p = *instance.refresh_progress().borrow();
    for (state, n) in [
        ("total", p.total),
        ("done", p.done),
        ("failed", p.failed),
        ("skipped", p.skipped),
    ] {
        x.sample(
            "freshcache_refresh_ahead_keys",
            &[("state", state)],
            Value::Int(u64::from(n)),
        );
    }
    x.family(
        "freshcache_info",
        Kind::Gauge,
        "Always 1; labels say what this process runs (backends without secrets).",
    );
    let strategy = engine.strategy();
    let env = instance.config().env.to_string();
    let backend = instance.bus().describe();
    let warehouse = instance.warehouse().describe();
    x.sample(
        "freshcache_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("backend", &backend),
            ("warehouse", &warehouse),
            ("strategy", strategy.name()),
            ("env", &env),
        ],
        Value::Int(1),
    );
    x.out
}

/// A metric type in the exposition format.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// The text being written. Writing to a `String` cannot fail, so `write!` results are dropped.
#[derive(Debug, Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family; its samples follow.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = match value {
            Value::Int(n) => writeln!(self.out, " {n}"),
            Value::Float(f) => writeln!(self.out, " {}", format_float(f)),
        };
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], Value::Int(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], Value::Int(value));
    }

    fn histogram(&mut self, name: &str, help: &str, b: &Buckets) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (&bound, &n) in b.bounds_us.iter().zip(&b.cumulative) {
            let le = format_seconds(bound);
            self.sample(&bucket, &[("le", &le)], Value::Int(n));
        }
        self.sample(&bucket, &[("le", "+Inf")], Value::Int(b.count));
        self.sample(&format!("{name}_sum"), &[], Value::Float(b.sum_seconds));
        self.sample(&format!("{name}_count"), &[], Value::Int(b.count));
    }
}

/// A histogram in Prometheus' shape: cumulative counts at fixed upper bounds.
#[derive(Debug, Clone, PartialEq)]
struct Buckets {
    bounds_us: &'static [u64],
    /// Values at or below each bound, in bound order (non-decreasing).
    cumulative: Vec<u64>,
    /// Every value (the `+Inf` bucket).
    count: u64,
    sum_seconds: f64,
}

impl Buckets {
    /// Reads an hdr histogram of microseconds into `bounds_us`. A value counts under a bound
    /// only when the highest value of the range it was recorded in is at or below the bound.
    fn of(h: &Histogram<u64>, bounds_us: &'static [u64]) -> Self {
        let mut per_bound = vec![0u64; bounds_us.len()];
        let mut count = 0u64;
        let mut sum_us = 0f64;
        for v in h.iter_recorded() {
            let n = v.count_since_last_iteration();
            let value = v.value_iterated_to();
            let highest = h.highest_equivalent(value);
            if let Some(i) = bounds_us.iter().position(|&b| highest <= b) {
                per_bound[i] += n;
            }
            count += n;
            sum_us += n as f64 * h.median_equivalent(value) as f64;
        }
        let cumulative = per_bound
            .iter()
            .scan(0u64, |acc, n| {
                *acc += n;
                Some(*acc)
            })
            .collect();
        Self {
            bounds_us,
            cumulative,
            count,
            sum_seconds: sum_us / 1e6,
        }
    }
}

/// Microseconds as decimal seconds, exactly: 100 → `0.0001`, 2_500_000 → `2.5`.
fn format_seconds(us: u64) -> String {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A float as the format writes it (`+Inf`, `-Inf`, `NaN` spelled its way).
fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        f.to_string()
    }
}

/// A label value with `\`, `"` and line feeds escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text with `\` and line feeds escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A bound listener, not serving yet: [`MetricsListener::local_addr`] tells the port when `:0`
/// was asked for.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Resolves `addr` (`HOST:PORT`) and binds it, inside a tokio runtime with I/O enabled (as
/// `#[tokio::main]` makes). Binding is synchronous, so a port in use is reported here.
pub fn bind(addr: &str) -> Result<MetricsListener, MetricsError> {
    let shown = addr.escape_default().to_string();
    let bad = |reason: String| MetricsError::BadAddress {
        addr: shown.clone(),
        reason,
    };
    if addr.is_empty() || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty, or holds spaces or control characters".into()));
    }
    if let Some((host, _)) = addr.rsplit_once(':')
        && host.contains(':')
        && !(host.starts_with('[') && host.ends_with(']'))
    {
        return Err(bad("an IPv6 address needs brackets".into()));
    }
    let candidates: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .collect();
    if candidates.is_empty() {
        return Err(bad("the host resolves to no address".into()));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(MetricsError::NoRuntime);
    }
    let failed = |error| MetricsError::Bind {
        addr: shown.clone(),
        error,
    };
    // Tries each address in turn (`localhost` may be ::1 and 127.0.0.1).
    let std_listener = std::net::TcpListener::bind(&candidates[..]).map_err(failed)?;
    std_listener.set_nonblocking(true).map_err(failed)?;
    let listener = TcpListener::from_std(std_listener).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok(MetricsListener {
        listener,
        addr: local,
    })
}

impl MetricsListener {
    /// The address bound (with the actual port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `GET /metrics` of `instance` until `shutdown` turns true (or its sender is
    /// dropped); connections still open then are closed.
    pub async fn serve(self, instance: Instance, mut shutdown: watch::Receiver<bool>) {
        let exporter = Arc::new(Exporter::new(instance));
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if connections.len() >= MAX_CONNECTIONS {
                            // Full: closing at once costs nothing; the scraper retries.
                            drop(stream);
                            continue;
                        }
                        let exporter = exporter.clone();
                        connections.spawn(async move { answer(stream, &exporter).await });
                    }
                    // Out of file descriptors and the like: back off rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        connections.shutdown().await;
    }
}

/// Binds `addr` and serves the metrics of `instance` until `shutdown` turns true.
pub async fn serve(
    addr: &str,
    instance: Instance,
    shutdown: watch::Receiver<bool>,
) -> Result<(), MetricsError> {
    bind(addr)?.serve(instance, shutdown).await;
    Ok(())
}

/// Starts serving the metrics of `instance` on `addr` in the background, when an address is
/// given. The address is bound before this returns, so a bad address or a port in use is the
/// caller's error to report, not a background task's.
pub fn spawn(
    addr: Option<&str>,
    instance: &Instance,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, MetricsError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = bind(addr)?;
    let instance = instance.clone();
    Ok(Some(tokio::spawn(listener.serve(instance, shutdown))))
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Index,
    NotFound,
    MethodNotAllowed,
    Malformed,
}

/// Routes a request head (request line and headers, without the blank line); also says whether
/// the method was `HEAD` (no body in the answer).
fn route(head: &[u8]) -> (Route, bool) {
    let Ok(text) = std::str::from_utf8(head) else {
        return (Route::Malformed, false);
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (Route::Malformed, false);
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let headers_ok =
        lines.all(|l| l.is_empty() || l.split_once(':').is_some_and(|(n, _)| token(n)));
    if !token(method)
        || !(version == "HTTP/1.1" || version == "HTTP/1.0")
        || !target.starts_with('/')
        || !target.bytes().all(|b| b.is_ascii_graphic())
        || !headers_ok
    {
        return (Route::Malformed, false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (Route::MethodNotAllowed, false);
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let route = match path {
        "/metrics" => Route::Metrics,
        "/" => Route::Index,
        _ => Route::NotFound,
    };
    (route, head_only)
}

/// Why no request head was read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client closed (or the socket failed) before sending anything.
    Gone,
    /// The client closed part-way through the head.
    Truncated,
    /// The head is longer than [`MAX_HEAD`].
    TooLarge,
}

/// Where the head ends (after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads a request head of at most [`MAX_HEAD`] bytes (the caller bounds the time).
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) if buf.is_empty() => return Err(HeadError::Gone),
            Ok(0) | Err(_) => return Err(HeadError::Truncated),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An answer to send.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Reply {
    fn text(status: &'static str, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            head_only: false,
        }
    }
}

const INDEX_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>freshcache metrics</title></head>\
<body><h1>freshcache</h1><p>Prometheus metrics of this process: <a href=\"/metrics\">/metrics</a></p>\
</body></html>\n";

/// Reads one request from `stream`, answers it and closes the connection.
async fn answer(mut stream: TcpStream, exporter: &Exporter) {
    let reply = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Reply::text("408 Request Timeout", "request head not received in time"),
        Ok(Err(HeadError::Gone)) => return,
        Ok(Err(HeadError::Truncated)) => Reply::text("400 Bad Request", "incomplete request"),
        Ok(Err(HeadError::TooLarge)) => Reply::text(
            "431 Request Header Fields Too Large",
            "request head too large",
        ),
        Ok(Ok(head)) => {
            let (route, head_only) = route(&head);
            let mut reply = match route {
                Route::Metrics => Reply {
                    status: "200 OK",
                    content_type: CONTENT_TYPE,
                    body: exporter.scrape().await,
                    head_only: false,
                },
                Route::Index => Reply {
                    status: "200 OK",
                    content_type: "text/html; charset=utf-8",
                    body: INDEX_PAGE.to_string(),
                    head_only: false,
                },
                Route::NotFound => {
                    Reply::text("404 Not Found", "not found; metrics are at /metrics")
                }
                Route::MethodNotAllowed => {
                    Reply::text("405 Method Not Allowed", "only GET and HEAD are served")
                }
                Route::Malformed => Reply::text("400 Bad Request", "malformed request"),
            };
            reply.head_only = head_only;
            reply
        }
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, send(&mut stream, &reply)).await;
}

/// Writes `reply`, closes the sending side, and drains (briefly, boundedly) what the client
/// still sends, so the close does not reset the connection before the client read the answer.
async fn send(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if reply.status.starts_with("405") {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !reply.head_only {
        stream.write_all(reply.body.as_bytes()).await?;
    }
    stream.shutdown().await?;
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::stats::StatsSnapshot;

    fn histogram_of(values_us: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = crate::engine::stats::histogram();
        for &(v, n) in values_us {
            h.record_n(v, n).unwrap();
        }
        h
    }

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("plain sales"), "plain sales");
        let mut x = Exposition::default();
        x.family("m", Kind::Gauge, "help with \\ and\nnewline");
        x.sample("m", &[("table", "we\"ird\\\n"), ("b", "2")], Value::Int(7));
        assert_eq!(
            x.out,
            "# HELP m help with \\\\ and\\nnewline\n# TYPE m gauge\nm{table=\"we\\\"ird\\\\\\n\",b=\"2\"} 7\n"
        );
    }

    #[test]
    fn bounds_print_as_exact_decimal_seconds() {
        let printed: Vec<String> = [100, 250, 1_000, 250_000, 1_000_000, 2_500_000, 300_000_000]
            .iter()
            .map(|&us| format_seconds(us))
            .collect();
        assert_eq!(
            printed,
            ["0.0001", "0.00025", "0.001", "0.25", "1", "2.5", "300"]
        );
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(0.5), "0.5");
    }

    #[test]
    fn buckets_are_cumulative_and_end_with_every_value() {
        // 3 × 50 µs, 2 × 1.5 ms, 1 × 3 s, 1 × 20 s (beyond the last bound).
        let h = histogram_of(&[(50, 3), (1_500, 2), (3_000_000, 1), (20_000_000, 1)]);
        let b = Buckets::of(&h, DURATION_BOUNDS_US);
        assert_eq!(b.count, 7);
        assert_eq!(b.cumulative.len(), DURATION_BOUNDS_US.len());
        assert!(b.cumulative.windows(2).all(|w| w[0] <= w[1]), "{b:?}");
        let at = |us: u64| {
            let i = DURATION_BOUNDS_US.iter().position(|&x| x == us).unwrap();
            b.cumulative[i]
        };
        assert_eq!(at(100), 3);
        assert_eq!(at(1_000), 3);
        assert_eq!(at(2_500), 5);
        assert_eq!(at(2_500_000), 5);
        assert_eq!(at(5_000_000), 6);
        assert_eq!(at(10_000_000), 6, "20 s is only in +Inf");
        let sum = 3.0 * 50e-6 + 2.0 * 1.5e-3 + 3.0 + 20.0;
        assert!(
            (b.sum_seconds - sum).abs() / sum < 0.01,
            "{}",
            b.sum_seconds
        );

        let mut x = Exposition::default();
        x.histogram("h_seconds", "h", &b);
        let lines: Vec<&str> = x.out.lines().collect();
        assert_eq!(lines[0], "# HELP h_seconds h");
        assert_eq!(lines[1], "# TYPE h_seconds histogram");
        assert_eq!(lines[2], "h_seconds_bucket{le=\"0.0001\"} 3");
        let n = lines.len();
        assert_eq!(lines[n - 3], "h_seconds_bucket{le=\"+Inf\"} 7");
        let printed_sum: f64 = lines[n - 2]
            .strip_prefix("h_seconds_sum ")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(printed_sum, b.sum_seconds);
        assert_eq!(lines[n - 1], "h_seconds_count 7");
    }

    #[test]
    fn a_value_counts_below_a_bound_only_when_its_whole_range_does() {
        // hdr keeps 2 significant figures: 1000 µs is recorded in a range reaching past 1000,
        // so it may have been slower than 1 ms and is not claimed under le=0.001.
        let h = histogram_of(&[(1_000, 1)]);
        assert!(h.highest_equivalent(1_000) > 1_000);
        let b = Buckets::of(&h, DURATION_BOUNDS_US);
        assert_eq!(b.cumulative[2], 0, "le=0.0005");
        assert_eq!(b.cumulative[3], 0, "le=0.001");
        assert_eq!(b.cumulative[4], 1, "le=0.0025");
        let empty = Buckets::of(&crate::engine::stats::histogram(), LAG_BOUNDS_US);
        assert_eq!(empty.count, 0);
        assert!(empty.cumulative.iter().all(|&n| n == 0));
    }

    #[test]
    fn request_outcomes_partition_every_request_and_never_go_down() {
        let s = StatsSnapshot {
            requests: 100,
            fresh_hits: 80,
            misses: 15,
            coalesced: 9,
            stale_served: 7, // 5 at once, 2 after a failed load (one of them coalesced)
            waited_stale: 2,
            coalesced_stale: 1,
            ..StatsSnapshot::default()
        };
        let r = RequestOutcomes::of(&s);
        assert_eq!(
            r,
            RequestOutcomes {
                fresh: 80,
                stale: 7,
                miss: 5,
                coalesced: 8
            }
        );
        assert_eq!(r.stale, s.stale_served);
        assert_eq!(r.fresh + r.stale + r.miss + r.coalesced, s.requests);
        // A snapshot caught between two counts of one request shows a stale answer that is
        // really a miss on its way: the floor keeps the next scrape from going down.
        let caught = RequestOutcomes { stale: 8, ..r };
        assert_eq!(r.at_least(caught).stale, 8);
        assert_eq!(r.at_least(caught).miss, 5);
    }

    #[test]
    fn requests_route_by_method_and_path() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(
            r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            (Route::Metrics, false)
        );
        assert_eq!(r("GET /metrics?x=1 HTTP/1.0\n\n"), (Route::Metrics, false));
        assert_eq!(r("HEAD /metrics HTTP/1.1\r\n\r\n"), (Route::Metrics, true));
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), (Route::Index, false));
        assert_eq!(r("GET /nope HTTP/1.1\r\n\r\n"), (Route::NotFound, false));
        assert_eq!(
            r("POST /metrics HTTP/1.1\r\n\r\n"),
            (Route::MethodNotAllowed, false)
        );
        for garbage in [
            "GARBAGE\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            "GET /m\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(r(garbage).0, Route::Malformed, "{garbage:?}");
        }
        assert_eq!(route(b"GET /\xff HTTP/1.1\r\n\r\n").0, Route::Malformed);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\n"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[tokio::test]
    async fn addresses_must_be_host_and_port() {
        for ok in ["127.0.0.1:0", "[::1]:0", "localhost:0"] {
            match bind(ok) {
                Ok(l) => assert!(l.local_addr().ip().is_loopback(), "{ok}"),
                // A machine without IPv6 cannot bind ::1; the address itself was accepted.
                Err(MetricsError::Bind { .. }) if ok.starts_with('[') => {}
                Err(e) => panic!("{ok}: {e}"),
            }
        }
        for bad in [
            "",
            "9464",
            "127.0.0.1",
            "http://127.0.0.1:9464",
            "127.0.0.1:99999",
            " 127.0.0.1:9464",
            "::1:9464",
        ] {
            let e = bind(bad).unwrap_err();
            assert!(matches!(e, MetricsError::BadAddress { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn binding_outside_a_runtime_is_an_error() {
        assert!(matches!(bind("127.0.0.1:0"), Err(MetricsError::NoRuntime)));
    }
}
