//! One Redis server, as the store and the bus use it: a connection with explicit timeouts on every
//! call, and a circuit breaker so that a dead or frozen Redis costs each request at most one
//! timeout before the cache falls back to the warehouse (degraded), and recovers by itself.
//!
//! * Every call is bounded by `response_timeout` (the redis crate's own timeouts do not cover a
//!   reconnect in progress, so the bound is applied here, around the whole call).
//! * After [`BREAKER_THRESHOLD`] consecutive failures the breaker opens: calls fail at once for
//!   [`BREAKER_COOL_DOWN`]; then one call is let through as a probe; success closes it.
//! * The URL's password is kept in a [`Secret`] and never appears in [`RedisLink::describe`],
//!   errors, `Debug` output or panics.

use parking_lot::Mutex;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::secret::{Secret, mask_url};

/// Consecutive failures that open the breaker.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open breaker refuses calls before letting a probe through.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_millis(1_000);

/// Why a call to Redis failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The URL cannot be used.
    #[error("bad Redis URL {url}: {why} (expected redis://[user:password@]host[:port][/db])")]
    BadUrl {
        /// The URL, masked.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Redis did not answer in time, refused the connection, or the breaker is open.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Command(String),
}

#[derive(Debug)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Yes,
    Probe,
    No,
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<BreakerState>,
    opened: AtomicU64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            opened: AtomicU64::new(0),
        }
    }
}

impl Breaker {
    /// Whether a call may go through now (an open breaker lets one probe through after its
    /// cool-down).
    pub fn allow(&self) -> bool {
        self.admit() != Admit::No
    }

    /// Like [`Breaker::allow`], telling a probe from an ordinary call.
    fn admit(&self) -> Admit {
        let mut s = self.state.lock();
        match *s {
            BreakerState::Closed { .. } => Admit::Yes,
            BreakerState::Open { until } if Instant::now() >= until => {
                *s = BreakerState::HalfOpen;
                Admit::Probe
            }
            BreakerState::Open { .. } => Admit::No,
            // One probe at a time: others wait for its outcome.
            BreakerState::HalfOpen => Admit::No,
        }
    }

    /// Records a success: closes the breaker.
    pub fn success(&self) {
        let mut s = self.state.lock();
        if !matches!(*s, BreakerState::Closed { .. }) {
            tracing::info!("Redis answers again: circuit closed");
        }
        *s = BreakerState::Closed { failures: 0 };
    }

    /// Records a failure: opens the breaker after the threshold, or re-opens it after a probe.
    pub fn failure(&self) {
        let mut s = self.state.lock();
        let open = match *s {
            BreakerState::Closed { failures } if failures + 1 >= BREAKER_THRESHOLD => true,
            BreakerState::Closed { failures } => {
                *s = BreakerState::Closed {
                    failures: failures + 1,
                };
                false
            }
            BreakerState::HalfOpen | BreakerState::Open { .. } => true,
        };
        if open {
            if matches!(*s, BreakerState::Closed { .. }) {
                tracing::warn!(
                    "Redis failed {BREAKER_THRESHOLD} calls in a row: circuit open, the cache runs degraded (warehouse direct) and probes every {} ms",
                    BREAKER_COOL_DOWN.as_millis()
                );
            }
            *s = BreakerState::Open {
                until: Instant::now() + BREAKER_COOL_DOWN,
            };
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Evidence from elsewhere (a new pub/sub connection) that the server is back: an open
    /// breaker probes with the next call instead of waiting out its cool-down.
    pub fn probe_soon(&self) {
        let mut s = self.state.lock();
        if let BreakerState::Open { until } = &mut *s {
            *until = Instant::now();
        }
    }

    /// Whether calls are being refused (open or probing).
    pub fn is_open(&self) -> bool {
        !matches!(*self.state.lock(), BreakerState::Closed { .. })
    }

    /// How many times it has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// Re-opens the breaker when dropped armed: a probe that never finished failed.
struct ProbeGuard<'a>(Option<&'a Breaker>);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.0 {
            b.failure();
        }
    }
}

