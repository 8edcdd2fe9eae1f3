//! The live feed and its log: events delivered in log order from the subscription, a catch-up
//! read of the log after a gap, and the subscription loop that reconnects.

use super::*;

pub(super) fn deliver(inner: &Inner, events: Vec<Event>) -> usize {
    deliver_along_log(inner, events, None)
}

/// Sends to the feed the events not delivered yet; returns how many. With `after` (the sequence
/// number before the first event, as read along the log), a number that does not grow marks where
/// the numbering started again (the counter went back): what follows is new, whatever numbers it
/// reuses.
pub(super) fn deliver_along_log(
    inner: &Inner,
    events: Vec<Event>,
    mut after: Option<u64>,
) -> usize {
    let mut delivered = inner.delivered.lock();
    let mut n = 0;
    for e in events {
        if let Some(previous) = after.replace(e.seq)
            && e.seq <= previous
        {
            *delivered = Delivered::default();
        }
        if delivered.mark(e.seq) {
            n += 1;
            // Fails only when no one subscribes now; the log keeps the event.
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
pub(super) async fn catch_up_inner(inner: &Inner) -> Result<usize, BusError> {
    let _one = inner.catching_up.lock().await;
    let (last, last_seq) = inner.last_read.lock().clone();
    let first_contact = last.is_empty();
    // Taken before the read: every event delivered by then was numbered below the counter the
    // read returns, unless the counter went back.
    let delivered_before = inner.delivered.lock().watermark;
    let (epoch, counter, entries) =
        read_log(inner, if first_contact { None } else { Some(&last) }).await?;
    let known = inner.epoch.lock().replace(epoch.clone());
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
        inner.delivered.lock().raise_to(seq);
        *inner.last_read.lock() = (id, seq);
        return Ok(0);
    }
    if !new_log && counter < delivered_before {
        // Same log, but its counter went back (Redis restored from an older snapshot, a failover
        // to a replica that lagged): the numbers above it will be used again.
        tracing::warn!(
            "the event counter went back from {delivered_before} to {counter} (Redis restored from an older state): delivering by the log again"
        );
        *inner.delivered.lock() = Delivered::default();
    }
    let entries = if new_log {
        tracing::warn!(
            "the event log was recreated (Redis restarted empty): reading the new one from its start"
        );
        *inner.delivered.lock() = Delivered::default();
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
        *inner.last_read.lock() = n;
    } else if new_log {
        *inner.last_read.lock() = ("0-0".to_string(), 0);
    }
    let after = if new_log { 0 } else { last_seq };
    Ok(deliver_along_log(inner, events, Some(after)))
}

pub(super) type LogEntry = (String, Vec<(String, String)>);

/// The log's epoch (set now if the log has none), its event counter, and its entries after
/// `after`, or with `None` its newest entry.
pub(super) async fn read_log(
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

pub(super) fn parse_entry(fields: &[(String, String)]) -> Option<Event> {
    let seq: u64 = fields.iter().find(|(k, _)| k == "seq")?.1.parse().ok()?;
    let body = &fields.iter().find(|(k, _)| k == "body")?.1;
    let mut e: Event = serde_json::from_str(body).ok()?;
    e.seq = seq;
    Some(e)
}

/// Catches up in the background, retrying for a few seconds: right after a restart the link
/// may still refuse calls while its breaker cools down.
pub(super) fn spawn_catch_up(inner: Arc<Inner>) {
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
pub(super) async fn subscribe_loop(weak: std::sync::Weak<Inner>) {
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
                            let d = inner.delivered.lock();
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
                            let d = inner.delivered.lock();
                            seq <= d.watermark || d.above.contains(&seq)
                        });
                    if !ours {
                        // Fails only when no one listens for raw messages now.
                        let _ = inner.raw.send(RawMessage { channel, payload });
                    }
                }
            }
        }
        // The server closed the connection (restart, CLIENT KILL): subscribe again.
    }
}
