//! Incoming messages on `warehouse_updated`, from any publisher: checked, refused as bad input
//! when malformed, taken as a hint to re-read the truth when they carry versions, and — the
//! plain format — bumped once however many instances receive them, retried until it lands.

use std::sync::atomic::Ordering;

use super::{Instance, InstanceError, check_batch_label};
use crate::bus::{BumpMode, BumpRequest, parse_warehouse_updated};
use crate::model::clock::format_batch_label;
use crate::model::events::EventKind;
use crate::model::versions::TableId;

/// Foreign messages not applied yet because their bump failed.
#[derive(Debug, Clone)]
pub(super) struct PendingPlain {
    tables: Vec<TableId>,
    label: String,
    test: bool,
    /// The message's id (merged ids once too many wait: a spare bump, never a lost one).
    id: u64,
}

/// Foreign messages kept for retry, at most; past that the oldest two are merged into one.
const PENDING_PLAIN_LIMIT: usize = 256;

impl Instance {
    /// A raw message from the `warehouse_updated` channel, from any publisher. Malformed ones are
    /// counted and shown as bad input and change nothing. One with versions (ours, or a
    /// forgery) is a hint to re-read the truth. The baseline's messages (no
    /// versions) bump their tables once however many instances receive them: the dedupe mark
    /// and the bump are one atomic step on the bus, and a bump that fails is retried until it
    /// lands, so an update is never marked applied without being applied.
    pub async fn ingest(&self, source: &str, payload: &[u8]) -> Result<(), InstanceError> {
        let tables = self.inner.engine.catalog().tables().clone();
        let message = match parse_warehouse_updated(payload, &tables) {
            Ok(m) => m,
            Err(bad) => {
                self.refuse(source, bad.reason.clone(), bad.excerpt).await;
                return Err(InstanceError::BadInput(bad.reason));
            }
        };
        if let Some(versions) = &message.versions {
            let by_name = versions
                .iter()
                .map(|(t, v)| (tables.name(*t).to_string(), *v))
                .collect();
            // Another publisher's message: when it bumped is not known.
            self.hint(&by_name, None, source).await;
            return Ok(());
        }
        let label = match &message.batch {
            Some(batch) => match check_batch_label(batch, self.inner.engine.clock().now_ms()) {
                Ok(()) => batch.clone(),
                Err(e) => {
                    let reason = format!("{e}");
                    self.refuse(source, reason.clone(), crate::bus::excerpt(payload, 120))
                        .await;
                    return Err(InstanceError::BadInput(reason));
                }
            },
            // Labelled by the bus's (wall) clock: the label lands in shared state.
            None => format_batch_label(self.inner.bus.clock().now_ms()),
        };
        let pending = PendingPlain {
            tables: message.tables.clone(),
            label,
            test: message.test,
            id: message.id,
        };
        self.apply_plain(pending).await
    }

    /// Bumps a foreign message's tables once (see [`Instance::ingest`]); on failure keeps it
    /// for the next sync tick, merged with any other waiting.
    async fn apply_plain(&self, message: PendingPlain) -> Result<(), InstanceError> {
        let mut request = BumpRequest::new(&message.tables, &message.label, BumpMode::Force);
        request.test = message.test;
        request.once = Some(message.id);
        match self.inner.bus.bump_with(request).await {
            Ok(outcome) => {
                self.apply_local(&outcome.versions);
                Ok(())
            }
            Err(e) => {
                self.inner
                    .counters
                    .failed_bumps
                    .fetch_add(1, Ordering::Relaxed);
                let names: Vec<&str> = message
                    .tables
                    .iter()
                    .map(|t| self.inner.engine.catalog().tables().name(*t))
                    .collect();
                tracing::warn!(
                    tables = %names.join(", "),
                    "the bump for a warehouse_updated message failed; retrying: {e}"
                );
                let mut pending = self.inner.pending_plain.lock();
                pending.push(message);
                if pending.len() > PENDING_PLAIN_LIMIT {
                    // A bump of a table covers every update of it before: merging two loses no
                    // update (it may cost a spare bump, under a new id).
                    let second = pending.remove(1);
                    let first = &mut pending[0];
                    for t in second.tables {
                        if !first.tables.contains(&t) {
                            first.tables.push(t);
                        }
                    }
                    first.label = first.label.clone().max(second.label);
                    first.test &= second.test;
                    first.id = first.id.rotate_left(1) ^ second.id;
                }
                Err(e.into())
            }
        }
    }

    /// Retries the bump of foreign messages that failed, and says so in the feed once it lands.
    pub(super) async fn retry_pending_plain(&self) {
        let waiting = std::mem::take(&mut *self.inner.pending_plain.lock());
        let mut waiting = waiting.into_iter();
        while let Some(message) = waiting.next() {
            let tables: Vec<String> = message
                .tables
                .iter()
                .map(|t| self.inner.engine.catalog().tables().name(*t).to_string())
                .collect();
            if self.apply_plain(message).await.is_err() {
                // Still unreachable (apply_plain kept it): keep the rest, in order, after it.
                self.inner.pending_plain.lock().extend(waiting);
                return;
            }
            let message = format!(
                "a warehouse_updated message for {} was applied late: its first bump failed",
                tables.join(", ")
            );
            self.incident(tracing::Level::INFO, message).await;
        }
    }

    /// Counts and logs a message refused as bad input, and shows it in the feed.
    pub(super) async fn refuse(&self, source: &str, reason: String, excerpt: String) {
        self.inner
            .counters
            .bad_events
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source, "refused a message: {reason}");
        let source: String = source
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        if let Err(e) = self
            .inner
            .bus
            .publish(EventKind::BadInput {
                source,
                reason,
                excerpt,
            })
            .await
        {
            tracing::warn!("could not log a refused message: {e}");
        }
    }
}
