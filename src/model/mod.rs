//! The shared vocabulary: the types every layer speaks, on the ground floor so that no layer has to
//! import its own callers to name them.
//!
//! * [`catalog`] — the named, parameterised queries and the tables each reads; a checked [`Request`](catalog::Request).
//! * [`versions`] — table ids and the [`VersionVector`](versions::VersionVector) a cache key is made of.
//! * [`policy`] — how long an answer stays fresh, per query, and the [`Strategy`](policy::Strategy) bundles.
//! * [`clock`] — time: the [`Clock`](clock::Clock) trait, durations, and the batch labels.
//! * [`entry`] — a cached answer, its version stamp and its key.
//! * [`events`] — what the bus carries: the event log's entries.
//! * [`environment`] — production, staging or development.
//! * [`num`] — number conversions that saturate instead of wrapping.
//! * [`ops`] — the one registry of operator actions: danger, refusals, confirmation phrases.
//!
//! Everything in the crate may use this module; it uses nothing of the crate above it (only the
//! leaf modules `sanitize` and `secret`).

pub mod catalog;
pub mod clock;
pub mod entry;
pub mod environment;
pub mod events;
pub mod num;
pub mod ops;
pub mod policy;
pub mod versions;

use std::future::Future;
use std::pin::Pin;

/// A boxed future, for trait objects whose methods are async (stores, buses, warehouses).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
