//! A bus whose faults the test switches on and off, and a world whose instance talks to it.

use std::sync::atomic::Ordering;

use tokio::sync::broadcast;

use super::*;
use crate::bus::{BumpRequest, BusError};
use crate::model::versions::{TableId, VersionVector};

/// The embedded bus with faults switched on and off by the test: bumps or reads that fail, and
/// a hook run right after the truth was read (as if something landed while the reply travelled).
pub(super) struct FaultyBus {
    pub(super) bus: LocalBus,
    pub(super) fail_bumps: std::sync::atomic::AtomicBool,
    pub(super) fail_reads: std::sync::atomic::AtomicBool,
    pub(super) panic_reads: std::sync::atomic::AtomicBool,
    /// Subscribers get a feed nobody publishes on (every message lost).
    pub(super) deaf: std::sync::atomic::AtomicBool,
    /// Read once instead of the truth (a truth another instance has just put back).
    pub(super) next_read: parking_lot::Mutex<Option<VersionVector>>,
    /// Read every time instead of the truth (a truth that lost its state).
    pub(super) every_read: parking_lot::Mutex<Option<VersionVector>>,
    /// Raises (restores) fail.
    pub(super) fail_raise: std::sync::atomic::AtomicBool,
    pub(super) after_read: parking_lot::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl FaultyBus {
    pub(super) fn new(bus: LocalBus) -> Arc<Self> {
        Arc::new(Self {
            bus,
            fail_bumps: false.into(),
            fail_reads: false.into(),
            panic_reads: false.into(),
            deaf: false.into(),
            next_read: parking_lot::Mutex::new(None),
            every_read: parking_lot::Mutex::new(None),
            fail_raise: false.into(),
            after_read: parking_lot::Mutex::new(None),
        })
    }
}

impl Bus for FaultyBus {
    fn describe(&self) -> String {
        "faulty".into()
    }
    fn clock(&self) -> &crate::model::clock::SharedClock {
        self.bus.clock()
    }
    fn versions(&self) -> crate::model::BoxFuture<'_, Result<Arc<VersionVector>, BusError>> {
        Box::pin(async move {
            if self.fail_reads.load(Ordering::SeqCst) {
                return Err(BusError("unreachable (test)".into()));
            }
            assert!(
                !self.panic_reads.swap(false, Ordering::SeqCst),
                "a bug in the sync path (test)"
            );
            if let Some(v) = self.next_read.lock().take() {
                return Ok(Arc::new(v));
            }
            if let Some(v) = self.every_read.lock().clone() {
                return Ok(Arc::new(v));
            }
            let truth = self.bus.versions().await;
            let hook = self.after_read.lock().take();
            if let Some(hook) = hook {
                hook();
            }
            truth
        })
    }
    fn bump_with<'a>(
        &'a self,
        request: BumpRequest<'a>,
    ) -> crate::model::BoxFuture<'a, Result<crate::bus::BumpOutcome, BusError>> {
        Box::pin(async move {
            if self.fail_bumps.load(Ordering::SeqCst) {
                return Err(BusError("frozen (test)".into()));
            }
            self.bus.bump_with(request).await
        })
    }
    fn reserved(&self) -> crate::model::BoxFuture<'_, Result<Vec<u64>, BusError>> {
        self.bus.reserved()
    }
    fn reserve<'a>(
        &'a self,
        tables: &'a [TableId],
    ) -> crate::model::BoxFuture<'a, Result<Vec<u64>, BusError>> {
        self.bus.reserve(tables)
    }
    fn publish(&self, kind: EventKind) -> crate::model::BoxFuture<'_, Result<Event, BusError>> {
        self.bus.publish(kind)
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        if self.deaf.load(Ordering::SeqCst) {
            // The sender is dropped at once: a closed feed, as if every message were lost.
            return broadcast::channel(1).1;
        }
        self.bus.subscribe()
    }
    fn history(
        &self,
        after: u64,
        limit: usize,
    ) -> crate::model::BoxFuture<'_, Result<Vec<Event>, BusError>> {
        self.bus.history(after, limit)
    }
    fn catch_up(&self) -> crate::model::BoxFuture<'_, Result<usize, BusError>> {
        self.bus.catch_up()
    }
    fn report<'a>(
        &'a self,
        report: &'a crate::bus::InstanceReport,
    ) -> crate::model::BoxFuture<'a, Result<(), BusError>> {
        self.bus.report(report)
    }
    fn leave<'a>(&'a self, id: &'a str) -> crate::model::BoxFuture<'a, Result<(), BusError>> {
        self.bus.leave(id)
    }
    fn reports(
        &self,
        live_ms: u64,
    ) -> crate::model::BoxFuture<'_, Result<Vec<crate::bus::InstanceReport>, BusError>> {
        self.bus.reports(live_ms)
    }
    fn raise<'a>(
        &'a self,
        versions: &'a VersionVector,
    ) -> crate::model::BoxFuture<'a, Result<usize, BusError>> {
        if self.fail_raise.load(Ordering::SeqCst) {
            return Box::pin(async { Err(BusError("unreachable (test)".into())) });
        }
        self.bus.raise(versions)
    }
}

/// A world like [`world`] whose instance talks to a [`FaultyBus`].
pub(super) async fn faulty_world(config: InstanceConfig) -> (World, Arc<FaultyBus>) {
    let w = world(Environment::Staging, false).await;
    w.instance.shutdown();
    let faulty = FaultyBus::new(w.bus.clone());
    let engine = w.second_engine();
    let etl = w.instance.inner.etl.clone();
    let instance = Instance::new(
        engine,
        faulty.clone(),
        w.instance.warehouse().clone(),
        etl,
        config,
    );
    instance.start().await.unwrap();
    (
        World {
            instance,
            clock: w.clock,
            bus: w.bus,
        },
        faulty,
    )
}
