//! freshcache keeps the answers of an expensive data warehouse in a cache that is never stale after
//! an update, never stampedes the warehouse, and never goes down with its cache server.
//!
//! Where to start reading:
//! * [`engine`] — the cache itself: versioned keys, single-flight, stale-while-revalidate, XFetch
//!   early refresh, stale-if-error, statistics. It knows nothing of the console or the CLI.
//! * [`store`] — where entries live (in-process, Redis), behind one trait.
//! * [`warehouse`] — where answers come from, behind one trait; the ETL simulator.
//! * [`bus`] — the version truth, the event log and the live feed, behind one trait.
//! * [`instance`] — an engine wired to its bus and warehouse: sync, the invalidation protocol,
//!   refresh-ahead, guarded operator actions.
//! * [`console`] — the operations console (ratatui): state, update, view, one action registry.
//! * [`bench`] — scenarios that run fleets of processes: the chaos checker of the promise.
//! * [`cli`] — the `freshcache` command: the demo, headless commands and benchmark scenarios.
//! * [`config`], [`logging`] and [`metrics`] — how an operator configures it (flags >
//!   environment > file), where it writes its logs, and its Prometheus endpoint.
//!
//! Dependencies point one way: `cli` → `engine` → `store`/`warehouse` traits.

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod bench;
pub mod bus;
pub mod cli;
pub mod console;
pub mod engine;
pub mod exit;
pub mod instance;
pub mod metrics;
pub mod model;
pub mod redis;
pub mod sanitize;
pub mod secret;
pub mod settings;
pub mod store;
pub mod traffic;
pub mod warehouse;
