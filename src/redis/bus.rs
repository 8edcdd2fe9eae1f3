//! The bus on Redis: one version truth, event log and feed for every API server.
//!
//! | key / channel | holds |
//! |---|---|
//! | `{freshcache}:versions`, `:batches`, `:updated` | per table: version, last batch, when bumped (hashes) |
//! | `{freshcache}:meta` | batch label, last update, generation, the log's epoch |
//! | `{freshcache}:seq` | the event sequence counter |
//! | `{freshcache}:events` | the durable event log: a stream capped at [`LOG_LIMIT`] entries |
//! | `{freshcache}:instances` | each instance's latest report (its heartbeat) |
//! | `{freshcache}:reserved` | per table: the highest version number handed out (never reused) |
//! | `{freshcache}:delivered:<id>` | plain messages applied, for [`PLAIN_MESSAGE_WINDOW`] |
//! | `warehouse_version`, `warehouse_last_update` | the baseline's keys, kept as the baseline has them |
//! | channel `warehouse_updated` | the baseline's message; ours add `versions`, `batch`, `freshcache_seq` |
//! | channel `freshcache:events` | every logged event, as JSON |
//! | channel `freshcache:fills` | "this entry was stored" (see the store) |
//!
//! A bump is one script: the versions, the baseline's two keys, the log entry and both publishes happen
//! together or not at all. The subscriber reconnects by itself; after a reconnect it reads the log
//! from where it stopped (`catch_up`), and a gap in event sequence numbers triggers the same. A
//! message from another publisher (the baseline's job, `redis-cli PUBLISH`) is handed to the instance,
//! which checks it and applies it exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use tokio::sync::broadcast;

use super::fills::{FILLS_CHANNEL, Fills};
use super::link::{LinkError, RedisLink};
use crate::bus::{
    BumpMode, BumpOutcome, BumpRequest, Bus, BusError, CHANNEL, Delivered, InstanceReport,
    PLAIN_MESSAGE_WINDOW, RawMessage,
};
use crate::model::BoxFuture;
use crate::model::clock::{SharedClock, format_rfc3339};
use crate::model::events::{Event, EventKind};
use crate::model::versions::{TableId, Tables, VersionVector};

mod feed;
use feed::*;

mod scripts;
use scripts::*;

/// Events kept in the log.
pub const LOG_LIMIT: u64 = 10_000;
/// The channel carrying every logged event.
pub const EVENTS_CHANNEL: &str = "freshcache:events";

const VERSIONS: &str = "{freshcache}:versions";
const BATCHES: &str = "{freshcache}:batches";
const UPDATED: &str = "{freshcache}:updated";
const META: &str = "{freshcache}:meta";
const SEQ: &str = "{freshcache}:seq";
const EVENTS: &str = "{freshcache}:events";
const INSTANCES: &str = "{freshcache}:instances";
const RESERVED: &str = "{freshcache}:reserved";

struct Inner {
    link: Arc<RedisLink>,
    tables: Tables,
    clock: SharedClock,
    origin: String,
    fills: Arc<Fills>,
    feed: broadcast::Sender<Event>,
    raw: broadcast::Sender<RawMessage>,
    delivered: Mutex<Delivered>,
    /// The id and sequence number of the last log entry read.
    last_read: Mutex<(String, u64)>,
    /// The epoch of the log last read.
    epoch: Mutex<Option<String>>,
    /// One catch-up at a time: two reading the same entries would each decide the log restarted.
    catching_up: tokio::sync::Mutex<()>,
    bump: Script,
    publish: Script,
    raise: Script,
    reserve: Script,
    read_log: Script,
}

/// The Redis bus. Cheap to clone.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.inner.link.describe())
    }
}

fn bus_err(e: LinkError) -> BusError {
    BusError(e.to_string())
}

impl RedisBus {
    /// A bus on `link` with no store beside it (a publisher, a reader of the truth); starts its
    /// subscriber (which reconnects by itself) on the current runtime. A bus that serves an
    /// instance is opened with its store ([`Redis::open`](super::Redis::open)).
    pub fn start(link: Arc<RedisLink>, tables: Tables, clock: SharedClock) -> Self {
        Self::start_with_fills(link, tables, clock, Arc::default())
    }

