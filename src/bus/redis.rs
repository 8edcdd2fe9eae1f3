//! The bus on Redis: one version truth, event log and feed for every API server.
//!
//! | key / channel | holds |
//! |---|---|
//! | `{freshcache}:versions`, `:batches`, `:updated` | per table: version, last batch, when bumped (hashes) |
//! | `{freshcache}:meta` | batch label, last update, generation |
//! | `{freshcache}:seq` | the event sequence counter |
//! | `{freshcache}:events` | the durable event log: a stream capped at [`LOG_LIMIT`] entries |
//! | `{freshcache}:instances` | each instance's latest report (its heartbeat) |
//! | `{freshcache}:delivered:<id>` | seed messages already applied (exactly once), for a day |
//! | `warehouse_version`, `warehouse_last_update` | the seed's keys, kept as the seed has them |
//! | channel `warehouse_updated` | the seed's message; ours add `versions`, `batch`, `freshcache_seq` |
//! | channel `freshcache:events` | every logged event, as JSON |
//! | channel `freshcache:fills` | "this entry was stored" (see the store) |
//!
//! A bump is one script: the versions, the seed's two keys, the log entry and both publishes happen
//! together or not at all. The subscriber reconnects by itself; after a reconnect it reads the log
//! from where it stopped (`catch_up`), and a gap in event sequence numbers triggers the same. A
//! message from another publisher (the seed's job, `redis-cli PUBLISH`) is handed to the instance,
//! which checks it and applies it exactly once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use tokio::sync::broadcast;

use super::{
    BumpMode, BumpOutcome, Bus, BusError, CHANNEL, Delivered, Event, EventKind, InstanceReport,
    RawMessage,
};
use crate::engine::clock::{SharedClock, format_rfc3339};
use crate::engine::versions::{TableId, Tables, VersionVector};
use crate::redis_link::{LinkError, RedisLink};
use crate::store::BoxFuture;
use crate::store::redis::{FILLS_CHANNEL, Fills};

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

const BUMP: &str = r#"
local mode, batch, now, origin, test, maxlen, ts = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local bumped = {}
for i = 8, #ARGV do
  local t = ARGV[i]
  local b = redis.call('HGET', KEYS[2], t) or ''
  if mode == 'force' or (mode == 'advance' and b < batch) then
    redis.call('HINCRBY', KEYS[1], t, 1)
    redis.call('HSET', KEYS[3], t, ARGV[3])
    if mode == 'advance' then redis.call('HSET', KEYS[2], t, batch) end
    table.insert(bumped, t)
  elseif mode == 'adopt' and b == '' then
    redis.call('HSET', KEYS[2], t, batch)
    if not redis.call('HGET', KEYS[1], t) then redis.call('HSET', KEYS[1], t, 0) end
  end
end
local label = redis.call('HGET', KEYS[4], 'batch') or ''
if batch > label and (mode ~= 'force' or #bumped > 0) then
  redis.call('HSET', KEYS[4], 'batch', batch)
  label = batch
end
if #bumped == 0 then return {0, ''} end
redis.call('HSET', KEYS[4], 'last_update_ms', ARGV[3])
redis.call('HINCRBY', KEYS[4], 'generation', 1)
redis.call('SET', KEYS[7], label)
redis.call('SET', KEYS[8], string.format('%.3f', now / 1000))
local seq = redis.call('INCR', KEYS[5])
local all = redis.call('HGETALL', KEYS[1])
local versions = {}
for i = 1, #all, 2 do versions[all[i]] = tonumber(all[i + 1]) end
local event = cjson.encode({seq = seq, at_ms = now, origin = origin, type = 'warehouse_updated',
  timestamp = ts, tables = bumped, versions = versions, batch = batch, test = (test == '1')})
redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'seq', seq, 'body', event)
redis.call('PUBLISH', 'freshcache:events', event)
redis.call('PUBLISH', 'warehouse_updated', cjson.encode({timestamp = ts, tables = bumped,
  versions = versions, batch = batch, test = (test == '1'), freshcache_seq = seq}))
return {seq, event}
"#;

const PUBLISH: &str = r#"
local seq = redis.call('INCR', KEYS[1])
local body = string.gsub(ARGV[2], '^{"seq":0,', '{"seq":' .. seq .. ',', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'seq', seq, 'body', body)
redis.call('PUBLISH', 'freshcache:events', body)
return {seq, body}
"#;

const RAISE: &str = r#"
local raised = 0
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) > seq then redis.call('SET', KEYS[3], ARGV[1]) end
for i = 2, #ARGV, 3 do
  local t, v, b = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local cur = tonumber(redis.call('HGET', KEYS[1], t) or '0')
  if v > cur then redis.call('HSET', KEYS[1], t, v); raised = raised + 1 end
  if b > (redis.call('HGET', KEYS[2], t) or '') then redis.call('HSET', KEYS[2], t, b) end