/// A Redis server with timeouts and a breaker.
pub struct RedisLink {
    client: redis::Client,
    conn: ConnectionManager,
    url: Secret<String>,
    describe: String,
    response_timeout: Duration,
    connect_timeout: Duration,
    breaker: Breaker,
}

impl fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLink")
            .field("at", &self.describe)
            .finish_non_exhaustive()
    }
}

fn classify(e: &redis::RedisError) -> LinkError {
    let text = crate::sanitize::clean_short(&e.to_string(), 200);
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        return LinkError::Unavailable(format!(
            "Redis refused the credentials ({text}); check the user and password in the Redis URL"
        ));
    }
    if text.contains("NotValidForName") || text.contains("not valid for name") {
        return LinkError::Unavailable(format!(
            "{text}; the server's certificate does not name the host in the URL: connect with a name or address it lists"
        ));
    }
    if text.contains("certificate") {
        return LinkError::Unavailable(format!(
            "{text}; for a server whose certificate a private authority signed, give that authority with --redis-ca FILE (or FRESHCACHE_REDIS_CA)"
        ));
    }
    if e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() || e.is_io_error() {
        LinkError::Unavailable(text)
    } else {
        LinkError::Command(text)
    }
}

impl RedisLink {
    /// Prepares a link to `url` (`redis://` or `rediss://`); connects lazily, so a Redis that is
    /// down now does not stop the start (the cache runs degraded until it answers).
    pub fn open(
        url: &str,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, LinkError> {
        Self::open_tls(url, None, connect_timeout, response_timeout)
    }

    /// [`RedisLink::open`]; a `rediss://` URL trusts `ca` (a PEM certificate authority) if
    /// given, else the system's certificates.
    pub fn open_tls(
        url: &str,
        ca: Option<&std::path::Path>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, LinkError> {
        let describe = mask_url(url);
        let bad = |why: String| LinkError::BadUrl {
            url: describe.clone(),
            why: crate::sanitize::clean_short(&why, 120),
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(bad("the scheme must be redis:// or rediss://".into()));
        }
        let client = match ca {
            Some(path) if url.starts_with("rediss://") => {
                let pem = std::fs::read(path)
                    .map_err(|e| bad(format!("cannot read the CA file {}: {e}", path.display())))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(bad(format!(
                        "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        path.display()
                    )));
                }
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(url, certs).map_err(|e| bad(e.to_string()))?
            }
            Some(_) => return Err(bad("a CA file needs a rediss:// URL".into())),
            None => redis::Client::open(url).map_err(|e| bad(e.to_string()))?,
        };
        // Fail fast while Redis is down: one retry with a short backoff; every call is bounded
        // by `response_timeout` around it anyway (a reconnect in progress is not covered by the
        // crate's own timeouts).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            client,
            conn,
            url: Secret::new(url.to_string()),
            describe,
            response_timeout,
            connect_timeout,
            breaker: Breaker::default(),
        })
    }

    /// `redis://host:6379/0`, password masked.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The URL, for opening more connections (pub/sub). Never log it.
    pub fn url(&self) -> &Secret<String> {
        &self.url
    }

    /// The client, for pub/sub connections.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The response timeout of every call.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Runs one call (a command, a pipeline, a script) through the breaker, bounded by the
    /// response timeout.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, LinkError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_within(self.response_timeout, f).await
    }

    /// [`RedisLink::call`] with another bound (bulk work).
    pub async fn call_within<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, LinkError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // An unavailable server is named (masked), so the operator knows which setting to fix.
        self.call_unnamed(limit, f).await.map_err(|e| match e {
            LinkError::Unavailable(why) => {
                LinkError::Unavailable(format!("{}: {why}", self.describe))
            }
            other => other,
        })
    }

    async fn call_unnamed<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, LinkError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match self.breaker.admit() {
            Admit::Yes => {}
            Admit::No => {
                return Err(LinkError::Unavailable(
                    "circuit open after repeated failures".into(),
                ));
            }
            // The probe is a PING, not the caller's command (which may not be safe to send
            // twice): the first command on a connection that died with its server fails while
            // the connection is re-made, so the PING gets a second chance before the breaker
            // decides. The two attempts share one timeout. A caller that gives up during the
            // probe (its future dropped) must not leave the breaker half-open for good: the
            // guard counts that as a failed probe.
            Admit::Probe => {
                let mut unsettled = ProbeGuard(Some(&self.breaker));
                let deadline = tokio::time::Instant::now() + limit;
                let mut up = false;
                for attempt in 0..2 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let mut c = self.conn.clone();
                    let cmd = redis::cmd("PING");
                    let ping = cmd.query_async::<String>(&mut c);
                    match tokio::time::timeout_at(deadline, ping).await {
                        Ok(Ok(_)) => {
                            up = true;
                            break;
                        }
                        Ok(Err(_)) => {}
                        Err(_) => break,
                    }
                }
                unsettled.0 = None;
                if !up {
                    self.breaker.failure();
                    return Err(LinkError::Unavailable(
                        "circuit open: Redis still does not answer".into(),
                    ));
                }
                self.breaker.success();
            }
        }
        match tokio::time::timeout(limit, f(self.conn.clone())).await {
            Ok(Ok(v)) => {
                self.breaker.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                let err = classify(&e);
                match err {
                    LinkError::Unavailable(_) => self.breaker.failure(),
                    // Redis answered: it is up.
                    _ => self.breaker.success(),
                }
                Err(err)
            }
            Err(_) => {
                self.breaker.failure();
                Err(LinkError::Unavailable(format!(
                    "no answer within {} ms",
                    limit.as_millis()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_are_refused_without_the_password() {
        let e = RedisLink::open(
            "http://ann:s3cret@h:1/0",
            Duration::from_millis(100),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("bad Redis URL") && !e.to_string().contains("s3cret"),
            "{e}"
        );
        let e = RedisLink::open(
            "redis://ann:s3cret@h:1/notadb",
            Duration::from_millis(100),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn the_breaker_opens_cools_down_and_closes() {
        let b = Breaker::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            b.failure();
            assert!(b.allow());
        }
        b.failure();
        assert!(b.is_open());
        assert!(!b.allow());
        *b.state.lock() = BreakerState::Open {
            until: Instant::now(),
        };
        assert!(b.allow(), "one probe after the cool-down");
        assert!(!b.allow(), "only one");
        b.failure();
        assert!(!b.allow(), "a failed probe re-opens it");
        *b.state.lock() = BreakerState::Open {
            until: Instant::now(),
        };
        assert!(b.allow());
        b.success();
        assert!(!b.is_open() && b.allow());
        assert_eq!(b.times_opened(), 2);
    }

    #[test]
    fn a_probe_given_up_half_way_reopens_the_breaker() {
        let b = Breaker::default();
        for _ in 0..BREAKER_THRESHOLD {
            b.failure();
        }
        b.probe_soon();
        assert!(b.allow(), "the probe");
        assert!(!b.allow(), "half-open: nobody else");
        drop(ProbeGuard(Some(&b)));
        assert!(b.is_open() && !b.allow(), "open again, cooling down");
        b.probe_soon();
        assert!(b.allow(), "and probing again after the cool-down");
    }

    #[test]
    fn news_that_the_server_is_back_cuts_the_cool_down_short() {
        let b = Breaker::default();
        b.probe_soon();
        assert!(!b.is_open(), "a closed breaker stays closed");
        for _ in 0..BREAKER_THRESHOLD {
            b.failure();
        }
        assert!(!b.allow(), "cooling down");
        b.probe_soon();
        assert!(b.allow(), "probes at once");
        assert!(!b.allow(), "still one probe at a time");
    }
}
