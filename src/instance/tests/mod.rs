//! The instance end to end: a real (in-memory SQLite) warehouse with demo data, the ETL, the
//! embedded bus, and an engine on a manual clock. This file holds the world the tests share;
//! the tests are grouped by subject beside it.

mod actions;
mod audit;
mod faulty;
mod messages;
mod protocol;
mod sync;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::bus::{BumpMode, LocalBus};
use crate::engine::{Freshness, Source};
use crate::model::catalog::{Catalog, Request};
use crate::model::clock::{Clock, ManualClock};
use crate::model::environment::Environment;
use crate::model::events::{Event, EventKind};
use crate::warehouse::demo_data::DemoSize;
use crate::warehouse::etl::EtlPlan;
use crate::warehouse::{EtlTarget, Latency, SqliteWarehouse};
use faulty::{FaultyBus, faulty_world};

/// 2026-11-26T10:00:30Z
const T1000: u64 = 1_795_687_230_000;

struct World {
    instance: Instance,
    clock: Arc<ManualClock>,
    bus: LocalBus,
}

impl World {
    /// Another engine on this world's catalog, warehouse and clock (another process's).
    fn second_engine(&self) -> Engine {
        Engine::builder(
            self.instance.engine().catalog().clone(),
            self.instance.warehouse().clone(),
        )
        .clock(self.clock.clone())
        .build()
        .unwrap()
    }
}

async fn world(env: Environment, read_only: bool) -> World {
    world_with_etl(env, read_only, |w| Arc::new(w)).await
}

/// A world whose ETL writes through `etl` (given the warehouse).
async fn world_with_etl(
    env: Environment,
    read_only: bool,
    etl: impl FnOnce(SqliteWarehouse) -> Arc<dyn EtlTarget>,
) -> World {
    let catalog = Arc::new(Catalog::bundled().unwrap());
    let warehouse = SqliteWarehouse::temporary(Latency::NONE).unwrap();
    let size = DemoSize {
        customers: 300,
        sales: 5_000,
    };
    warehouse
        .init_demo(size, "20261126-09:00", T1000 - 3_600_000)
        .await
        .unwrap();
    let clock = ManualClock::new(T1000);
    let bus = LocalBus::in_memory(catalog.tables().clone(), clock.clone()).unwrap();
    let engine = Engine::builder(catalog, Arc::new(warehouse.clone()))
        .clock(clock.clone())
        .build()
        .unwrap();
    let instance = Instance::new(
        engine,
        Arc::new(bus.clone()),
        Arc::new(warehouse.clone()),
        Some(etl(warehouse)),
        InstanceConfig {
            env,
            read_only,
            ..InstanceConfig::default()
        },
    );
    instance.start().await.unwrap();
    World {
        instance,
        clock,
        bus,
    }
}

fn req(w: &World, q: &str, params: &[(&str, &str)]) -> Request {
    w.instance.engine().request(q, params).unwrap()
}

fn table(w: &World, name: &str) -> crate::model::versions::TableId {
    w.instance.engine().catalog().tables().id(name).unwrap()
}

/// A sync loop that polls every 20 ms and stops trusting its versions after 150 ms without a
/// confirmed read: the regressions of lost trust run in a fraction of a second.
fn quick_to_distrust() -> InstanceConfig {
    InstanceConfig {
        poll_interval: Duration::from_millis(20),
        max_unverified: Duration::from_millis(150),
        ..InstanceConfig::default()
    }
}

async fn history(w: &World) -> Vec<Event> {
    w.bus.history(0, 1000).await.unwrap()
}

/// Waits until the latest refresh-ahead has finished.
async fn refreshed(w: &World) {
    let mut progress = w.instance.refresh_progress();
    let done = progress.wait_for(|p| p.total > 0 && p.finished());
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("refresh-ahead did not finish")
        .unwrap();
}

/// Polls `done` until it holds, failing the test with `what` when it has not within 10 s.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
