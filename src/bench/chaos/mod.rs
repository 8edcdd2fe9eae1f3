//! `freshcache bench chaos`: searches for violations of the promise under faults.
//!
//! One run: a private `redis-server` ([`server`]), the embedded SQLite warehouse in a temporary
//! file (or PostgreSQL with `--warehouse`), N instance processes ([`worker`]: this executable's
//! hidden `bench chaos-worker`), instance 0 reaching Redis through a fault proxy ([`proxy`]), an
//! ETL driver and a truth sampler in this process ([`truth`]), and a seeded fault injector
//! ([`faults`]). Every answer, load and version report is written down; the rules in [`check`]
//! then count what broke the promise.
//!
//! Timeline of a run of `D` seconds: instances start; after [`WARMUP`] the ETL runs every few
//! seconds and faults are injected until `D − max(5 s, 0.3·D)`; the rest is quiet, for measuring
//! convergence. Requests stop at `D`; a request in flight then still gets its maximum wait.
//!
//! With `--warehouse postgres://...` the run loads made-up batches into that database: give it a
//! scratch one. Refused in production.
//!
//! The exit status is non-zero when any of `stale_as_fresh`, `version_regressions`,
//! `unanswered`, `panics` or the unexplained duplicate loads is above zero, or when provenance was
//! unavailable, so CI can run it.

pub mod check;
pub mod faults;
pub mod proxy;
pub mod record;
mod report;
pub mod server;
pub mod truth;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::exit::{CliError, EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_UNAVAILABLE};
use crate::model::clock::system_now_ms;
use crate::settings::{Settings, WarehouseUrl};
use crate::warehouse::demo_data::DemoSize;
use crate::warehouse::{EtlTarget, Latency, PostgresWarehouse, SqliteWarehouse, Warehouse};
use record::{ALL_KINDS, Line};
pub use report::ChaosReport;
use report::print_summary;

/// Time before the first ETL batch and fault.
pub const WARMUP: Duration = Duration::from_secs(2);
/// The instances' resync interval (`InstanceConfig::poll_interval`) + 100 ms: how late a
/// connected instance may notice a flip.
pub const RESYNC_BOUND: Duration = Duration::from_millis(1_100);
/// How long the instance behind the fault proxy may go without confirming the truth and still
/// present answers as Fresh: the instances run with this `max_unverified` (the default of
/// `--max-unverified`).
pub const MAX_UNVERIFIED: Duration = Duration::from_secs(2);
/// The short lease of instance 2 (a lease shorter than some loads).
pub const SHORT_LEASE: &str = "300ms";
/// Simulated warehouse latency of the instances.
pub const LATENCY: &str = "30ms-150ms";

/// Options of `bench chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule, the ETL and the requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long requests are made: seconds, or a duration (90s, 2m).
    #[arg(long, default_value = "60", value_name = "DURATION")]
    pub duration: String,
    /// Instance processes (at least 3: one behind the proxy, one with a short lease).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=16))]
    pub instances: u32,
    /// Keep the run's directory (records, logs, Redis log) and print where it is.
    #[arg(long)]
    pub keep: bool,
}

fn parse_duration_arg(text: &str) -> Result<Duration, CliError> {
    let d = match text.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => crate::model::clock::parse_duration(text)
            .map_err(|e| CliError::new(EXIT_BAD_INPUT, format!("--duration: {e}")))?,
    };
    if d < Duration::from_secs(5) {
        return Err(CliError::new(
            EXIT_BAD_INPUT,
            "--duration must be at least 5s",
        ));
    }
    Ok(d)
}

