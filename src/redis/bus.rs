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
//! | `{freshcache}:delivered:<id>` | seed messages applied, for [`SEED_MESSAGE_WINDOW`] |
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

use super::fills::{FILLS_CHANNEL, Fills};
use super::link::{LinkError, RedisLink};
use crate::bus::{
    BumpMode, BumpOutcome, BumpRequest, Bus, BusError, CHANNEL, Delivered, InstanceReport,
    RawMessage, SEED_MESSAGE_WINDOW,
};
use crate::model::BoxFuture;
use crate::model::clock::{SharedClock, format_rfc3339};
use crate::model::events::{Event, EventKind};
use crate::model::versions::{TableId, Tables, VersionVector};

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

const BUMP: &str = r#"
local mode, batch, now, origin, test, maxlen, ts, window = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if window ~= '0' and not redis.call('SET', KEYS[10], '1', 'NX', 'PX', window) then
  return {0, '', 1, {}}
end
local bumped = {}
local overtaken = {}
for i = 9, #ARGV, 2 do
  local t, want = ARGV[i], tonumber(ARGV[i + 1])
  local b = redis.call('HGET', KEYS[2], t) or ''
  if mode == 'force' or (mode == 'advance' and b < batch) then
    local cur = tonumber(redis.call('HGET', KEYS[1], t) or '0')
    local res = tonumber(redis.call('HGET', KEYS[9], t) or '0')
    local v = want
    if v <= cur then
      if want > 0 then table.insert(overtaken, t) end
      v = math.max(cur, res) + 1
    end
    redis.call('HSET', KEYS[1], t, v)
    if v > res then redis.call('HSET', KEYS[9], t, v) end
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
if #bumped == 0 then return {0, '', 0, {}} end
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
return {seq, event, 0, overtaken}
"#;

/// Reserves one number per table above its version and above every number reserved before.
const RESERVE: &str = r#"
local out = {}
for i = 1, #ARGV do
  local t = ARGV[i]
  local cur = tonumber(redis.call('HGET', KEYS[1], t) or '0')
  local res = tonumber(redis.call('HGET', KEYS[2], t) or '0')
  local v = math.max(cur, res) + 1
  redis.call('HSET', KEYS[2], t, v)
  out[i] = v
end
return out
"#;

const PUBLISH: &str = r#"
local seq = redis.call('INCR', KEYS[1])
local body = string.gsub(ARGV[2], '^{"seq":0,', '{"seq":' .. seq .. ',', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'seq', seq, 'body', body)
redis.call('PUBLISH', 'freshcache:events', body)
return {seq, body}
"#;

const READ_LOG: &str = r#"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[2] then
  return {epoch, seq, redis.call('XRANGE', KEYS[2], ARGV[2], '+', 'COUNT', 1000)}
end
return {epoch, seq, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)}
"#;

const RAISE: &str = r#"
local raised = 0
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) > seq then redis.call('SET', KEYS[3], ARGV[1]) end
redis.call('HSET', KEYS[5], 'truth_epoch', ARGV[2])
for i = 3, #ARGV, 3 do
  local t, v, b = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local cur = tonumber(redis.call('HGET', KEYS[1], t) or '0')
  if v > cur then redis.call('HSET', KEYS[1], t, v); raised = raised + 1 end
  if v > tonumber(redis.call('HGET', KEYS[4], t) or '0') then redis.call('HSET', KEYS[4], t, v) end
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

fn deliver(inner: &Inner, events: Vec<Event>) -> usize {
    deliver_along_log(inner, events, None)
}

/// Sends to the feed the events not delivered yet; returns how many. With `after` (the sequence
/// number before the first event, as read along the log), a number that does not grow marks where
/// the numbering started again (the counter went back): what follows is new, whatever numbers it
/// reuses.
fn deliver_along_log(inner: &Inner, events: Vec<Event>, mut after: Option<u64>) -> usize {
    let mut delivered = inner.delivered.lock().unwrap_or_else(|p| p.into_inner());
    let mut n = 0;
    for e in events {
        if let Some(previous) = after.replace(e.seq)
            && e.seq <= previous
        {
            *delivered = Delivered::default();
        }
        if delivered.mark(e.seq) {
            n += 1;
            let _ = inner.feed.send(e);
        }
    }
    n
}

