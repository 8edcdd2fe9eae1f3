//! The fault schedule (drawn from the seed: the same seed gives the same schedule) and the
//! injector that carries it out, one fault at a time, recording when each was in effect.
//!
//! Kinds are drawn in rounds: each round is every kind in an order shuffled by the seed, so a
//! run long enough for a round injects every kind once; the parameters (how long, which table)
//! are drawn from the same generator.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use super::proxy::{FaultProxy, Mode};
use super::record::*;
use super::server::RedisServer;
use super::truth::{Labels, run_batch};
use crate::instance::Instance;
use crate::model::clock::{format_rfc3339, system_now_ms};

/// One planned fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Offset from the start of the fault phase, ms.
    pub at_ms: u64,
    /// Kind (see [`ALL_KINDS`]).
    pub kind: &'static str,
    /// How long it lasts, ms, where that applies.
    pub hold_ms: u64,
    /// A second drawn number (the delay of a proxy, which table, which garbage), kind-specific.
    pub pick: u64,
}

/// Plans faults over `window_ms` from the seed; `spaced_ms` apart at least.
pub fn plan(seed: u64, window_ms: u64) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    let mut at = 0u64;
    'rounds: loop {
        let mut round: Vec<&'static str> = ALL_KINDS.to_vec();
        rng.shuffle(&mut round);
        for kind in round {
            let hold_ms = match kind {
                REDIS_STOP => rng.u64(200..=3_000),
                KILL_EMPTY | RESTART_SNAPSHOT => rng.u64(200..=1_000),
                PARTITION => rng.u64(1_000..=4_000),
                PROXY_DELAY => rng.u64(1_000..=3_000),
                BUMP_FAILS => rng.u64(800..=2_000),
                HUNG_LOAD => rng.u64(2_000..=5_000),
                LEASE_SHORTER => rng.u64(600..=1_500),
                _ => 0,
            };
            let pick = rng.u64(..);
            if at + hold_ms > window_ms {
                break 'rounds;
            }
            out.push(Planned {
                at_ms: at,
                kind,
                hold_ms,
                pick,
            });
            at += hold_ms + rng.u64(300..=1_200);
        }
    }
    out
}

/// What the injector acts on.
pub struct Targets {
    /// The run's Redis.
    pub redis: Arc<Mutex<RedisServer>>,
    /// Instance 0's proxy.
    pub proxy: Arc<FaultProxy>,
    /// Hang files per instance (index = instance).
    pub hang_files: Vec<PathBuf>,
    /// The instance with the short lease, if any.
    pub short_lease: Option<u32>,
    /// The ETL drivers (two, for concurrent etl-completes).
    pub drivers: [Instance; 2],
    /// The hang file of the first driver's warehouse loads.
    pub driver_hang: PathBuf,
    /// Batch labels.
    pub labels: Arc<Labels>,
    /// Where ETL runs are recorded.
    pub etl: Arc<Mutex<Vec<EtlRecord>>>,
    /// The run directory (snapshots go there).
    pub dir: PathBuf,
}

/// Runs `f` against the server off the runtime (it waits on processes).
async fn with_redis<T: Send + 'static>(
    t: &Targets,
    f: impl FnOnce(&mut RedisServer) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let redis = t.redis.clone();
    tokio::task::spawn_blocking(move || f(&mut redis.lock())).await?
}

async fn publish(t: &Targets, payload: Vec<u8>) -> anyhow::Result<()> {
    with_redis(t, move |r| {
        // Arbitrary bytes (garbage included) go through redis-cli's -x (argument from stdin).
        let mut child = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &r.port().to_string()])
            .args(["-x", "PUBLISH", "warehouse_updated"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, &payload)?;
        }
        child.wait()?;
        Ok(())
    })
    .await
}

fn plain_message(table: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"timestamp":"{}","tables":["{table}"]{extra}}}"#,
        format_rfc3339(system_now_ms())
    )
    .into_bytes()
}

const TABLES: [&str; 3] = ["sales", "inventory", "customers"];

