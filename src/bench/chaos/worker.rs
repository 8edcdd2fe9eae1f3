//! One instance of a chaos run: a normal [`Instance`] on Redis — an API server — answering a
//! bounded stream of requests for a few hot catalog questions, and writing down every answer,
//! every warehouse load (with the versions the engine loads at) and, every
//! [`REPORT_EVERY`], its own version vector, as JSON lines in its record file.
//!
//! It runs as its own process (`freshcache bench chaos-worker`, started by `bench chaos`), so a
//! panic or a hang is the process's alone, as in production. The checker process builds its ETL
//! driver with the same [`build`], so its loads are recorded too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use clap::Args;

use super::record::{AnswerRecord, Line, LoadRecord, Outcome, ReportRecord, WallMs};
use crate::engine::Engine;
use crate::instance::{Instance, InstanceConfig};
use crate::model::BoxFuture;
use crate::model::catalog::{Catalog, Request};
use crate::model::clock::{SystemClock, system_now_ms};
use crate::redis::Redis;
use crate::redis::RedisLink;
use crate::warehouse::{Rows, UpdateLogEntry, Warehouse, WarehouseError};

/// How often an instance writes down its versions.
pub const REPORT_EVERY: Duration = Duration::from_millis(50);
/// The questions asked, as (query, parameters); the rest of each query's parameters default.
pub const HOT: &[(&str, &[(&str, &str)])] = &[
    ("sales_by_region", &[("quarter", "Q1"), ("year", "2026")]),
    ("sales_by_region", &[("quarter", "Q2"), ("year", "2026")]),
    ("stock_outs", &[]),
    ("low_stock", &[("location", "Rotterdam")]),
    ("top_customers", &[("year", "2026")]),
    ("customers_by_segment", &[("region", "Europe")]),
    ("stock_vs_demand", &[]),
    ("quarterly_trend", &[("year", "2026")]),
];

/// Options of the hidden `bench chaos-worker` (Redis, warehouse, latency and lease come from the
/// settings `--redis`, `--warehouse`, `--latency` and `--lease`).
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// This instance's number.
    #[arg(long)]
    pub instance: u32,
    /// The record file (JSON lines).
    #[arg(long)]
    pub out: PathBuf,
    /// Wall-clock instant (ms since the epoch) after which no request starts.
    #[arg(long)]
    pub until_ms: u64,
    /// Seed of the request stream.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 3)]
    pub concurrency: u32,
    /// A file the checker writes a wall-clock instant (ms) into: warehouse loads that start
    /// before it hang until then.
    #[arg(long)]
    pub hang_file: Option<PathBuf>,
}

/// Appends record lines to a file.
#[derive(Clone)]
pub struct Recorder {
    file: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl Recorder {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self {
            file: Arc::new(Mutex::new(std::io::BufWriter::new(file))),
        })
    }

    /// Writes one line. A record that cannot be written is lost and logged: the run goes on (the
    /// checker counts what it has).
    pub fn write(&self, line: &Line) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        let mut f = self.file.lock();
        if let Err(e) = f.write_all(text.as_bytes()) {
            tracing::warn!("chaos record lost: {e}");
        }
    }

    /// Flushes what is buffered.
    pub fn flush(&self) {
        let mut f = self.file.lock();
        if let Err(e) = f.flush() {
            tracing::warn!("chaos records not flushed: {e}");
        }
    }
}

/// Versions the engine announced for loads about to start, per request fingerprint: the engine
/// calls its load observer and then, synchronously, [`Warehouse::run`], which takes them.
type Pending = Arc<Mutex<HashMap<u128, VecDeque<BTreeMap<String, u64>>>>>;

/// A warehouse that records each query (and can be made to hang by the checker).
struct RecordingWarehouse {
    inner: Arc<dyn Warehouse>,
    instance: u32,
    recorder: Recorder,
    pending: Pending,
    hang_file: Option<PathBuf>,
}

