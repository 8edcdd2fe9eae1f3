//! One HTTP/1.1 server for everything this process serves over HTTP — the metrics endpoint and
//! the `serve` sidecar: hyper's HTTP/1 connection driving an axum [`Router`](axum::Router) (or a service in
//! front of one) on our tokio, with the limits a server on a shared host needs.
//!
//! * The request head (request line and headers) is bounded ([`MAX_HEAD`]) and must arrive
//!   within [`Limits::read_timeout`]; with keep-alive the same timeout bounds how long an idle
//!   connection waits for its next request, so a silent or trickling client holds nothing long.
//! * An answer must be taken within [`Limits::write_timeout`] of its first byte
//!   ([`WriteDeadline`]), so a client that stops reading cannot hold its connection.
//! * At most [`Limits::connections`] connections are served at once; more are closed at once.
//! * On shutdown the listener stops accepting, every connection finishes the request it is
//!   serving and closes, and whatever is still open after [`Limits::drain`] is dropped.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::convert::Infallible;

use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// The largest request head (request line and headers) read, in bytes: the smallest read buffer
/// hyper takes, and many times any head this project's clients send.
pub const MAX_HEAD: usize = 8 * 1024;

/// What one server lets its clients take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to send a request head (and, with keep-alive, how long an idle
    /// connection waits for the next one).
    pub read_timeout: Duration,
    /// How long a client has to take an answer, from its first byte.
    pub write_timeout: Duration,
    /// Connections served at once; more are closed without an answer.
    pub connections: usize,
    /// Whether a connection may carry more than one request.
    pub keep_alive: bool,
    /// How long connections may take to finish after shutdown begins.
    pub drain: Duration,
    /// Header names written in title case (`Content-Type`) rather than as stored (lowercase):
    /// for old clients that compare them exactly; it costs a pass over every name.
    pub title_case: bool,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address is not `HOST:PORT`, or its host does not resolve.
    #[error(
        "`{addr}`: {reason}; write HOST:PORT, e.g. 127.0.0.1:{example_port}, [::1]:{example_port} or localhost:{example_port}"
    )]
    BadAddress {
        /// The address given (escaped).
        addr: String,
        /// What is wrong with it.
        reason: String,
        /// The port the examples show.
        example_port: u16,
    },
    /// The address is fine but cannot be listened on (in use, not local, not permitted).
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address given (escaped).
        addr: String,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// Called outside a tokio runtime.
    #[error("the server must be started inside a tokio runtime")]
    NoRuntime,
}