fn is_postgres(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// Opens the warehouse `spec` names (a SQLite path or a PostgreSQL URL).
pub fn open_warehouse(
    spec: &str,
    latency: Latency,
) -> anyhow::Result<(Arc<dyn Warehouse>, Arc<dyn EtlTarget>)> {
    if is_postgres(spec) {
        let pg = Arc::new(PostgresWarehouse::new(spec, latency)?);
        Ok((pg.clone(), pg))
    } else {
        let s = SqliteWarehouse::open(Path::new(spec), latency)?;
        Ok((Arc::new(s.clone()), Arc::new(s)))
    }
}

/// The run's directory, removed on drop unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            // Leftovers in the temporary directory are harmless; nothing to do on failure.
            // A temp dir left behind is untidy, not wrong.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A worker process, killed if still running when dropped.
struct Worker {
    id: u32,
    child: tokio::process::Child,
    out: PathBuf,
    stderr: PathBuf,
}

/// Runs `bench chaos`.
pub async fn run(settings: &Settings, args: ChaosArgs) -> Result<(), CliError> {
    let duration = parse_duration_arg(&args.duration)?;
    if settings.environment == crate::model::environment::Environment::Production {
        // It loads made-up ETL batches (into a given PostgreSQL database too) and kills servers.
        return Err(CliError::new(
            crate::exit::EXIT_REFUSED,
            "bench chaos is refused in production: it loads made-up batches and kills servers",
        ));
    }
    if let Some(why) = server::tools_missing() {
        return Err(CliError::new(
            EXIT_UNAVAILABLE,
            format!("bench chaos needs redis-server and redis-cli: {why}"),
        ));
    }
    let dir = RunDir {
        path: std::env::temp_dir().join(format!(
            "freshcache-chaos-{}-{}-{:08x}",
            args.seed,
            std::process::id(),
            fastrand::u32(..)
        )),
        keep: args.keep,
    };
    std::fs::create_dir_all(&dir.path).map_err(|e| {
        CliError::new(
            EXIT_FAILURE,
            format!("cannot create the run directory: {e}"),
        )
    })?;
    // Interrupted, the run still stops its server and processes (their handles are dropped).
    let (report, findings, failed) = tokio::select! {
        r = run_in(settings, &args, duration, &dir.path) => r?,
        _ = tokio::signal::ctrl_c() => {
            return Err(CliError::new(EXIT_FAILURE, "interrupted; the run's Redis and instances were stopped"));
        }
    };
    if settings.json {
        let text = serde_json::to_string(&report)
            .map_err(|e| CliError::new(EXIT_FAILURE, e.to_string()))?;
        println!("{text}");
    } else {
        print_summary(&report, &findings);
    }
    if args.keep {
        eprintln!(
            "freshcache: the run's records are in {}",
            dir.path.display()
        );
    }
    let mut violations = report.violations(findings.unexplained_duplicates());
    // An instance that failed to run makes every figure smaller than it should be.
    violations.extend(failed);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(
            EXIT_FAILURE,
            format!("the promise was broken: {}", violations.join(", ")),
        ))
    }
}