/// Reads the log after the last stream id seen (or, the first time, starts from its end).
///
/// Sequence numbers can be used again, and the new events must not pass for duplicates:
/// - a Redis that restarted empty starts a new log numbered from 1: the log carries an epoch (a
///   random token the first reader of a new log writes into `{freshcache}:meta`), and a new epoch
///   means reading the new log from its start with nothing counted as delivered;
/// - a Redis restored from an older state keeps the epoch, but its counter goes back: a counter
///   below what was already delivered forgets what was delivered, and along the log an entry
///   whose number does not grow marks where the numbering started again.
///
/// Either way a few old events may be delivered twice; none is lost.
async fn catch_up_inner(inner: &Inner) -> Result<usize, BusError> {
    let _one = inner.catching_up.lock().await;
    let (last, last_seq) = inner
        .last_read
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let first_contact = last.is_empty();
    // Taken before the read: every event delivered by then was numbered below the counter the
    // read returns, unless the counter went back.
    let delivered_before = inner
        .delivered
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .watermark;
    let (epoch, counter, entries) =
        read_log(inner, if first_contact { None } else { Some(&last) }).await?;
    let known = inner
        .epoch
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(epoch.clone());
    let new_log = known.is_some_and(|k| k != epoch);
    if first_contact {
        // The feed starts now; history is read with `history`.
        let (id, seq) = entries
            .into_iter()
            .next()
            .map(|(id, fields)| {
                let seq = parse_entry(&fields).map_or(0, |e| e.seq);
                (id, seq)
            })
            .unwrap_or_else(|| ("0-0".to_string(), 0));
        inner
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .raise_to(seq);
        *inner.last_read.lock().unwrap_or_else(|p| p.into_inner()) = (id, seq);
        return Ok(0);
    }
    if !new_log && counter < delivered_before {
        // Same log, but its counter went back (Redis restored from an older snapshot, a failover
        // to a replica that lagged): the numbers above it will be used again.
        tracing::warn!(
            "the event counter went back from {delivered_before} to {counter} (Redis restored from an older state): delivering by the log again"
        );
        *inner.delivered.lock().unwrap_or_else(|p| p.into_inner()) = Delivered::default();
    }
    let entries = if new_log {
        tracing::warn!(
            "the event log was recreated (Redis restarted empty): reading the new one from its start"
        );
        *inner.delivered.lock().unwrap_or_else(|p| p.into_inner()) = Delivered::default();
        read_log(inner, Some("0-0")).await?.2
    } else {
        entries
    };
    let mut events = Vec::with_capacity(entries.len());
    let mut newest = None;
    for (id, fields) in entries {
        let e = parse_entry(&fields);
        newest = Some((id, e.as_ref().map_or(0, |e| e.seq)));
        events.extend(e);
    }
    if let Some(n) = newest {
        *inner.last_read.lock().unwrap_or_else(|p| p.into_inner()) = n;
    } else if new_log {
        *inner.last_read.lock().unwrap_or_else(|p| p.into_inner()) = ("0-0".to_string(), 0);
    }
    let after = if new_log { 0 } else { last_seq };
    Ok(deliver_along_log(inner, events, Some(after)))
}

type LogEntry = (String, Vec<(String, String)>);

/// The log's epoch (set now if the log has none), its event counter, and its entries after
/// `after`, or with `None` its newest entry.
async fn read_log(
    inner: &Inner,
    after: Option<&str>,
) -> Result<(String, u64, Vec<LogEntry>), BusError> {
    let token = format!("{:016x}", fastrand::u64(..));
    let after = after.map(|a| format!("({a}"));
    inner
        .link
        .call(|mut c| async move {
            let mut inv = inner.read_log.key(META);
            inv.key(EVENTS).key(SEQ).arg(token);
            if let Some(a) = after {
                inv.arg(a);
            }
            inv.invoke_async(&mut c).await
        })
        .await
        .map_err(bus_err)
}

fn parse_entry(fields: &[(String, String)]) -> Option<Event> {
    let seq: u64 = fields.iter().find(|(k, _)| k == "seq")?.1.parse().ok()?;
    let body = &fields.iter().find(|(k, _)| k == "body")?.1;
    let mut e: Event = serde_json::from_str(body).ok()?;
    e.seq = seq;
    Some(e)
}

/// Catches up in the background, retrying for a few seconds: right after a restart the link
/// may still refuse calls while its breaker cools down.
fn spawn_catch_up(inner: Arc<Inner>) {
    tokio::spawn(async move {
        for _ in 0..15 {
            match catch_up_inner(&inner).await {
                Ok(_) => return,
                Err(e) => tracing::debug!("catching up on the event log failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
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
            inner.link.breaker().probe_soon();
            // Whatever was published while we were away: read it from the log; and any fill
            // notification may be lost, so every waiter looks again.
            spawn_catch_up(inner.clone());
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
                            // log tells which. Right after a restart the link may still refuse
                            // calls (its breaker cools down): keep trying for a few seconds, off
                            // this loop, so fill notifications keep flowing meanwhile.
                            spawn_catch_up(inner.clone());
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
                    SEED_MESSAGE_WINDOW.as_millis() as u64,
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
            Ok(n.max(0) as usize)
        })
    }

    fn raw_messages(&self) -> Option<broadcast::Receiver<RawMessage>> {
        Some(self.inner.raw.subscribe())
    }
}