/// A bound listener, not serving yet: [`Listener::local_addr`] tells the port when `:0` was
/// asked for.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Resolves `addr` (`HOST:PORT`) and binds it, inside a tokio runtime with I/O enabled. Binding
/// is synchronous, so a port in use is reported here. `example_port` is the port the error's
/// examples show.
pub fn bind(addr: &str, example_port: u16) -> Result<Listener, BindError> {
    let shown = addr.escape_default().to_string();
    let bad = |reason: String| BindError::BadAddress {
        addr: shown.clone(),
        reason,
        example_port,
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
        return Err(BindError::NoRuntime);
    }
    let failed = |error| BindError::Bind {
        addr: shown.clone(),
        error,
    };
    // Tries each address in turn (`localhost` may be ::1 and 127.0.0.1); the first error is the
    // one told.
    let mut first_error = None;
    let mut bound = None;
    for candidate in &candidates {
        match listen(*candidate) {
            Ok(listener) => {
                bound = Some(listener);
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let listener = match bound {
        Some(listener) => listener,
        None => {
            return Err(failed(first_error.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to listen on")
            })));
        }
    };
    let local = listener.local_addr().map_err(failed)?;
    Ok(Listener {
        listener,
        addr: local,
    })
}

/// Connections the kernel holds for us before we accept them (capped by `net.core.somaxconn`).
/// A burst of clients connecting at once — a thousand threads of an API server after a deploy —
/// must not overflow it: a dropped handshake is retried by the client a whole second later.
pub const BACKLOG: u32 = 4096;

/// A listening socket on `addr` with [`BACKLOG`], the address reusable at once after a restart.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl Listener {
    /// The address bound (with the actual port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `app` (an axum `Router`, or a service in front of one) within `limits` until
    /// `shutdown` turns true (or its sender is dropped), then drains: no new connection, each
    /// open one finishes its request, and what is still open after [`Limits::drain`] is dropped.
    pub async fn serve<S>(self, app: S, limits: Limits, mut shutdown: watch::Receiver<bool>)
    where
        S: tower_service::Service<
                hyper::Request<Incoming>,
                Response = Response,
                Error = Infallible,
                Future: Send + 'static,
            > + Clone
            + Send
            + 'static,
    {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.read_timeout)
            .max_buf_size(MAX_HEAD)
            .keep_alive(limits.keep_alive)
            .title_case_headers(limits.title_case);
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if connections.len() >= limits.connections {
                            // Full: closing at once costs nothing; the client retries.
                            drop(stream);
                            continue;
                        }
                        // Small answers go out at once rather than waiting to fill a segment.
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(error = %e, "TCP_NODELAY not set");
                        }
                        let connection = http.serve_connection(
                            TokioIo::new(WriteDeadline::new(stream, limits.write_timeout)),
                            TowerToHyperService::new(app.clone()),
                        );
                        let mut stop = shutdown.clone();
                        connections.spawn(async move {
                            let mut connection = std::pin::pin!(connection);
                            let ended = tokio::select! {
                                ended = connection.as_mut() => ended,
                                () = async {
                                    // Shutdown, or the server gone: either way, drain.
                                    let _ = stop.wait_for(|s| *s).await;
                                } => {
                                    // Finish the request in progress, then close.
                                    connection.as_mut().graceful_shutdown();
                                    connection.await
                                }
                            };
                            // Only a client's failing ends a connection in error (gone,
                            // malformed, too slow); hyper has answered it where HTTP can, nobody
                            // else needs to know.
                            if let Err(e) = ended {
                                tracing::debug!(error = %e, "HTTP connection ended early");
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
        drop(self.listener);
        let drained = tokio::time::timeout(limits.drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::debug!(
                open = connections.len(),
                "connections still open after the drain are dropped"
            );
            connections.shutdown().await;
        }
    }
}

/// A client's socket whose writing gives up `limit` after an answer began, so a client that
/// stops reading cannot hold its connection (hyper bounds only the time to read a head). The
/// clock restarts when the client sends again (its next request on a kept-alive connection).
pub struct WriteDeadline<T> {
    io: T,
    limit: Duration,
    /// The deadline's timer, made once per connection and reset for each answer.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether the clock runs (from the first write after a read).
    armed: bool,
}

impl<T> WriteDeadline<T> {
    /// `io`, whose answers must be taken within `limit`.
    pub fn new(io: T, limit: Duration) -> Self {
        Self {
            io,
            limit,
            deadline: None,
            armed: false,
        }
    }

    /// Starts the clock at the first write; an error once it has run out. Polling the deadline
    /// registers the waker, so a write that waits on the client also wakes when time is up.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.armed {
            // Only the answer's first write reads the clock.
            let at = tokio::time::Instant::now() + self.limit;
            match &mut self.deadline {
                Some(d) => d.as_mut().reset(at),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        let Some(deadline) = self.deadline.as_mut() else {
            return Ok(());
        };
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
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // The client is sending (a new request): the next answer gets its own time.
            this.armed = false;
        }
        read
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
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A burst of clients connecting at once all complete their handshake while the server has
    /// yet to accept them: the listen backlog holds them. With the standard library's backlog
    /// (128) the rest of the burst was dropped, each client retrying a second later — long enough
    /// for the first ones to reach the head-read timeout before the last one was through.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_backlog() {
        let listener = bind("127.0.0.1:0", 8080).unwrap();
        let addr = listener.local_addr();
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let burst = 1000.min(somaxconn);
        let mut connects = JoinSet::new();
        for _ in 0..burst {
            connects.spawn(async move {
                tokio::time::timeout(
                    Duration::from_millis(800),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
            });
        }
        let mut connected = Vec::new();
        while let Some(done) = connects.join_next().await {
            if let Ok(Ok(stream)) = done.unwrap() {
                connected.push(stream);
            }
        }
        // Nothing was accepted yet: every handshake was completed by the kernel on our behalf.
        assert_eq!(
            connected.len(),
            burst,
            "connections completed while none was accepted"
        );
        drop(listener);
    }
}
