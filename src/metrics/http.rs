//! The metrics over HTTP: binds an address and answers `GET /metrics` on a plain HTTP/1.1
//! responder over `tokio::net::TcpListener`, within the limits the module docs promise.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::exposition::CONTENT_TYPE;
use super::registry::Exporter;
use crate::instance::Instance;

/// The largest request head (request line and headers) read, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 256;
/// After answering, how long unread request bytes are drained so that closing the socket does not
/// reset the connection under the client before it has read the answer.
const LINGER: Duration = Duration::from_millis(500);

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

    /// Serves `GET /metrics` of `instance` until `shutdown` turns true (or its sender is
    /// dropped); connections still open then are closed.
    pub async fn serve(self, instance: Instance, mut shutdown: watch::Receiver<bool>) {
        let exporter = Arc::new(Exporter::new(instance));
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if connections.len() >= MAX_CONNECTIONS {
                            // Full: closing at once costs nothing; the scraper retries.
                            drop(stream);
                            continue;
                        }
                        let exporter = exporter.clone();
                        connections.spawn(async move { answer(stream, &exporter).await });
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

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    Index,
    NotFound,
    MethodNotAllowed,
    Malformed,
}

/// Routes a request head (request line and headers, without the blank line); also says whether
/// the method was `HEAD` (no body in the answer).
fn route(head: &[u8]) -> (Route, bool) {
    let Ok(text) = std::str::from_utf8(head) else {
        return (Route::Malformed, false);
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (Route::Malformed, false);
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let headers_ok =
        lines.all(|l| l.is_empty() || l.split_once(':').is_some_and(|(n, _)| token(n)));
    if !token(method)
        || !(version == "HTTP/1.1" || version == "HTTP/1.0")
        || !target.starts_with('/')
        || !target.bytes().all(|b| b.is_ascii_graphic())
        || !headers_ok
    {
        return (Route::Malformed, false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (Route::MethodNotAllowed, false);
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let route = match path {
        "/metrics" => Route::Metrics,
        "/" => Route::Index,
        _ => Route::NotFound,
    };
    (route, head_only)
}

/// Why no request head was read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client closed (or the socket failed) before sending anything.
    Gone,
    /// The client closed part-way through the head.
    Truncated,
    /// The head is longer than [`MAX_HEAD`].
    TooLarge,
}

/// Where the head ends (after its blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads a request head of at most [`MAX_HEAD`] bytes (the caller bounds the time).
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) if buf.is_empty() => return Err(HeadError::Gone),
            Ok(0) | Err(_) => return Err(HeadError::Truncated),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An answer to send.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Reply {
    fn text(status: &'static str, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            head_only: false,
        }
    }
}

const INDEX_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>freshcache metrics</title></head>\
<body><h1>freshcache</h1><p>Prometheus metrics of this process: <a href=\"/metrics\">/metrics</a></p>\
</body></html>\n";

/// Reads one request from `stream`, answers it and closes the connection.
async fn answer(mut stream: TcpStream, exporter: &Exporter) {
    let reply = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Reply::text("408 Request Timeout", "request head not received in time"),
        Ok(Err(HeadError::Gone)) => return,
        Ok(Err(HeadError::Truncated)) => Reply::text("400 Bad Request", "incomplete request"),
        Ok(Err(HeadError::TooLarge)) => Reply::text(
            "431 Request Header Fields Too Large",
            "request head too large",
        ),
        Ok(Ok(head)) => {
            let (route, head_only) = route(&head);
            let mut reply = match route {
                Route::Metrics => Reply {
                    status: "200 OK",
                    content_type: CONTENT_TYPE,
                    body: exporter.scrape().await,
                    head_only: false,
                },
                Route::Index => Reply {
                    status: "200 OK",
                    content_type: "text/html; charset=utf-8",
                    body: INDEX_PAGE.to_string(),
                    head_only: false,
                },
                Route::NotFound => {
                    Reply::text("404 Not Found", "not found; metrics are at /metrics")
                }
                Route::MethodNotAllowed => {
                    Reply::text("405 Method Not Allowed", "only GET and HEAD are served")
                }
                Route::Malformed => Reply::text("400 Bad Request", "malformed request"),
            };
            reply.head_only = head_only;
            reply
        }
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, send(&mut stream, &reply)).await;
}

/// Writes `reply`, closes the sending side, and drains (briefly, boundedly) what the client
/// still sends, so the close does not reset the connection before the client read the answer.
async fn send(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if reply.status.starts_with("405") {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !reply.head_only {
        stream.write_all(reply.body.as_bytes()).await?;
    }
    stream.shutdown().await?;
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_route_by_method_and_path() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(
            r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            (Route::Metrics, false)
        );
        assert_eq!(r("GET /metrics?x=1 HTTP/1.0\n\n"), (Route::Metrics, false));
        assert_eq!(r("HEAD /metrics HTTP/1.1\r\n\r\n"), (Route::Metrics, true));
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), (Route::Index, false));
        assert_eq!(r("GET /nope HTTP/1.1\r\n\r\n"), (Route::NotFound, false));
        assert_eq!(
            r("POST /metrics HTTP/1.1\r\n\r\n"),
            (Route::MethodNotAllowed, false)
        );
        for garbage in [
            "GARBAGE\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            "GET /m\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(r(garbage).0, Route::Malformed, "{garbage:?}");
        }
        assert_eq!(route(b"GET /\xff HTTP/1.1\r\n\r\n").0, Route::Malformed);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\n"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[tokio::test]
    async fn addresses_must_be_host_and_port() {
        for ok in ["127.0.0.1:0", "[::1]:0", "localhost:0"] {
            match bind(ok) {
                Ok(l) => assert!(l.local_addr().ip().is_loopback(), "{ok}"),
                // A machine without IPv6 cannot bind ::1; the address itself was accepted.
                Err(MetricsError::Bind { .. }) if ok.starts_with('[') => {}
                Err(e) => panic!("{ok}: {e}"),
            }
        }
        for bad in [
            "",
            "9464",
            "127.0.0.1",
            "http://127.0.0.1:9464",
            "127.0.0.1:99999",
            " 127.0.0.1:9464",
            "::1:9464",
        ] {
            let e = bind(bad).unwrap_err();
            assert!(matches!(e, MetricsError::BadAddress { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn binding_outside_a_runtime_is_an_error() {
        assert!(matches!(bind("127.0.0.1:0"), Err(MetricsError::NoRuntime)));
    }
}