async fn run_in(
    settings: &Settings,
    args: &ChaosArgs,
    duration: Duration,
    dir: &Path,
) -> Result<(ChaosReport, check::Findings, Vec<String>), CliError> {
    let redis = server::RedisServer::start(&dir.join("redis"))
        .map_err(|e| CliError::new(EXIT_UNAVAILABLE, format!("{e:#}")))?;
    let redis_url = redis.url();
    let redis_addr = redis.addr();
    let redis = Arc::new(Mutex::new(redis));
    // The warehouse: the run's own SQLite file, or the given PostgreSQL database.
    let spec = match &settings.warehouse.url {
        Some(WarehouseUrl::Postgres(w)) => w.expose().to_string(),
        Some(_) => {
            return Err(CliError::new(
                EXIT_BAD_INPUT,
                "bench chaos uses a warehouse of its own; --warehouse may only name a PostgreSQL database",
            ));
        }
        None => dir.join("warehouse.sqlite").display().to_string(),
    };
    let (warehouse, etl) = open_warehouse(&spec, Latency::NONE)?;
    let now = system_now_ms();
    let size = DemoSize {
        customers: 500,
        sales: 20_000,
    };
    let first = truth::label_at(now.saturating_sub(60_000));
    let initialised = match &spec {
        s if is_postgres(s) => {
            PostgresWarehouse::new(s, Latency::NONE)?
                .init_demo(size, &first, now)
                .await
        }
        s => {
            SqliteWarehouse::open(Path::new(s), Latency::NONE)?
                .init_demo(size, &first, now)
                .await
        }
    };
    initialised.map_err(|e| CliError::new(EXIT_UNAVAILABLE, e.to_string()))?;

    let proxy = Arc::new(
        proxy::FaultProxy::start(redis_addr)
            .await
            .context("cannot start the fault proxy")?,
    );
    let started = system_now_ms();
    let until_ms = started + crate::model::num::ms(duration);
    let mut workers = Vec::new();
    let mut hang_files = Vec::new();
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let config = dir.join("empty-config.toml");
    std::fs::write(&config, "").context("cannot write the run's config file")?;
    for id in 0..args.instances {
        let url = if id == 0 {
            format!("redis://{}/0", proxy.addr())
        } else {
            redis_url.clone()
        };
        let lease = if id == 2 { SHORT_LEASE } else { "10s" };
        let out = dir.join(format!("instance-{id}.jsonl"));
        let stderr = dir.join(format!("instance-{id}.stderr"));
        let hang = dir.join(format!("hang-{id}"));
        hang_files.push(hang.clone());
        let child = tokio::process::Command::new(&exe)
            .arg("--config")
            .arg(&config)
            .arg("--log-dir")
            .arg(dir.join("logs"))
            .args(["--redis", &url, "--warehouse", &spec, "--latency", LATENCY])
            .args(["--lease", lease, "bench", "chaos-worker"])
            .args(["--instance", &id.to_string()])
            .arg("--out")
            .arg(&out)
            .args(["--until-ms", &until_ms.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .arg("--hang-file")
            .arg(&hang)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).context("cannot create a stderr file")?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start an instance process")?;
        workers.push(Worker {
            id,
            child,
            out,
            stderr,
        });
    }

    // The ETL drivers: instances in this process, on Redis directly, with recorded loads.
    let n = args.instances;
    let driver_out = dir.join("drivers.jsonl");
    let recorder = worker::Recorder::create(&driver_out).context("cannot create a record file")?;
    let (driver_wh, _) =
        open_warehouse(&spec, Latency::parse(LATENCY).map_err(anyhow::Error::msg)?)?;
    let mut drivers = Vec::new();
    let driver_hang = dir.join("hang-driver");
    for id in [n, n + 1] {
        drivers.push(
            worker::build(worker::Setup {
                instance: id,
                redis: &redis_url,
                warehouse: driver_wh.clone(),
                etl: Some(etl.clone()),
                lease: Duration::from_secs(10),
                recorder: recorder.clone(),
                hang_file: (id == n).then(|| driver_hang.clone()),
            })
            .await
            .map_err(|e| CliError::new(EXIT_UNAVAILABLE, format!("the ETL driver: {e:#}")))?,
        );
    }
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let reports: Vec<_> = drivers
        .iter()
        .zip([n, n + 1])
        .map(|(d, id)| {
            worker::spawn_reports(
                d,
                id,
                Duration::from_secs(10),
                recorder.clone(),
                stop.clone(),
            )
        })
        .collect();
    let sampler = truth::spawn_sampler(redis_url.clone(), warehouse.clone(), stop.clone());
    // The driver asks the hot questions too, so its etl-complete has hot keys to preload.
    let hot = worker::hot_requests(drivers[0].engine().catalog())?;
    for r in &hot {
        worker::ask(drivers[0].engine(), n, r, &recorder).await;
    }

    tokio::time::sleep(WARMUP).await;
    let labels = Arc::new(truth::Labels::default());
    let etl_records = Arc::new(Mutex::new(Vec::new()));
    let one_shot = truth::OneShot {
        exe: exe.clone(),
        global: vec![
            "--config".into(),
            config.clone().into_os_string(),
            "--log-dir".into(),
            dir.join("logs").into_os_string(),
            "--redis".into(),
            redis_url.clone().into(),
            "--warehouse".into(),
            spec.clone().into(),
            "--latency".into(),
            LATENCY.into(),
        ],
        target: etl.clone(),
    };
    let etl_task = truth::spawn_etl(
        drivers[0].clone(),
        one_shot,
        labels.clone(),
        args.seed,
        until_ms,
        etl_records.clone(),
    );
    let tail = Duration::from_secs(5).max(duration.mul_f64(0.3));
    let window = duration.saturating_sub(WARMUP + tail);
    let plan = faults::plan(args.seed, crate::model::num::ms(window));
    let targets = faults::Targets {
        redis: redis.clone(),
        proxy: proxy.clone(),
        hang_files,
        short_lease: (n >= 3).then_some(2),
        drivers: [drivers[0].clone(), drivers[1].clone()],
        driver_hang,
        labels,
        etl: etl_records.clone(),
        dir: dir.to_path_buf(),
    };
    let faults_from = system_now_ms();
    let injected = faults::inject(
        targets,
        plan,
        faults_from,
        faults_from + crate::model::num::ms(window),
    )
    .await;

    // Quiet tail; then the instances finish their requests and exit.
    let mut panics = 0;
    let mut failed = Vec::new();
    let drain = Duration::from_secs(45) + duration;
    for w in &mut workers {
        let left = Duration::from_millis(
            (started + crate::model::num::ms(drain)).saturating_sub(system_now_ms()),
        );
        let status = match tokio::time::timeout(left, w.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                // Still running past every bound: stop it (the kill cannot fail in a way that
                // matters: the process is gone either way when this returns).
                // It may have exited on its own since; either way it is reported as missing.
                let _ = w.child.kill().await;
                None
            }
        };
        let stderr = std::fs::read_to_string(&w.stderr).unwrap_or_default();
        let tail = stderr.lines().last().unwrap_or("").trim().to_string();
        match status {
            None => failed.push(format!("instance {} did not end in time", w.id)),
            Some(s) if !s.success() && s.code() != Some(101) => {
                failed.push(format!("instance {} exited with {s}: {tail}", w.id));
            }
            _ => {}
        }
        if status.and_then(|s| s.code()) == Some(101) || stderr.contains("panicked") {
            panics += 1;
            tracing::warn!(
                instance = w.id,
                "chaos: instance panicked: {}",
                stderr.trim()
            );
        }
    }
    if let Err(e) = etl_task.await {
        tracing::warn!("chaos: the ETL task failed: {e}");
    }
    stop_tx.send_replace(true);
    for r in reports {
        if let Err(e) = r.await {
            tracing::warn!("chaos: a driver's report task failed: {e}");
        }
    }
    let truth = sampler.await.unwrap_or_default();
    for d in &drivers {
        d.shutdown();
    }
    recorder.flush();

    let mut lines = Vec::new();
    for path in workers.iter().map(|w| &w.out).chain([&driver_out]) {
        lines.extend(read_lines(path));
    }
    let bounds = check::Bounds {
        resync_ms: crate::model::num::ms(RESYNC_BOUND),
        unverified_ms: crate::model::num::ms(MAX_UNVERIFIED),
        partitioned: 0,
    };
    let findings = check::check(&lines, &truth, &injected, bounds);
    let mut fault_counts: BTreeMap<String, u64> =
        ALL_KINDS.iter().map(|k| (k.to_string(), 0)).collect();
    for f in &injected {
        *fault_counts.entry(f.kind.clone()).or_default() += 1;
    }
    if args.keep {
        let extra = serde_json::json!({
            "faults": injected,
            "etl": *etl_records.lock(),
            "truth_samples": truth.len(),
            "examples": findings.examples,
            "stale_as_fresh_by_instance": findings.stale_by_instance,
            "stale_as_fresh_after_fault": findings.stale_after_fault,
            "stale_as_fresh_by_cause": findings.stale_by_cause,
        });
        let samples: Vec<String> = truth
            .iter()
            .filter_map(|s| serde_json::to_string(s).ok())
            .collect();
        // Only for a person looking later; the run's result does not depend on them.
        for (name, text) in [
            ("checker.json", extra.to_string()),
            ("truth.jsonl", samples.join("\n")),
        ] {
            if let Err(e) = std::fs::write(dir.join(name), text) {
                tracing::warn!("could not keep {name} in {}: {e}", dir.display());
            }
        }
    }
    let report = ChaosReport {
        seed: args.seed,
        duration_s: duration.as_secs(),
        instances: args.instances,
        answers: findings.answers,
        fresh_answers: findings.fresh_answers,
        stale_answers: findings.stale_answers,
        errors: findings.errors,
        stale_as_fresh: findings.stale_as_fresh,
        duplicate_loads: findings.unexplained_duplicates(),
        version_regressions: findings.version_regressions,
        unanswered: findings.unanswered,
        panics,
        max_convergence_ms: findings.max_convergence_ms,
        faults: fault_counts,
    };
    drop(proxy);
    Ok((report, findings, failed))
}

/// The records in `path`; a line that does not parse (a process killed mid-write) is skipped.
fn read_lines(path: &Path) -> Vec<Line> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
