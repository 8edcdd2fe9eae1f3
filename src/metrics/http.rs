//! The metrics over HTTP: the axum route `GET /metrics` ([`router`]), which any axum server can
//! merge, and the endpoint of `--metrics-addr` that binds an address and serves it (with an index
//! page) on HTTP/1.1 within the limits the module docs promise.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Sleep;

use super::exposition::CONTENT_TYPE;
use super::registry::Exporter;
use crate::instance::Instance;

/// The largest request head (request line and headers) read, in bytes: the smallest read buffer
/// hyper takes, and many times a scrape's head.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 256;

/// What one endpoint lets its clients take (the tests serve with smaller numbers).
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// [`READ_TIMEOUT`].
    read_timeout: Duration,
    /// [`WRITE_TIMEOUT`].
    write_timeout: Duration,
    /// [`MAX_CONNECTIONS`].
    connections: usize,
}

const LIMITS: Limits = Limits {
    read_timeout: READ_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    connections: MAX_CONNECTIONS,
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

/// A bound listener, not serving yet: [`MetricsListener::local_addr`] tells the port when `:0`
/// was asked for.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Resolves `addr` (`HOST:PORT`) and binds it, inside a tokio runtime with I/O enabled (as
/// `#[tokio::main]` makes). Binding is synchronous, so a port in use is reported here.
pub fn bind(addr: &str) -> Result<MetricsListener, MetricsError> {
    let shown = addr.escape_default().to_string();
    let bad = |reason: String| MetricsError::BadAddress {
        addr: shown.clone(),
        reason,
    };
    if addr.is_empty() || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty, or holds spaces or control characters".into()));
    }
    if let Some((host, _)) = addr.rsplit_once(':')
        && host.contains(':')
        && !(host.starts_with('[') && host.ends_with(']'))
    {
        return Err(bad("an IPv6 address needs brackets".into()));
    }
    let candidates: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .collect();
    if candidates.is_empty() {
        return Err(bad("the host resolves to no address".into()));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(MetricsError::NoRuntime);
    }
    let failed = |error| MetricsError::Bind {
        addr: shown.clone(),
        error,
    };
    // Tries each address in turn (`localhost` may be ::1 and 127.0.0.1).
    let std_listener = std::net::TcpListener::bind(&candidates[..]).map_err(failed)?;
    std_listener.set_nonblocking(true).map_err(failed)?;
    let listener = TcpListener::from_std(std_listener).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok(MetricsListener {
        listener,
        addr: local,
    })
}

impl MetricsListener {
    /// The address bound (with the actual port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the endpoint of `instance` (`GET /metrics`, an index page at `/`) until `shutdown`
    /// turns true (or its sender is dropped); connections still open then are closed.
    pub async fn serve(self, instance: Instance, shutdown: watch::Receiver<bool>) {
        let app = endpoint(Arc::new(Exporter::new(instance)));
        serve_app(self.listener, app, LIMITS, shutdown).await;
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

/// Serves `app` on `listener` until `shutdown` turns true (or its sender is dropped), within
/// `limits`: hyper bounds the head's size ([`MAX_HEAD`]) and the time to receive it and closes
/// each connection after one answer; [`WriteDeadline`] bounds the time to take the answer; this
/// loop bounds the connections.
async fn serve_app(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .title_case_headers(true);
    let mut connections = JoinSet::new();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if connections.len() >= limits.connections {
                        // Full: closing at once costs nothing; the scraper retries.
                        drop(stream);
                        continue;
                    }
                    let connection = http.serve_connection(
                        TokioIo::new(WriteDeadline::new(stream, limits.write_timeout)),
                        TowerToHyperService::new(app.clone()),
                    );
                    connections.spawn(async move {
                        // Only a client's failing ends a connection in error (gone, malformed,
                        // too slow); hyper has answered it where HTTP can, nobody else needs to
                        // know.
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "metrics connection ended early");
                        }
                    });
                }
                // Out of file descriptors and the like: back off rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    connections.shutdown().await;
}

/// A client's socket whose writing gives up `limit` after the answer began, so a client that
/// stops reading cannot hold its connection (hyper bounds only the time to read the head).
struct WriteDeadline<T> {
    io: T,
    limit: Duration,
    /// Set by the first write.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(io: T, limit: Duration) -> Self {
        Self {
            io,
            limit,
            deadline: None,
        }
    }

    /// Starts the clock at the first write; an error once it has run out. Polling the deadline
    /// registers the waker, so a write that waits on the client also wakes when time is up.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not take the answer in time",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
