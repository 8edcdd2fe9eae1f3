//! freshcache keeps the answers of an expensive data warehouse in a cache that is never stale after
//! an update, never stampedes the warehouse, and never goes down with its cache server.
//!
//! Where to start reading, top to bottom:
//! * [`cli`] — the `freshcache` command: the demo, headless commands and benchmark scenarios.
//! * [`bench`](mod@bench) — scenarios that run fleets of processes: the chaos checker of the promise.
//! * [`console`] — the operations console (ratatui): state, update, layout, view, one action
//!   registry. [`metrics`] — the Prometheus endpoint. [`settings`] — the shared options, how an
//!   operator configures them (flags > environment > file) and where the logs go.
//! * [`instance`] — an engine wired to its bus and warehouse: sync, the invalidation protocol,
//!   refresh-ahead, guarded operator actions. [`traffic`] — simulated users.
//! * [`redis`] — everything Redis: the link and its breaker, the shared store, the bus, and the
//!   fill wake-ups, opened together.
//! * [`bus`] — the version truth, the event log and the live feed, behind one trait; the local bus.
//! * [`engine`] — the cache itself: versioned keys, single-flight, stale-while-revalidate, XFetch
//!   early refresh, stale-if-error, the lease, statistics. It knows nothing of the console or the CLI.
//! * [`store`] — where entries live (in-process), behind one trait. [`warehouse`] — where answers
//!   come from, behind one trait; the ETL simulator.
//! * [`model`] — the shared vocabulary: catalog, versions, policy, clock, entries and keys,
//!   events, environment.
//! * Leaves: [`secret`] (secrets and password masking), [`exit`] (exit codes), [`sanitize`]
//!   (untrusted text made safe for a terminal).
//!
//! Dependencies point down this list, never up: `cli` → `bench` → `console` / `metrics` /
//! `settings` → `instance` / `traffic` → `redis` → `bus` → `engine` → `store` / `warehouse` →
//! `model` → `secret` / `exit` → `sanitize`. Modules on one line do not use each other. The test
//! `tests/layers.rs` holds this order and fails on any import against it.

#![warn(missing_docs)]

pub mod bench;
pub mod bus;
pub mod cli;
pub mod console;
pub mod engine;
pub mod exit;
pub mod http;
pub mod instance;
pub mod metrics;
pub mod model;
pub mod redis;
pub mod sanitize;
pub mod secret;
pub mod serve;
pub mod settings;
pub mod store;
pub mod traffic;
pub mod warehouse;