end
return raised
"#;

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
    bump: Script,
    publish: Script,
    raise: Script,
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
    /// A bus on `link`; starts its subscriber (which reconnects by itself) on the current runtime.
    pub fn start(
        link: Arc<RedisLink>,
        tables: Tables,
        clock: SharedClock,
        fills: Arc<Fills>,
    ) -> Self {
        let (feed, _) = broadcast::channel(super::local::FEED_CAPACITY);
        let (raw, _) = broadcast::channel(1024);
        let bus = Self {
            inner: Arc::new(Inner {
                link,
                tables,
                clock,
                origin: super::origin(),
                fills,
                feed,
                raw,
                delivered: Mutex::new(Delivered::default()),
                last_read: Mutex::new((String::new(), 0)),
                bump: Script::new(BUMP),
                publish: Script::new(PUBLISH),
                raise: Script::new(RAISE),
            }),
        };
        let weak = Arc::downgrade(&bus.inner);
        tokio::spawn(async move { subscribe_loop(weak).await });
        bus
    }

    fn deliver(&self, events: Vec<Event>) -> usize {
        deliver(&self.inner, events)
    }
}

fn deliver(inner: &Inner, events: Vec<Event>) -> usize {
    let mut delivered = inner.delivered.lock().unwrap_or_else(|p| p.into_inner());
    let mut n = 0;
    for e in events {
        if delivered.mark(e.seq) {
            n += 1;
            let _ = inner.feed.send(e);
        }
    }
    n
}