/// Carries out `plan` from `start_ms`; returns the faults as they happened.
///
/// A fault takes longer than its hold (a restart, an `etl-complete`), so the schedule slips; a
/// planned fault that would now end after `deadline_ms` is left out, so the quiet tail in which
/// convergence is measured stays quiet.
pub async fn inject(
    t: Targets,
    plan: Vec<Planned>,
    start_ms: WallMs,
    deadline_ms: WallMs,
) -> Vec<FaultRecord> {
    let mut out = Vec::new();
    let snapshot = t.dir.join("snapshot.rdb");
    let mut have_snapshot = false;
    let mut replay: Option<Vec<u8>> = None;
    for p in plan {
        let due = start_ms + p.at_ms;
        let now = system_now_ms();
        if now.max(due) + p.hold_ms > deadline_ms {
            break;
        }
        if due > now {
            tokio::time::sleep(Duration::from_millis(due - now)).await;
        }
        if !have_snapshot {
            let to = snapshot.clone();
            have_snapshot = with_redis(&t, move |r| r.snapshot(&to)).await.is_ok();
        }
        let start = system_now_ms();
        let table = TABLES[(p.pick % 3) as usize];
        let hold = Duration::from_millis(p.hold_ms);
        let mut instance = None;
        let detail: anyhow::Result<String> = async {
            Ok(match p.kind {
                KILL_EMPTY => {
                    with_redis(&t, |r| {
                        r.kill();
                        Ok(())
                    })
                    .await?;
                    tokio::time::sleep(hold).await;
                    with_redis(&t, |r| r.restart_empty()).await?;
                    format!("kill -9, down {} ms, restarted empty", p.hold_ms)
                }
                RESTART_SNAPSHOT if have_snapshot => {
                    with_redis(&t, |r| {
                        r.kill();
                        Ok(())
                    })
                    .await?;
                    tokio::time::sleep(hold).await;
                    let from = snapshot.clone();
                    with_redis(&t, move |r| r.restart_from(&from)).await?;
                    // The next one restores something older than now, not this again.
                    have_snapshot = false;
                    "kill -9, restarted from an older snapshot".to_string()
                }
                RESTART_SNAPSHOT => anyhow::bail!("no snapshot to restart from"),
                REDIS_STOP => {
                    with_redis(&t, |r| r.stop()).await?;
                    tokio::time::sleep(hold).await;
                    with_redis(&t, |r| r.cont()).await?;
                    format!("SIGSTOP for {} ms", p.hold_ms)
                }
                PUBSUB_KILL => {
                    let n =
                        with_redis(&t, |r| r.cli(&["CLIENT", "KILL", "TYPE", "pubsub"])).await?;
                    format!("CLIENT KILL TYPE pubsub: {}", n.trim())
                }
                PARTITION => {
                    instance = Some(0);
                    t.proxy.set(Mode::Blackhole);
                    tokio::time::sleep(hold).await;
                    t.proxy.set(Mode::Pass);
                    format!("instance 0 blackholed for {} ms", p.hold_ms)
                }
                PROXY_DELAY => {
                    instance = Some(0);
                    let d = Duration::from_millis(50 + p.pick % 350);
                    t.proxy.set(Mode::Delay(d));
                    tokio::time::sleep(hold).await;
                    t.proxy.set(Mode::Pass);
                    format!("instance 0 delayed {d:?} for {} ms", p.hold_ms)
                }
                PROXY_RESET => {
                    instance = Some(0);
                    t.proxy.reset_all();
                    "instance 0's connections reset".to_string()
                }
                MSG_FORGED if p.pick % 2 == 0 => {
                    let m = plain_message(table, "");
                    replay.get_or_insert_with(|| m.clone());
                    publish(&t, m).await?;
                    format!("plain update of {table} from a foreign publisher")
                }
                MSG_FORGED => {
                    // Our own format, one version above the truth and a batch from the future:
                    // plausible enough to pass a careless check.
                    let key = "{freshcache}:versions".to_string();
                    let name = table.to_string();
                    let truth = with_redis(&t, move |r| r.cli(&["HGET", &key, &name])).await?;
                    let next = truth.trim().parse::<u64>().unwrap_or(0) + 1;
                    let extra =
                        format!(r#","versions":{{"{table}":{next}}},"batch":"20991231-23:59:59""#);
                    publish(&t, plain_message(table, &extra)).await?;
                    format!("{table} at version {next} (truth + 1), batch 20991231-23:59:59")
                }
                MSG_DUPLICATE => {
                    let m = plain_message(table, "");
                    publish(&t, m.clone()).await?;
                    publish(&t, m).await?;
                    format!("the same update of {table} twice")
                }
                MSG_REPLAYED => {
                    let m = match &replay {
                        Some(m) => m.clone(),
                        None => {
                            let m = plain_message(table, "");
                            publish(&t, m.clone()).await?;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            m
                        }
                    };
                    publish(&t, m).await?;
                    "an earlier update published again".to_string()
                }
                MSG_GARBAGE => {
                    let garbage: Vec<Vec<u8>> = vec![
                        b"not json at all".to_vec(),
                        br#"{"tables":"sales"}"#.to_vec(),
                        br#"{"timestamp":"x","tables":["no_such_table"]}"#.to_vec(),
                        vec![0xff, 0xfe, 0x00, 0x7b],
                        plain_message(table, &format!(r#","pad":"{}""#, "x".repeat(200_000))),
                    ];
                    let g = garbage[crate::model::num::to_usize(
                        p.pick % crate::model::num::len_u64(garbage.len()),
                    )]
                    .clone();
                    let len = g.len();
                    publish(&t, g).await?;
                    format!("a malformed message ({len} bytes)")
                }
                MSG_HUGE_VERSION => {
                    let extra = format!(r#","versions":{{"{table}":18446744073709551615}}"#);
                    publish(&t, plain_message(table, &extra)).await?;
                    format!("{table} at version 2^64-1")
                }
                BUMP_FAILS => {
                    let batch = t.labels.next().await;
                    let driver = t.drivers[0].clone();
                    // The driver's preload loads are held until `until`; Redis freezes just
                    // before they end, so the preload finishes and the bump meets a frozen Redis.
                    let until = system_now_ms() + 400 + p.pick % 400;
                    std::fs::write(&t.driver_hang, until.to_string())?;
                    let etl =
                        tokio::spawn(async move { run_batch(&driver, batch, Vec::new()).await });
                    let engine = t.drivers[0].engine();
                    while engine.loads_in_flight() == 0 && system_now_ms() + 30 < until {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let wait = until.saturating_sub(30).saturating_sub(system_now_ms());
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    with_redis(&t, |r| r.stop()).await?;
                    tokio::time::sleep(hold).await;
                    with_redis(&t, |r| r.cont()).await?;
                    let record = etl.await?;
                    let what = format!(
                        "etl-complete {} with Redis frozen {} ms: {:?}",
                        record.batch, p.hold_ms, record.result
                    );
                    t.etl.lock().push(record);
                    what
                }
                CONCURRENT_ETL => {
                    let (b1, b2) = (t.labels.next().await, t.labels.next().await);
                    let (r1, r2) = tokio::join!(
                        run_batch(&t.drivers[0], b1, Vec::new()),
                        run_batch(&t.drivers[1], b2, Vec::new())
                    );
                    let what = format!(
                        "etl-complete {} and {} at once: {:?} / {:?}",
                        r1.batch, r2.batch, r1.result, r2.result
                    );
                    t.etl.lock().extend([r1, r2]);
                    what
                }
                HUNG_LOAD | LEASE_SHORTER => {
                    let who = match p.kind {
                        LEASE_SHORTER => t.short_lease.unwrap_or(1),
                        _ => 1,
                    };
                    instance = Some(who);
                    let until = system_now_ms() + p.hold_ms;
                    if let Some(f) = t.hang_files.get(who as usize) {
                        std::fs::write(f, until.to_string())?;
                    }
                    tokio::time::sleep(hold).await;
                    format!("instance {who}'s loads hang for {} ms", p.hold_ms)
                }
                other => anyhow::bail!("unknown fault {other}"),
            })
        }
        .await;
        match detail {
            Ok(detail) => out.push(FaultRecord {
                kind: p.kind.to_string(),
                start_ms: start,
                end_ms: system_now_ms(),
                instance,
                detail,
            }),
            Err(e) => {
                tracing::warn!(kind = p.kind, "chaos: fault not injected: {e:#}");
                // A frozen server must not stay frozen because a step failed (best effort: if
                // even this fails, the server is killed when the run ends).
                // Cleanup of a fault that may already be over: a server that is not stopped is fine.
                let _ = with_redis(&t, |r| if r.is_stopped() { r.cont() } else { Ok(()) }).await;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(plan(7, 60_000), plan(7, 60_000));
        assert_ne!(plan(7, 60_000), plan(8, 60_000));
        let p = plan(1, 120_000);
        for k in ALL_KINDS {
            assert!(
                p.iter().any(|f| f.kind == *k),
                "{k} missing from a long run"
            );
        }
        assert!(p.iter().all(|f| f.at_ms + f.hold_ms <= 120_000));
    }
}