impl RecordingWarehouse {
    /// Hangs until the instant in the hang file, if it is still to come.
    async fn hang_if_asked(&self) {
        let Some(path) = &self.hang_file else {
            return;
        };
        let until = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let now = system_now_ms();
        if until > now {
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
    }
}

fn params_of(request: &Request) -> Vec<(String, String)> {
    request
        .params()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Warehouse for RecordingWarehouse {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn run<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Rows, WarehouseError>> {
        let versions = self
            .pending
            .lock()
            .get_mut(&request.fingerprint())
            .and_then(VecDeque::pop_front)
            .unwrap_or_default();
        Box::pin(async move {
            let start_ms = system_now_ms();
            self.hang_if_asked().await;
            let result = self.inner.run(request).await;
            self.recorder.write(&Line::Load(LoadRecord {
                instance: self.instance,
                query: request.query().name.clone(),
                params: params_of(request),
                versions,
                start_ms,
                end_ms: system_now_ms(),
                ok: result.is_ok(),
            }));
            result
        })
    }

    fn update_log(&self) -> BoxFuture<'_, Result<Vec<UpdateLogEntry>, WarehouseError>> {
        self.inner.update_log()
    }
}

/// What [`build`] needs.
pub struct Setup<'a> {
    /// This instance's number.
    pub instance: u32,
    /// Redis URL (through the proxy for instance 0).
    pub redis: &'a str,
    /// The warehouse it loads from.
    pub warehouse: Arc<dyn Warehouse>,
    /// Where the ETL loads, for the checker's driver.
    pub etl: Option<Arc<dyn crate::warehouse::EtlTarget>>,
    /// Lease on the shared tier.
    pub lease: Duration,
    /// Where its records go.
    pub recorder: Recorder,
    /// The hang file.
    pub hang_file: Option<PathBuf>,
}

/// Builds and starts an instance on Redis whose loads are recorded.
pub async fn build(s: Setup<'_>) -> anyhow::Result<Instance> {
    let catalog = Arc::new(Catalog::bundled()?);
    let tables = catalog.tables().clone();
    let link = Arc::new(RedisLink::open(
        s.redis,
        Duration::from_secs(1),
        Duration::from_millis(300),
    )?);
    let Redis { store, bus } = Redis::open(link, tables.clone(), Arc::new(SystemClock));
    let pending: Pending = Arc::default();
    let warehouse: Arc<dyn Warehouse> = Arc::new(RecordingWarehouse {
        inner: s.warehouse,
        instance: s.instance,
        recorder: s.recorder,
        pending: pending.clone(),
        hang_file: s.hang_file,
    });
    let names = tables.clone();
    let engine = Engine::builder(catalog, warehouse.clone())
        .lease(s.lease)
        .shared(Arc::new(store))
        .on_load(Arc::new(move |request, stamp| {
            let versions = stamp
                .iter()
                .map(|(t, v)| (names.name(t).to_string(), v))
                .collect();
            pending
                .lock()
                .entry(request.fingerprint())
                .or_default()
                .push_back(versions);
        }))
        .build()?;
    let instance = Instance::new(
        engine,
        Arc::new(bus),
        warehouse,
        s.etl,
        InstanceConfig {
            // The bounds the checker judges by.
            poll_interval: super::RESYNC_BOUND - Duration::from_millis(100),
            max_unverified: super::MAX_UNVERIFIED,
            ..InstanceConfig::default()
        },
    );
    instance.start().await?;
    Ok(instance)
}

/// The hot requests.
pub fn hot_requests(catalog: &Catalog) -> anyhow::Result<Vec<Request>> {
    HOT.iter()
        .map(|(q, p)| Ok(catalog.request(q, p)?))
        .collect()
}

/// Writes the instance's versions every [`REPORT_EVERY`] until `stop`; flushes the records.
pub fn spawn_reports(
    instance: &Instance,
    id: u32,
    lease: Duration,
    recorder: Recorder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let engine = instance.engine().clone();
    tokio::spawn(async move {
        let tables = engine.catalog().tables().clone();
        let mut tick = tokio::time::interval(REPORT_EVERY);
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            recorder.write(&Line::Report(ReportRecord {
                instance: id,
                t_ms: system_now_ms(),
                versions: crate::bus::versions_by_name(&engine.versions(), &tables),
                degraded: engine.degraded().is_some(),
                lease_ms: crate::model::num::ms(lease),
            }));
            n += 1;
            if n % 10 == 0 {
                recorder.flush();
            }
        }
        recorder.flush();
    })
}

