//! `freshcache serve`: the cache as an HTTP sidecar, so that API servers in any language get its
//! guarantees — versioned freshness, one warehouse query per (query, version), stale answers
//! labelled with their age — by asking `GET /v1/answers/{query}?NAME=VALUE…` on loopback.
//!
//! * [`app`] is the whole HTTP application: answers ([`answers`]), the catalog, the versions,
//!   liveness and readiness, `/metrics` (the same route the metrics endpoint serves), and the
//!   operator endpoints ([`admin`]), which are off unless a token is configured. An answer's
//!   `GET` goes straight to its handler ([`Front`]); the rest is routed by axum.
//! * Every answer that is not a success is one JSON object `{"error","code","hint"}`, `code` being
//!   the HTTP status.
//! * [`Sidecar::serve`] runs it on [`crate::http`]'s server with keep-alive, within [`LIMITS`],
//!   with a cap on requests in flight ([`ServeConfig::max_in_flight`], `503` beyond it), and
//!   drains on shutdown.

pub mod admin;
pub mod answers;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Semaphore, watch};

use crate::http::{Limits, Listener};
use crate::instance::Instance;
use crate::metrics::Exporter;
use crate::secret::Secret;

/// What the sidecar lets one client take: a request head within 5 s (and an idle kept-alive
/// connection at most that long), an answer taken within 10 s, 4096 connections at once.
pub const LIMITS: Limits = Limits {
    read_timeout: Duration::from_secs(5),
    write_timeout: Duration::from_secs(10),
    connections: 4096,
    keep_alive: true,
    drain: Duration::from_secs(10),
    title_case: false,
};

/// The largest request body read (the operator endpoints' JSON), in bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// How the sidecar is run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The operator endpoints' bearer token; `None` turns them off.
    pub admin_token: Option<Secret<String>>,
    /// Requests handled at once; more get `503` at once.
    pub max_in_flight: usize,
    /// The longest an operator call (its body included) may take.
    pub admin_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            max_in_flight: 1024,
            admin_timeout: Duration::from_secs(30),
        }
    }
}

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) instance: Instance,
    pub(crate) config: ServeConfig,
    in_flight: Arc<Semaphore>,
}

/// An error answer: its status and the JSON object `{"error","code","hint"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    hint: String,
    /// Extra fields (the known queries of a `404`).
    extra: Option<(&'static str, serde_json::Value)>,
    /// Seconds a client should wait before asking again (`503`).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, saying `error`, and what to do about it.
    pub fn new(status: StatusCode, error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            status,
            error: crate::sanitize::clean_line(&error.into()),
            hint: hint.into(),
            extra: None,
            retry_after: None,
        }
    }

    /// With a field of its own beside the three.
    pub fn with(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.extra = Some((name, value));
        self
    }

    /// With `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.error,
            "code": self.status.as_u16(),
            "hint": self.hint,
        });
        if let (Some((name, value)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.insert(name.to_string(), value);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// The sidecar's application for `instance`, configured by `config`: every endpoint, each
/// request counted against [`ServeConfig::max_in_flight`].
pub fn app(instance: Instance, config: ServeConfig) -> Front {
    let exporter = Arc::new(Exporter::new(instance.clone()));
    let shared = Arc::new(Shared {
        in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        instance,
        config,
    });
    let router = Router::new()
        .route("/v1/answers/{query}", get(answers::answer))
        .route("/v1/queries", get(answers::queries))
        .route("/v1/versions", get(answers::versions))
        .route("/healthz", get(healthz))
        .route("/readyz", get(answers::readyz))
        .route("/v1/etl-complete", post(admin::etl_complete))
        .route("/v1/invalidate", post(admin::invalidate))
        .route("/v1/warm", post(admin::warm))
        .route("/v1/simulate-partial", post(admin::simulate_partial))
        .merge(crate::metrics::router(exporter))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared.clone());
    Front { shared, router }
}

/// The sidecar's service: takes a place among the requests in flight (or answers `503` at once),
/// then serves a `GET` of an answer — the hot path — straight from the engine, and everything
/// else (the other endpoints, `HEAD`, wrong methods, unknown paths) through the router. Both
/// ways end in the same handler, [`answers::answer_to`].
#[derive(Clone)]
pub struct Front {
    shared: Arc<Shared>,
    router: Router,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").finish_non_exhaustive()
    }
}

type Served = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<B> tower_service::Service<Request<B>> for Front
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Served;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Served {
        let Ok(permit) = self.shared.in_flight.clone().try_acquire_owned() else {
            let busy = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight",
                "ask again in a moment; the limit is --max-in-flight",
            )
            .retry_after(1)
            .into_response();
            return Box::pin(std::future::ready(Ok(busy)));
        };
        if request.method() == Method::GET && answers::is_answer_path(request.uri().path()) {
            let shared = self.shared.clone();
            let (head, _body) = request.into_parts();
            return Box::pin(async move {
                let response = answers::answer_to(&shared, head).await;
                drop(permit);
                Ok(response)
            });
        }
        let routed = tower_service::Service::call(&mut self.router, request.map(Body::new));
        Box::pin(async move {
            let response = routed.await;
            drop(permit);
            response
        })
    }
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "alive" })).into_response()
}

async fn not_found(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD && method != Method::POST {
        return method_not_allowed().await;
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint",
        "answers are at GET /v1/answers/{query}; GET /v1/queries lists the queries",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed here",
        "answers, the catalog and the versions are GET; the operator endpoints are POST",
    )
    .into_response()
}

/// The sidecar of one instance, bound and ready to serve.
#[derive(Debug)]
pub struct Sidecar {
    listener: Listener,
}

impl Sidecar {
    /// Binds `addr` (`HOST:PORT`); a bad address or a port in use is reported here.
    pub fn bind(addr: &str) -> Result<Self, crate::http::BindError> {
        Ok(Self {
            listener: crate::http::bind(addr, 8080)?,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr()
    }

    /// Serves `instance` until `shutdown` turns true, then drains (see [`crate::http`]).
    pub async fn serve(
        self,
        instance: Instance,
        config: ServeConfig,
        shutdown: watch::Receiver<bool>,
    ) {
        self.listener
            .serve(app(instance, config), LIMITS, shutdown)
            .await;
    }
}
