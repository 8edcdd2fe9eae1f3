//! What the checker process itself does besides faults: samples the truth (the Redis versions
//! hash and batch labels, right after the warehouse's `update_log`) every [`SAMPLE_EVERY`], and
//! drives the ETL: a batch every few seconds of wall time, labelled `YYYYMMDD-HH:MM:SS`, some
//! partial (one table's load fails), loaded into the warehouse and then completed — half of them
//! (drawn from the seed) by the in-process driver, half by a one-shot `freshcache etl-complete`
//! process, as an ETL job would run it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use super::record::{EtlRecord, TruthSample, WallMs};
use crate::instance::Instance;
use crate::model::clock::{format_batch_label, system_now_ms};
use crate::warehouse::etl::EtlPlan;
use crate::warehouse::{EtlTarget, Warehouse};

/// The longest a one-shot `etl-complete` may take (its preload is bounded by 30 s).
const ONE_SHOT_WITHIN: Duration = Duration::from_secs(60);

/// How to run `freshcache etl-complete` as its own process.
#[derive(Clone)]
pub struct OneShot {
    /// This executable.
    pub exe: PathBuf,
    /// Its global options (config, logs, Redis, warehouse).
    pub global: Vec<OsString>,
    /// Where the ETL loads the batch first.
    pub target: Arc<dyn EtlTarget>,
}

/// Loads `batch` in this process, then runs `freshcache --json etl-complete --batch B` as a
/// separate process, recorded.
pub async fn run_batch_one_shot(via: &OneShot, batch: String, fail: Vec<String>) -> EtlRecord {
    let start_ms = system_now_ms();
    let plan = EtlPlan::failing(fail.iter().cloned());
    let tables = ["sales", "inventory", "customers"];
    crate::warehouse::etl::run_batch(via.target.as_ref(), &tables, &batch, start_ms, &plan).await;
    let run = tokio::process::Command::new(&via.exe)
        .args(&via.global)
        .args(["--json", "etl-complete", "--batch", &batch])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let result = match tokio::time::timeout(ONE_SHOT_WITHIN, run).await {
        Err(_) => Err(format!(
            "etl-complete did not end within {ONE_SHOT_WITHIN:?}"
        )),
        Ok(Err(e)) => Err(format!("etl-complete could not run: {e}")),
        Ok(Ok(out)) if !out.status.success() => Err(format!(
            "etl-complete exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Ok(out)) => serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v.get("bumped")?
                    .as_array()?
                    .iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| "etl-complete printed no report".to_string()),
    };
    EtlRecord {
        batch: format!("{batch} (one-shot etl-complete)"),
        failed: fail,
        start_ms,
        end_ms: system_now_ms(),
        result,
    }
}

/// How often the truth is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// The longest one look at Redis may take before the sample is skipped (Redis frozen or down).
const LOOK_WITHIN: Duration = Duration::from_millis(250);

const VERSIONS: &str = "{freshcache}:versions";
const BATCHES: &str = "{freshcache}:batches";

/// The batch label of wall-clock instant `ms`: `YYYYMMDD-HH:MM:SS` (sorts in time order).
pub fn label_at(ms: WallMs) -> String {
    format!("{}:{:02}", format_batch_label(ms), (ms / 1000) % 60)
}

/// Hands out batch labels that only go up, even to concurrent callers.
#[derive(Default)]
pub struct Labels {
    last: tokio::sync::Mutex<String>,
}

impl Labels {
    /// A label later than every one handed out before (waits for the next second if needed).
    pub async fn next(&self) -> String {
        let mut last = self.last.lock().await;
        loop {
            let l = label_at(system_now_ms());
            if l > *last {
                *last = l.clone();
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Samples the truth until `stop`; returns the samples.
pub fn spawn_sampler(
    url: String,
    warehouse: Arc<dyn Warehouse>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<TruthSample>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let client = match redis::Client::open(url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("chaos: the truth cannot be sampled: {e}");
                return out;
            }
        };
        let mut conn = None;
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let wh = match warehouse.update_log().await {
                Ok(log) => log.into_iter().map(|e| (e.table, e.batch)).collect(),
                Err(_) => continue,
            };
            if conn.is_none() {
                conn = tokio::time::timeout(LOOK_WITHIN, client.get_multiplexed_async_connection())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let Some(c) = conn.as_mut() else { continue };
            let look = async {
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(VERSIONS)
                    .cmd("HGETALL")
                    .arg(BATCHES)
                    .query_async::<(BTreeMap<String, u64>, BTreeMap<String, String>)>(c)
                    .await
            };
            match tokio::time::timeout(LOOK_WITHIN, look).await {
                Ok(Ok((versions, labels))) => out.push(TruthSample {
                    t_ms: system_now_ms(),
                    versions,
                    labels,
                    warehouse: wh,
                }),
                // Down, frozen or restarted: connect again at the next tick.
                _ => conn = None,
            }
        }
        out
    })
}

/// Runs one ETL batch through `driver` (load, then etl-complete), recorded.
pub async fn run_batch(driver: &Instance, batch: String, fail: Vec<String>) -> EtlRecord {
    let start_ms = system_now_ms();
    let plan = EtlPlan::failing(fail.iter().cloned());
    let result = match driver.run_etl(&batch, &plan).await {
        Ok((_, report)) => Ok(report.bumped),
        Err(e) => Err(e.to_string()),
    };
    EtlRecord {
        batch,
        failed: fail,
        start_ms,
        end_ms: system_now_ms(),
        result,
    }
}

/// The ETL schedule: a batch every 2–4 s until `until_ms`, 30% of them partial, half completed
/// by a one-shot process.
pub fn spawn_etl(
    driver: Instance,
    one_shot: OneShot,
    labels: Arc<Labels>,
    seed: u64,
    until_ms: WallMs,
    records: Arc<Mutex<Vec<EtlRecord>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(31).wrapping_add(7));
        let tables = ["sales", "inventory", "customers"];
        loop {
            let pause = Duration::from_millis(rng.u64(2_000..4_000));
            let fail = if rng.f64() < 0.3 {
                vec![tables[rng.usize(..tables.len())].to_string()]
            } else {
                Vec::new()
            };
            tokio::time::sleep(pause).await;
            if system_now_ms() >= until_ms {
                break;
            }
            let batch = labels.next().await;
            let record = if rng.bool() {
                run_batch_one_shot(&one_shot, batch, fail).await
            } else {
                run_batch(&driver, batch, fail).await
            };
            records.lock().push(record);
        }
    })
}