/// One request, recorded.
pub async fn ask(engine: &Engine, id: u32, request: &Request, recorder: &Recorder) {
    let tables = engine.catalog().tables();
    let start_ms = system_now_ms();
    let limit = request.query().policy.max_wait + Duration::from_secs(1);
    let outcome = match tokio::time::timeout(limit, engine.get(request)).await {
        Err(_) => Outcome::Unanswered,
        Ok(Err(e)) => Outcome::Error {
            message: e.to_string(),
        },
        Ok(Ok(a)) => {
            let versions: BTreeMap<String, u64> = a
                .versions()
                .iter()
                .map(|(t, v)| (tables.name(t).to_string(), v))
                .collect();
            let batches = batches_of(a.value(), &versions);
            Outcome::Value {
                fresh: a.freshness.is_fresh(),
                stale_reason: match &a.freshness {
                    crate::engine::Freshness::Fresh => None,
                    crate::engine::Freshness::Stale { reason, .. } => Some(reason.to_string()),
                },
                source: a.source.to_string(),
                versions,
                batches,
            }
        }
    };
    recorder.write(&Line::Answer(AnswerRecord {
        instance: id,
        query: request.query().name.clone(),
        params: params_of(request),
        start_ms,
        end_ms: system_now_ms(),
        outcome,
    }));
}

/// The batch of each table the answer reads, from the value's `batches`.
fn batches_of(value: &str, reads: &BTreeMap<String, u64>) -> BTreeMap<String, String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(value) else {
        return BTreeMap::new();
    };
    let Some(b) = v.get("batches").and_then(|b| b.as_object()) else {
        return BTreeMap::new();
    };
    b.iter()
        .filter(|(t, _)| reads.contains_key(*t))
        .filter_map(|(t, v)| Some((t.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Asks `requests` from `concurrency` tasks until `until_ms`, each question drawn from the seed
/// (hotter first), with a short think time; waits for every request to be recorded.
pub async fn traffic(
    engine: &Engine,
    id: u32,
    requests: &[Request],
    recorder: &Recorder,
    until_ms: WallMs,
    seed: u64,
    concurrency: u32,
) {
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|k| {
            let (engine, recorder, requests) =
                (engine.clone(), recorder.clone(), requests.to_vec());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed ^ (u64::from(id) << 32) ^ u64::from(k));
                while system_now_ms() < until_ms {
                    // The smaller of two draws: low indexes are asked more often.
                    let i = rng.usize(..requests.len()).min(rng.usize(..requests.len()));
                    ask(&engine, id, &requests[i], &recorder).await;
                    tokio::time::sleep(Duration::from_millis(rng.u64(5..40))).await;
                }
            })
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            // A request task that panicked: the process reports it on stderr too, and the
            // checker counts panics from there.
            eprintln!("chaos worker {id}: a request task failed: {e}");
        }
    }
}

/// The worker process: builds its instance, runs the traffic, stops.
pub async fn run(settings: &crate::settings::Settings, args: WorkerArgs) -> anyhow::Result<()> {
    let redis = settings
        .redis
        .url
        .as_ref()
        .map(|u| u.expose().to_string())
        .ok_or_else(|| anyhow::anyhow!("chaos-worker needs --redis"))?;
    let spec = settings
        .warehouse
        .url
        .as_ref()
        .map(|w| w.expose())
        .ok_or_else(|| anyhow::anyhow!("chaos-worker needs --warehouse"))?;
    let latency = settings
        .warehouse
        .latency
        .unwrap_or(crate::warehouse::Latency::NONE);
    let lease = settings.redis.lease;
    let (warehouse, _) = super::open_warehouse(&spec, latency)?;
    let recorder = Recorder::create(&args.out)?;
    let instance = build(Setup {
        instance: args.instance,
        redis: &redis,
        warehouse,
        etl: None,
        lease,
        recorder: recorder.clone(),
        hang_file: args.hang_file.clone(),
    })
    .await?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let reports = spawn_reports(&instance, args.instance, lease, recorder.clone(), stop);
    let engine = instance.engine().clone();
    let requests = hot_requests(engine.catalog())?;
    traffic(
        &engine,
        args.instance,
        &requests,
        &recorder,
        args.until_ms,
        args.seed,
        args.concurrency,
    )
    .await;
    // A last look at the versions after the traffic, for convergence.
    tokio::time::sleep(REPORT_EVERY * 4).await;
    stop_tx.send_replace(true);
    if let Err(e) = reports.await {
        eprintln!(
            "chaos worker {}: the report task failed: {e}",
            args.instance
        );
    }
    recorder.flush();
    instance.shutdown();
    Ok(())
}