    /// A bus whose subscriber wakes the waiters of the store that shares `fills`.
    pub(super) fn start_with_fills(
        link: Arc<RedisLink>,
        tables: Tables,
        clock: SharedClock,
        fills: Arc<Fills>,
    ) -> Self {
        let (feed, _) = broadcast::channel(crate::bus::local::FEED_CAPACITY);
        let (raw, _) = broadcast::channel(1024);
        let bus = Self {
            inner: Arc::new(Inner {
                link,
                tables,
                clock,
                origin: crate::model::events::origin(),
                fills,
                feed,
                raw,
                delivered: Mutex::new(Delivered::default()),
                last_read: Mutex::new((String::new(), 0)),
                epoch: Mutex::new(None),
                catching_up: tokio::sync::Mutex::new(()),
                bump: Script::new(BUMP),
                publish: Script::new(PUBLISH),
                raise: Script::new(RAISE),
                reserve: Script::new(RESERVE),
                read_log: Script::new(READ_LOG),
            }),
        };
        let weak = Arc::downgrade(&bus.inner);
        // Supervised: a panic in the subscriber (a bug) must not stop the feed for good.
        tokio::spawn(async move {
            loop {
                match tokio::spawn(subscribe_loop(weak.clone())).await {
                    Err(e) if e.is_panic() && weak.strong_count() > 0 => {
                        tracing::error!("the Redis subscriber failed and is restarted: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    _ => return,
                }
            }
        });
        bus
    }

    fn deliver(&self, events: Vec<Event>) -> usize {
        deliver(&self.inner, events)
    }
}

/// One hash, whole.
async fn hgetall(inner: &Inner, key: &'static str) -> Result<BTreeMap<String, String>, BusError> {
    inner
        .link
        .call(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
        .await
        .map_err(bus_err)
}

async fn read_versions(inner: &Inner) -> Result<VersionVector, BusError> {
    type H = BTreeMap<String, String>;
    let (versions, batches, updated, meta): (H, H, H, H) = inner
        .link
        .call(|mut c| async move {
            redis::pipe()
                .cmd("HGETALL")
                .arg(VERSIONS)
                .cmd("HGETALL")
                .arg(BATCHES)
                .cmd("HGETALL")
                .arg(UPDATED)
                .cmd("HGETALL")
                .arg(META)
                .query_async(&mut c)
                .await
        })
        .await
        .map_err(bus_err)?;
    let parts = inner
        .tables
        .names()
        .iter()
        .map(|t| {
            (
                versions.get(t).and_then(|v| v.parse().ok()).unwrap_or(0),
                Arc::from(batches.get(t).map(String::as_str).unwrap_or("")),
                updated.get(t).and_then(|v| v.parse().ok()).unwrap_or(0),
            )
        })
        .collect();
    let mut truth = VersionVector::from_parts(
        parts,
        Arc::from(meta.get("batch").map(String::as_str).unwrap_or("")),
        meta.get("last_update_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        meta.get("generation")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    truth.epoch = meta
        .get("truth_epoch")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(truth)
}

impl Bus for RedisBus {
    fn describe(&self) -> String {
        self.inner.link.describe().to_string()
    }

    fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    fn versions(&self) -> BoxFuture<'_, Result<Arc<VersionVector>, BusError>> {
        Box::pin(async move { read_versions(&self.inner).await.map(Arc::new) })
    }

    fn bump_with<'a>(
        &'a self,
        request: BumpRequest<'a>,
    ) -> BoxFuture<'a, Result<BumpOutcome, BusError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let now = inner.clock.now_ms();
            let mode_arg = match request.mode {
                BumpMode::Advance => "advance",
                BumpMode::Force => "force",
                BumpMode::Adopt => "adopt",
            };
            let targets: Vec<(String, u64)> = request
                .tables
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let want = request.reserved.get(i).copied().unwrap_or(0);
                    (inner.tables.name(*t).to_string(), want)
                })
                .collect();
            let (once_key, window) = match request.once {
                Some(id) => (
                    format!("{{freshcache}}:delivered:{id:016x}"),
                    crate::model::num::ms(PLAIN_MESSAGE_WINDOW),
                ),
                None => ("{freshcache}:delivered:-".to_string(), 0),
            };
            let script = &inner.bump;
            let origin = inner.origin.clone();
            let (batch, test) = (request.batch, request.test);
            let (seq, body, duplicate, overtaken): (u64, String, u8, Vec<String>) = inner
                .link
                .call(|mut c| async move {
                    let mut inv = script.prepare_invoke();
                    for k in [VERSIONS, BATCHES, UPDATED, META, SEQ, EVENTS] {
                        inv.key(k);
                    }
                    inv.key("warehouse_version").key("warehouse_last_update");
                    inv.key(RESERVED).key(once_key.as_str());
                    inv.arg(mode_arg)
                        .arg(batch)
                        .arg(now)
                        .arg(origin)
                        .arg(if test { "1" } else { "0" })
                        .arg(LOG_LIMIT)
                        .arg(format_rfc3339(now))
                        .arg(window);
                    for (name, want) in &targets {
                        inv.arg(name).arg(*want);
                    }
                    inv.invoke_async(&mut c).await
                })
                .await
                .map_err(bus_err)?;
            let versions = Arc::new(read_versions(inner).await?);
            let event = if seq == 0 {
                None
            } else {
                let mut e: Event = serde_json::from_str(&body)
                    .map_err(|e| BusError(format!("unreadable event from the bump script: {e}")))?;
                e.seq = seq;
                Some(e)
            };
            let bumped = match &event {
                Some(Event {
                    kind: EventKind::WarehouseUpdated { tables: t, .. },
                    ..
                }) => t.iter().filter_map(|n| inner.tables.id(n).ok()).collect(),
                _ => Vec::new(),
            };
            if let Some(e) = &event {
                self.deliver(vec![e.clone()]);
            }
            Ok(BumpOutcome {
                versions,
                bumped,
                event,
                overtaken: overtaken
                    .iter()
                    .filter_map(|n| inner.tables.id(n).ok())
                    .collect(),
                duplicate: duplicate == 1,
            })
        })
    }

    fn reserved(&self) -> BoxFuture<'_, Result<Vec<u64>, BusError>> {
        Box::pin(async move {
            let all = hgetall(&self.inner, RESERVED).await?;
            Ok(self
                .inner
                .tables
                .names()
                .iter()
                .map(|n| all.get(n).and_then(|v| v.parse().ok()).unwrap_or(0))
                .collect())
        })
    }

    fn reserve<'a>(&'a self, tables: &'a [TableId]) -> BoxFuture<'a, Result<Vec<u64>, BusError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let names: Vec<&str> = tables.iter().map(|t| inner.tables.name(*t)).collect();
            let script = &inner.reserve;
            let reserved: Vec<u64> = inner
                .link
                .call(|mut c| async move {
                    let mut inv = script.key(VERSIONS);
                    inv.key(RESERVED);
                    for n in &names {
                        inv.arg(*n);
                    }
                    inv.invoke_async(&mut c).await
                })
                .await
                .map_err(bus_err)?;
            if reserved.len() != tables.len() {
                return Err(BusError(format!(
                    "the reserve script returned {} numbers for {} tables",
                    reserved.len(),
                    tables.len()
                )));
            }
            Ok(reserved)
        })
    }

    fn publish(&self, kind: EventKind) -> BoxFuture<'_, Result<Event, BusError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let (mut event, body) =
                crate::bus::draft_event(inner.clock.now_ms(), &inner.origin, kind)?;
            let script = &inner.publish;
            let (seq, _): (u64, String) = inner
                .link
                .call(|mut c| async move {
                    script
                        .key(SEQ)
                        .key(EVENTS)
                        .arg(LOG_LIMIT)
                        .arg(body)
                        .invoke_async(&mut c)
                        .await
                })
                .await
                .map_err(bus_err)?;
            event.seq = seq;
            self.deliver(vec![event.clone()]);
            Ok(event)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.feed.subscribe()
    }

    fn history(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Event>, BusError>> {
        Box::pin(async move {
            let count = (limit as u64).min(LOG_LIMIT * 2);
            let entries: Vec<(String, Vec<(String, String)>)> = self
                .inner
                .link
                .call_within(self.inner.link.response_timeout() * 8, |mut c| async move {
                    redis::cmd("XREVRANGE")
                        .arg(EVENTS)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(count)
                        .query_async(&mut c)
                        .await
                })
                .await
                .map_err(bus_err)?;
            let mut events: Vec<Event> = entries
                .iter()
                .filter_map(|(_, f)| parse_entry(f))
                .filter(|e| e.seq > after)
                .collect();
            events.reverse();
            Ok(events)
        })
    }

    fn report<'a>(&'a self, report: &'a InstanceReport) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let body = serde_json::to_string(report).map_err(|e| BusError(e.to_string()))?;
            let id = report.id.clone();
            self.inner
                .link
                .call(|mut c| async move {
                    redis::cmd("HSET")
                        .arg(INSTANCES)
                        .arg(id)
                        .arg(body)
                        .exec_async(&mut c)
                        .await
                })
                .await
                .map_err(bus_err)
        })
    }

    fn leave<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let id = id.to_string();
            self.inner
                .link
                .call(|mut c| async move {
                    redis::cmd("HDEL")
                        .arg(INSTANCES)
                        .arg(id)
                        .exec_async(&mut c)
                        .await
                })
                .await
                .map_err(bus_err)
        })
    }

    fn reports(&self, live_ms: u64) -> BoxFuture<'_, Result<Vec<InstanceReport>, BusError>> {
        Box::pin(async move {
            let all = hgetall(&self.inner, INSTANCES).await?;
            let now = self.inner.clock.now_ms();
            let mut live = Vec::new();
            let mut dead = Vec::new();
            for (id, body) in all {
                match serde_json::from_str::<InstanceReport>(&body) {
                    Ok(r) if r.at_ms + live_ms >= now => live.push(r),
                    Ok(r) if r.at_ms + 3_600_000 < now => dead.push(id),
                    Ok(_) => {}
                    Err(_) => dead.push(id),
                }
            }
            if !dead.is_empty() {
                // Housekeeping: the dead stay listed (as lost) until a later round succeeds.
                let _ = self
                    .inner
                    .link
                    .call(|mut c| async move {
                        redis::cmd("HDEL")
                            .arg(INSTANCES)
                            .arg(dead)
                            .exec_async(&mut c)
                            .await
                    })
                    .await;
            }
            Ok(live)
        })
    }

    fn catch_up(&self) -> BoxFuture<'_, Result<usize, BusError>> {
        Box::pin(catch_up_inner(&self.inner))
    }

    fn raise<'a>(&'a self, versions: &'a VersionVector) -> BoxFuture<'a, Result<usize, BusError>> {
        Box::pin(async move {
            let inner = &self.inner;
            // The event sequence restarts too when the truth lost its state: it goes back above
            // what this process has delivered, so new events are not taken for old ones.
            let watermark = inner.delivered.lock().watermark;
            let mut args: Vec<String> = vec![watermark.to_string(), versions.epoch.to_string()];
            for t in inner.tables.ids() {
                args.push(inner.tables.name(t).to_string());
                args.push(versions.version(t).to_string());
                args.push(versions.table_batch(t).to_string());
            }
            let script = &inner.raise;
            let n: i64 = inner
                .link
                .call(|mut c| async move {
                    let mut inv = script.prepare_invoke();
                    inv.key(VERSIONS)
                        .key(BATCHES)
                        .key(SEQ)
                        .key(RESERVED)
                        .key(META);
                    for a in &args {
                        inv.arg(a);
                    }
                    inv.invoke_async(&mut c).await
                })
                .await
                .map_err(bus_err)?;
            Ok(usize::try_from(n.max(0)).unwrap_or(usize::MAX))
        })
    }

    fn raw_messages(&self) -> Option<broadcast::Receiver<RawMessage>> {
        Some(self.inner.raw.subscribe())
    }
}