/// Reads the log after the last stream id seen (or, the first time, starts from its end).
async fn catch_up_inner(inner: &Inner) -> Result<usize, BusError> {
    let (last, last_seq) = inner
        .last_read
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let start = if last.is_empty() {
        // First contact: history is read with `history`; the feed starts now.
        let newest: Vec<(String, Vec<(String, String)>)> = inner
            .link
            .call(|mut c| async move {
                redis::cmd("XREVRANGE")
                    .arg(EVENTS)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(bus_err)?;
        let (id, seq) = newest
            .first()
            .map(|(id, fields)| {
                let seq = fields
                    .iter()
                    .find(|(k, _)| k == "seq")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                (id.clone(), seq)
            })
            .unwrap_or_else(|| ("0-0".to_string(), 0));
        {
            let mut d = inner.delivered.lock().unwrap_or_else(|p| p.into_inner());
            if d.watermark < seq {
                *d = Delivered {
                    watermark: seq,
                    ..Delivered::default()
                };
            }
        }
        *inner.last_read.lock().unwrap_or_else(|p| p.into_inner()) = (id, seq);
        return Ok(0);
    } else {
        format!("({last}")
    };
    let entries: Vec<(String, Vec<(String, String)>)> = inner
        .link
        .call(|mut c| async move {
            redis::cmd("XRANGE")
                .arg(EVENTS)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
        })
        .await
        .map_err(bus_err)?;
    let mut events = Vec::with_capacity(entries.len());
    let mut newest = None;
    for (id, fields) in entries {
        if let Some(e) = parse_entry(&fields) {
            newest = Some((id, e.seq));
            events.push(e);
        } else {
            newest = Some((id, newest.as_ref().map_or(last_seq, |n| n.1)));
        }
    }
    if let Some(n) = newest {
        *inner.last_read.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }
    // Sequence numbers only grow along the log; one at or below the last entry read means the
    // log was recreated (a Redis restarted empty) and its numbering started again. Forget what
    // was delivered, or the new events would pass for duplicates.
    if events.first().is_some_and(|e| e.seq <= last_seq) {
        *inner.delivered.lock().unwrap_or_else(|p| p.into_inner()) = Delivered::default();
    }
    Ok(deliver(inner, events))
}

fn parse_entry(fields: &[(String, String)]) -> Option<Event> {
    let seq: u64 = fields.iter().find(|(k, _)| k == "seq")?.1.parse().ok()?;
    let body = &fields.iter().find(|(k, _)| k == "body")?.1;
    let mut e: Event = serde_json::from_str(body).ok()?;
    e.seq = seq;
    Some(e)
}

/// Keeps a pub/sub connection subscribed, reconnecting with a bounded backoff, until the bus is
/// dropped.
async fn subscribe_loop(weak: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let limit = inner.link.connect_timeout() * 2;
        let client = inner.link.client().clone();
        drop(inner);
        let connected = tokio::time::timeout(limit, async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&[CHANNEL, EVENTS_CHANNEL, FILLS_CHANNEL])
                .await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        let Ok(Ok(ps)) = connected else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        backoff = Duration::from_millis(100);
        {
            let Some(inner) = weak.upgrade() else { return };
            // Whatever was published while we were away: read it from the log; and any fill
            // notification may be lost, so every waiter looks again.
            let _ = catch_up_inner(&inner).await;
            inner.fills.notify_all();
        }
        let mut stream = ps.into_on_message();
        while let Some(msg) = stream.next().await {
            let Some(inner) = weak.upgrade() else { return };
            let channel = msg.get_channel_name().to_string();
            let payload = msg.get_payload_bytes().to_vec();
            match channel.as_str() {
                FILLS_CHANNEL => {
                    if let Ok(key) = std::str::from_utf8(&payload) {
                        inner.fills.notify(key);
                    }
                }
                EVENTS_CHANNEL => {
                    if let Ok(e) = serde_json::from_slice::<Event>(&payload) {
                        let gap = {
                            let d = inner.delivered.lock().unwrap_or_else(|p| p.into_inner());
                            e.seq > d.watermark + 1 && !d.above.contains(&(e.seq - 1))
                        };
                        if deliver(&inner, vec![e]) == 0 || gap {
                            // A sequence number was skipped (a message was lost), or one seen
                            // before came again (ours echoed, or a log that started over): the
                            // log tells which.
                            let _ = catch_up_inner(&inner).await;
                        }
                    }
                }
                _ => {
                    // Ours carry `freshcache_seq` and were delivered on the events channel just
                    // before (same connection, same order); anything else is for the instance
                    // to check.
                    let ours = serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|v| v.get("freshcache_seq").and_then(|s| s.as_u64()))
                        .is_some_and(|seq| {
                            let d = inner.delivered.lock().unwrap_or_else(|p| p.into_inner());
                            seq <= d.watermark || d.above.contains(&seq)
                        });
                    if !ours {
                        let _ = inner.raw.send(RawMessage { channel, payload });
                    }
                }
            }
        }
        // The server closed the connection (restart, CLIENT KILL): subscribe again.
    }
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
    Ok(VersionVector::from_parts(
        parts,
        Arc::from(meta.get("batch").map(String::as_str).unwrap_or("")),
        meta.get("last_update_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        meta.get("generation")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    ))
}

impl Bus for RedisBus {
    fn describe(&self) -> String {
        self.inner.link.describe().to_string()
    }

    fn versions(&self) -> BoxFuture<'_, Result<Arc<VersionVector>, BusError>> {
        Box::pin(async move { read_versions(&self.inner).await.map(Arc::new) })
    }

    fn bump<'a>(
        &'a self,
        tables: &'a [TableId],
        batch: &'a str,
        mode: BumpMode,
        test: bool,
    ) -> BoxFuture<'a, Result<BumpOutcome, BusError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let now = inner.clock.now_ms();
            let names: Vec<String> = tables
                .iter()
                .map(|t| inner.tables.name(*t).to_string())
                .collect();
            let mode_arg = match mode {
                BumpMode::Advance => "advance",
                BumpMode::Force => "force",
                BumpMode::Adopt => "adopt",
            };
            let script = &inner.bump;
            let origin = inner.origin.clone();
            let (seq, body): (u64, String) = inner
                .link
                .call(|mut c| async move {
                    let mut inv = script.prepare_invoke();
                    for k in [VERSIONS, BATCHES, UPDATED, META, SEQ, EVENTS] {
                        inv.key(k);
                    }
                    inv.key("warehouse_version").key("warehouse_last_update");
                    inv.arg(mode_arg)
                        .arg(batch)
                        .arg(now)
                        .arg(origin)
                        .arg(if test { "1" } else { "0" })
                        .arg(LOG_LIMIT)
                        .arg(format_rfc3339(now));
                    for n in &names {
                        inv.arg(n);
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
            })
        })
    }

    fn publish(&self, kind: EventKind) -> BoxFuture<'_, Result<Event, BusError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut event = Event {
                seq: 0,
                at_ms: inner.clock.now_ms(),
                origin: inner.origin.clone(),
                kind,
            };
            let body = serde_json::to_string(&event).map_err(|e| BusError(e.to_string()))?;
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

    fn first_delivery(&self, message_id: u64) -> BoxFuture<'_, Result<bool, BusError>> {
        Box::pin(async move {
            let key = format!("{{freshcache}}:delivered:{message_id:016x}");
            let set: Option<String> = self
                .inner
                .link
                .call(|mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(86_400_000u64)
                        .query_async(&mut c)
                        .await
                })
                .await
                .map_err(bus_err)?;
            Ok(set.is_some())
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

    fn reports(&self, live_ms: u64) -> BoxFuture<'_, Result<Vec<InstanceReport>, BusError>> {
        Box::pin(async move {
            let all: BTreeMap<String, String> = self
                .inner
                .link
                .call(|mut c| async move {
                    redis::cmd("HGETALL")
                        .arg(INSTANCES)
                        .query_async(&mut c)
                        .await
                })
                .await
                .map_err(bus_err)?;
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
            let watermark = inner
                .delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .watermark;
            let mut args: Vec<String> = vec![watermark.to_string()];
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
                    inv.key(VERSIONS).key(BATCHES).key(SEQ);
                    for a in &args {
                        inv.arg(a);
                    }
                    inv.invoke_async(&mut c).await
                })
                .await
                .map_err(bus_err)?;
            Ok(n.max(0) as usize)
        })
    }

    fn raw_messages(&self) -> Option<broadcast::Receiver<RawMessage>> {
        Some(self.inner.raw.subscribe())
    }
}
