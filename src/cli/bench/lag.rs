//! `bench lag`: from `etl-complete` to the first fresh answer in another task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::engine::Engine;
use crate::model::catalog::Catalog;
use crate::warehouse::MemoryWarehouse;

/// The `bench lag` report.
#[derive(Debug, Clone, Serialize)]
pub struct LagReport {
    /// Updates measured.
    pub rounds: usize,
    /// Median lag.
    pub p50_ms: f64,
    /// 99th percentile lag.
    pub p99_ms: f64,
    /// Worst lag.
    pub max_ms: f64,
}

/// Measures, `rounds` times, the time from the start of `etl-complete` (an update of `sales` whose
/// batch is already in the warehouse) to the first fresh answer at the new version seen by a
/// reader task that asks continuously. Embedded: in-memory warehouse (no added latency), bus and
/// store; the answer needs one load.
pub async fn lag(rounds: usize) -> anyhow::Result<LagReport> {
    use std::sync::atomic::AtomicU64;

    use crate::bus::LocalBus;
    use crate::instance::{Instance, InstanceConfig};
    use crate::warehouse::EtlTarget;

    let catalog = Arc::new(Catalog::bundled()?);
    let tables = catalog.tables().clone();
    let warehouse = Arc::new(MemoryWarehouse::for_tables(&tables, Duration::ZERO));
    let clock: crate::model::clock::SharedClock = Arc::new(crate::model::clock::SystemClock);
    let bus = Arc::new(LocalBus::in_memory(tables.clone(), clock.clone())?);
    let engine = Engine::builder(catalog.clone(), warehouse.clone()).build()?;
    let instance = Instance::new(
        engine.clone(),
        bus,
        warehouse.clone(),
        Some(warehouse.clone()),
        InstanceConfig::default(),
    );
    instance.start().await?;
    let sales = tables.id("sales")?;
    let request = engine.request("sales_by_region", &[("quarter", "Q1")])?;
    engine.get(&request).await?;

    let target = Arc::new(AtomicU64::new(u64::MAX));
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let reader = {
        let (engine, request, target) = (engine.clone(), request.clone(), target.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(a) = engine.get(&request).await {
                    let v = a.versions().versions()[0];
                    let want = target.load(Ordering::Acquire);
                    if a.freshness.is_fresh() && v >= want {
                        target.store(u64::MAX, Ordering::Release);
                        if seen_tx.send(Instant::now()).is_err() {
                            return;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut lags = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let batch = format!(
            "20261126-{:02}:{:02}:{:02}",
            10 + i / 3600,
            (i / 60) % 60,
            i % 60
        );
        warehouse.load_table("sales", &batch, 0, false).await?;
        let next = engine.versions().version(sales) + 1;
        target.store(next, Ordering::Release);
        let started = Instant::now();
        instance.etl_complete(&batch, &[sales]).await?;
        let seen = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
            .await
            .context("no fresh answer within 10 s")?
            .context("the reader stopped")?;
        lags.push(seen.saturating_duration_since(started).as_secs_f64() * 1000.0);
    }
    reader.abort();
    instance.shutdown();
    lags.sort_by(f64::total_cmp);
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(LagReport {
        rounds,
        p50_ms: round3(percentile_raw(&lags, 0.5)),
        p99_ms: round3(percentile_raw(&lags, 0.99)),
        max_ms: round3(percentile_raw(&lags, 1.0)),
    })
}

fn percentile_raw(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = crate::model::num::to_usize(crate::model::num::f64_to_u64(
        (q * sorted.len() as f64).ceil(),
    ))
    .clamp(1, sorted.len());
    sorted[rank - 1]
}
