//! Fill wake-ups: a process that stored an entry publishes its key on [`FILLS_CHANNEL`], and every
//! process waiting for that key (it did not hold the lease) wakes at once instead of polling. The
//! store registers waiters and publishes; the bus's subscriber, which owns the one pub/sub
//! connection, hears the channel and calls [`Fills::notify`]. Both must share one [`Fills`]: the
//! opener ([`Redis::open`](super::Redis::open)) makes sure they do.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::Notify;

/// The channel on which a process that stored an entry tells the others; the payload is the key.
pub const FILLS_CHANNEL: &str = "freshcache:fills";

/// Waiters for fill notifications, by entry key.
#[derive(Default)]
pub struct Fills {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Fills {
    /// The notification for `key` (shared by every waiter of this process).
    pub fn register(&self, key: &str) -> Arc<Notify> {
        let mut w = self.waiters.lock();
        if w.len() > 100_000 {
            // Waiters that were never woken (their holders died): forget those nobody waits on.
            w.retain(|_, n| Arc::strong_count(n) > 1);
        }
        w.entry(key.to_string()).or_default().clone()
    }

    /// Wakes every waiter of `key`.
    pub fn notify(&self, key: &str) {
        let n = self.waiters.lock().remove(key);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// Wakes everyone (after a reconnect, a notification may have been lost).
    pub fn notify_all(&self) {
        let all: Vec<_> = self.waiters.lock().drain().map(|(_, n)| n).collect();
        for n in all {
            n.notify_waiters();
        }
    }
}
