//! A pooled connection with a statement in flight, and what happens when that statement is
//! abandoned at a deadline: a cancel request, and the connection out of the pool.

use super::*;

/// A pooled connection with a statement in flight. Dropped before [`Busy::finish`] — the future
/// running the statement was dropped at a deadline — it sends the server a cancel request for
/// that statement and takes the connection out of the pool (closing it once the cancel is sent),
/// so the backend stops working for nobody and no later query queues behind the cancelled one.
pub(super) struct Busy {
    pub(super) client: Option<Object>,
    pub(super) describe: String,
    pub(super) cancels: std::sync::Arc<Cancels>,
}

impl Busy {
    pub(super) fn client(&mut self) -> Result<&mut Object, WarehouseError> {
        self.client
            .as_mut()
            .ok_or_else(|| WarehouseError::Unavailable("the connection was returned".into()))
    }

    /// The statement ended (answered or failed): the connection goes back to the pool.
    pub(super) fn finish(mut self) {
        self.client = None;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let token = client.cancel_token();
        // Out of the pool: its connection may still be running (or answering) the statement.
        let client = Object::take(client);
        let describe = std::mem::take(&mut self.describe);
        let cancel = async move {
            match tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(NoTls)).await {
                Ok(Ok(())) => {
                    tracing::info!(warehouse = %describe, "cancelled a query at its deadline")
                }
                Ok(Err(e)) => tracing::warn!(
                    warehouse = %describe,
                    error = %clean_error(&e),
                    "could not cancel a query at its deadline; the server's statement_timeout ends it"
                ),
                Err(_) => tracing::warn!(
                    warehouse = %describe,
                    "the cancel request timed out; the server's statement_timeout ends the query"
                ),
            }
            // Closed only now: a backend that lost its client before the cancel arrived would
            // go on waiting (a lock wait does not notice a closed socket).
            drop(client);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let handle = runtime.spawn(cancel);
                let mut pending = self.cancels.lock();
                pending.retain(|h| !h.is_finished());
                pending.push(handle);
            }
            // No runtime (it is shutting down): the server's statement_timeout still ends it.
            Err(_) => tracing::warn!(
                "a query was abandoned outside a runtime; the server's statement_timeout ends it"
            ),
        }
    }
}
