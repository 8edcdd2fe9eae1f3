//! Prometheus metrics of this process, and the small HTTP endpoint that serves them.
//!
//! * [`render`] writes the text exposition format 0.0.4 from an [`Instance`] (the metric list is
//!   in `registry`, the format in `exposition`); an [`Exporter`] gathers what else a scrape
//!   needs and keeps the request counts it derives from going down between scrapes.
//! * [`router`] is the axum route `GET /metrics` (HEAD too) and nothing else, to merge into any
//!   other axum server (the `serve` sidecar's) so it exposes the same metrics.
//! * [`spawn`] (or [`bind`] then [`MetricsListener::serve`], or [`serve`]) runs the endpoint of
//!   `--metrics-addr`: that route and an index page at `/`, on HTTP/1.1 (hyper, on our tokio).
//!   Each connection carries one request and is closed after the answer.
//!
//! ```no_run
//! # async fn example(instance: freshcache::instance::Instance) -> Result<(), freshcache::metrics::MetricsError> {
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! // A bad address or a port in use is reported here, before anything runs.
//! let server = freshcache::metrics::spawn(Some("127.0.0.1:9464"), &instance, shutdown)?;
//! // ... serve requests ...
//! stop.send_replace(true);
//! if let Some(server) = server {
//!     let _ = server.await;
//! }
//! # Ok(()) }
//! ```
//!
//! Any other axum server exposes the same metrics by merging the route into its own:
//!
//! ```no_run
//! # fn example(instance: freshcache::instance::Instance) {
//! use std::sync::Arc;
//!
//! use freshcache::metrics::{Exporter, router};
//!
//! let app: axum::Router = axum::Router::new()
//!     .route("/health", axum::routing::get(|| async { "ok" }))
//!     .merge(router(Arc::new(Exporter::new(instance))));
//! # }
//! ```
//!
//! What the numbers mean, and why they can be trusted:
//! * Everything is of *this* process; Prometheus sums across processes. The one exception is
//!   `freshcache_keys{tier="shared"}`: the shared store's keys, the same in every process (take the
//!   maximum across processes, not the sum).
//! * `freshcache_requests_total{outcome}` partitions requests, so its sum is every request, and
//!   each request is counted by how it was answered: `fresh` answered fresh from the cache,
//!   `stale` answered stale (at once: stale-while-revalidate, the previous version during an
//!   update; or after waiting: its load failed or was too slow), `miss` waited for a load it led,
//!   `coalesced` joined a load already in flight. So `outcome="stale"` equals
//!   `freshcache_stale_answers_total`. The engine counts a request's stages one after the other
//!   (a waiting request is a miss until it ends stale), so a scrape can catch one between two of
//!   them; [`Exporter`] keeps each outcome from going down between scrapes, which a counter must
//!   never do.
//! * Histograms are read from hdrhistogram (two significant figures). A recorded value counts
//!   under a bucket `le` only when the whole range it was recorded in lies at or below `le`, so no
//!   bucket claims an answer faster than it may have been; `_sum` adds each range's midpoint.
//!   Fresh hits are timed one in 16 and recorded with weight 16, so the request histogram's
//!   `_count` estimates the number of requests rather than counting them.
//! * `freshcache_invalidation_lag_seconds` is [`Instance::invalidation_lag`]: from a bump made
//!   elsewhere to this instance applying it.
//! * No label carries a secret: backends are shown by their secret-free `describe()`.
//!
//! The endpoint answers `GET` and `HEAD` only (any other method is `405` with `Allow: GET, HEAD`),
//! at `/metrics` and `/` only (any other path is `404`), and a malformed request `400`. It is
//! bounded so that a slow or hostile client cannot hang or exhaust it: a request head must arrive
//! within [`READ_TIMEOUT`] (else the connection is closed) and fit in [`MAX_HEAD`] bytes (else
//! `431`), an answer must be taken within [`WRITE_TIMEOUT`], at most [`MAX_CONNECTIONS`]
//! connections are served at once (more are closed at once), and each runs in its own task.
//!
//! [`Instance`]: crate::instance::Instance
//! [`Instance::invalidation_lag`]: crate::instance::Instance::invalidation_lag

mod exposition;
mod http;
mod registry;

pub use exposition::CONTENT_TYPE;
pub use http::{
    MAX_CONNECTIONS, MAX_HEAD, MetricsError, MetricsListener, READ_TIMEOUT, WRITE_TIMEOUT, bind,
    router, serve, spawn,
};
pub use registry::{Exporter, MetricsExtra, render};
