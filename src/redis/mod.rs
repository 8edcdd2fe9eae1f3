//! Everything Redis: the [`link`] to one server (timeouts, circuit breaker), the shared second
//! tier of cached answers ([`store`]), the bus's version truth, event log and feed ([`bus`]), and
//! the fill wake-ups that let a process waiting for another's load wake as soon as it is stored.
//!
//! A store and a bus that serve one instance are opened together by [`Redis::open`]: the bus's
//! subscriber hears the fills the store waits for, and only the opener can make them share them.
//! A store alone ([`RedisStore::new`]) or a bus alone ([`RedisBus::start`]) wakes nobody.
//!
//! The re-exports below are the module's front door: callers name `redis::RedisStore`, not the file.

pub mod bus;
mod fills;
pub mod link;
pub mod store;

use std::sync::Arc;

pub use bus::RedisBus;
pub use fills::FILLS_CHANNEL;
pub use link::{LinkError, RedisLink};
pub use store::RedisStore;

use crate::model::clock::SharedClock;
use crate::model::versions::Tables;

/// A store and a bus on Redis that share their fill wake-ups.
#[derive(Debug)]
pub struct Redis {
    /// The shared tier of cached answers.
    pub store: RedisStore,
    /// The version truth, event log and feed.
    pub bus: RedisBus,
}

impl Redis {
    /// The store and the bus of an instance, both on `link`; starts the bus's subscriber on the
    /// current runtime.
    pub fn open(link: Arc<RedisLink>, tables: Tables, clock: SharedClock) -> Self {
        Self::open_split(link.clone(), link, tables, clock)
    }

    /// The store on `store_link` and the bus on `bus_link` (two servers): fills are published
    /// where the store lives, so the bus must hear that server's channel for wake-ups to arrive;
    /// across two servers a waiter waits out its bound, as with a store alone.
    pub fn open_split(
        store_link: Arc<RedisLink>,
        bus_link: Arc<RedisLink>,
        tables: Tables,
        clock: SharedClock,
    ) -> Self {
        let fills = Arc::new(fills::Fills::default());
        let store = RedisStore::with_fills(store_link, tables.clone(), fills.clone());
        let bus = RedisBus::start_with_fills(bus_link, tables, clock, fills);
        Self { store, bus }
    }
}
