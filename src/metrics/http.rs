//! The metrics over HTTP: the axum route `GET /metrics` ([`router`]), which any axum server can
//! merge, and the endpoint of `--metrics-addr` that binds an address and serves it (with an index
//! page) on HTTP/1.1 within the limits the module docs promise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::exposition::CONTENT_TYPE;
use super::registry::Exporter;
use crate::http::{BindError, Limits};
use crate::instance::Instance;

/// The largest request head (request line and headers) read, in bytes.
pub const MAX_HEAD: usize = crate::http::MAX_HEAD;
/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 256;

/// What the endpoint lets its clients take: one request per connection.
const LIMITS: Limits = Limits {
    read_timeout: READ_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    connections: MAX_CONNECTIONS,
    keep_alive: false,
    drain: Duration::from_secs(1),
    title_case: true,
};

/// The content type of every answer but the scrape and the index page.
const TEXT: &str = "text/plain; charset=utf-8";

const INDEX_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>freshcache metrics</title></head>\
<body><h1>freshcache</h1><p>Prometheus metrics of this process: <a href=\"/metrics\">/metrics</a></p>\
</body></html>\n";

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not `HOST:PORT`, or its host does not resolve.
    #[error(
        "metrics address `{addr}`: {reason}; write HOST:PORT, e.g. 127.0.0.1:9464, [::1]:9464 or localhost:9464"
    )]
    BadAddress {
        /// The address given (escaped).
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address is fine but cannot be listened on (in use, not local, not permitted).
    #[error("cannot serve metrics on {addr}: {error}")]
    Bind {
        /// The address given (escaped).
        addr: String,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// Called outside a tokio runtime.
    #[error("the metrics endpoint must be started inside a tokio runtime")]
    NoRuntime,
}

/// The route `GET /metrics` (and `HEAD`), answering with a scrape of `exporter` in the text
/// exposition format; any other method there is `405`. It has no fallback and no state of its own,
/// so it merges into any router (`Router::merge`) whatever that router's state.
pub fn router<S>(exporter: Arc<Exporter>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let scrape = move || {
        let exporter = exporter.clone();
        async move {
            (
                [(header::CONTENT_TYPE, CONTENT_TYPE)],
                exporter.scrape().await,
            )
        }
    };
    Router::new().route("/metrics", get(scrape).fallback(method_not_allowed))
}

/// The endpoint's whole application: [`router`], an index page at `/`, `404` at any other path
/// and `405` for any other method anywhere.
fn endpoint(exporter: Arc<Exporter>) -> Router {
    router(exporter)
        .route("/", get(index).fallback(method_not_allowed))
        .fallback(elsewhere)
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_PAGE,
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD")],
        text("only GET and HEAD are served"),
    )
        .into_response()
}

/// Any path but the two served: `405` for a method never served, else `404`.
async fn elsewhere(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        (
            StatusCode::NOT_FOUND,
            text("not found; metrics are at /metrics"),
        )
            .into_response()
    } else {
        method_not_allowed().await
    }
}

/// A one-line plain-text answer.
fn text(line: &str) -> Response {
    ([(header::CONTENT_TYPE, TEXT)], format!("{line}\n")).into_response()
}

impl From<BindError> for MetricsError {
    fn from(e: BindError) -> Self {
        match e {
            BindError::BadAddress { addr, reason, .. } => MetricsError::BadAddress { addr, reason },
            BindError::Bind { addr, error } => MetricsError::Bind { addr, error },
            BindError::NoRuntime => MetricsError::NoRuntime,
        }
    }
}

/// A bound listener, not serving yet: [`MetricsListener::local_addr`] tells the port when `:0`
/// was asked for.
#[derive(Debug)]
pub struct MetricsListener {
    listener: crate::http::Listener,
}

/// Resolves `addr` (`HOST:PORT`) and binds it, inside a tokio runtime with I/O enabled (as
/// `#[tokio::main]` makes). Binding is synchronous, so a port in use is reported here.
pub fn bind(addr: &str) -> Result<MetricsListener, MetricsError> {
    Ok(MetricsListener {
        listener: crate::http::bind(addr, 9464)?,
    })
}

impl MetricsListener {
    /// The address bound (with the actual port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Serves the endpoint of `instance` (`GET /metrics`, an index page at `/`) until `shutdown`
    /// turns true (or its sender is dropped); connections still open then are closed.
    pub async fn serve(self, instance: Instance, shutdown: watch::Receiver<bool>) {
        let app = endpoint(Arc::new(Exporter::new(instance)));
        self.listener.serve(app, LIMITS, shutdown).await;
    }
}

/// Binds `addr` and serves the metrics of `instance` until `shutdown` turns true.
pub async fn serve(
    addr: &str,
    instance: Instance,
    shutdown: watch::Receiver<bool>,
) -> Result<(), MetricsError> {
    bind(addr)?.serve(instance, shutdown).await;
    Ok(())
}

/// Starts serving the metrics of `instance` on `addr` in the background, when an address is
/// given. The address is bound before this returns, so a bad address or a port in use is the
/// caller's error to report, not a background task's.
pub fn spawn(
    addr: Option<&str>,
    instance: &Instance,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>, MetricsError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = bind(addr)?;
    let instance = instance.clone();
    Ok(Some(tokio::spawn(listener.serve(instance, shutdown))))
}

#[cfg(test)]
mod tests;
