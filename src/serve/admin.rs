//! The operator endpoints: `POST /v1/etl-complete`, `/v1/invalidate`, `/v1/warm` and
//! `/v1/simulate-partial`.
//!
//! They are off unless the sidecar was given a token (`--admin-token-file`); then each call
//! carries `Authorization: Bearer TOKEN`, compared in constant time. The instance guards them as
//! it guards the console and the command line — read-only mode (`403`), production refusals
//! (`403`) — and writes each call to the event log with its actor: the caller's
//! `X-Freshcache-Actor` header (or `api`), marked `(HTTP)`, at the sidecar's host. The token
//! is never echoed, logged or counted anywhere.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{ApiError, Shared};
use crate::instance::{InstanceError, Operator, acting_as};
use crate::model::ops::Action;

/// The header that names who is calling, for the audit log.
pub const ACTOR_HEADER: &str = "x-freshcache-actor";

/// Whether `given` equals `expected`, in time that depends on neither's contents (only on the
/// longer's length).
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for i in 0..given.len().max(expected.len()) {
        let a = given.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= a ^ b;
    }
    std::hint::black_box(diff) == 0
}

/// The caller, if the request carries the token; the error answer otherwise.
fn authorise(shared: &Shared, headers: &HeaderMap) -> Result<Operator, Box<Response>> {
    let Some(token) = &shared.config.admin_token else {
        return Err(Box::new(
            ApiError::new(
                StatusCode::NOT_FOUND,
                "the operator endpoints are off",
                "start `freshcache serve` with --admin-token-file FILE to turn them on",
            )
            .into_response(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
            "send Authorization: Bearer TOKEN, the token in the sidecar's --admin-token-file",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"freshcache\""),
        );
        return Err(Box::new(r));
    }
    let user = headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| crate::sanitize::clean_short(v.trim(), 64))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "api".to_string());
    Ok(Operator {
        user: format!("{user} (HTTP)"),
        host: crate::model::events::hostname(),
    })
}

/// The body as `T`; an empty body is `{}`.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Box<Response>> {
    let body = body.map_err(|e| {
        Box::new(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body could not be read: {e}"),
                format!("send at most {} bytes of JSON", super::MAX_BODY),
            )
            .into_response(),
        )
    })?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(body).map_err(|e| {
        Box::new(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not the JSON expected: {e}"),
                "see the README's operator endpoints for each body",
            )
            .into_response(),
        )
    })
}

/// An instance's refusal or failure as an answer: refusals `403`, bad input `400`, a backend
/// that failed `503`.
fn instance_error(e: &InstanceError) -> Response {
    let (status, hint) = match e {
        InstanceError::ReadOnly(_) | InstanceError::Refused(_) => (
            StatusCode::FORBIDDEN,
            "refused by this instance's guards (read-only mode or its environment)",
        ),
        InstanceError::BadInput(_) => {
            (StatusCode::BAD_REQUEST, "GET /v1/versions lists the tables")
        }
        InstanceError::NoEtl => (
            StatusCode::CONFLICT,
            "this warehouse cannot be loaded from the sidecar",
        ),
        InstanceError::Bus(_) | InstanceError::Warehouse(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "a backend failed; ask again when it is back",
        ),
    };
    let mut r = ApiError::new(status, e.to_string(), hint);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r = r.retry_after(5);
    }
    r.into_response()
}

/// Runs `call` as the authorised caller, within the configured time.
async fn run<T, F>(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    call: impl FnOnce(T) -> F,
) -> Response
where
    T: DeserializeOwned,
    F: std::future::Future<Output = Result<serde_json::Value, InstanceError>>,
{
    let actor = match authorise(shared, headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let args = match parse::<T>(body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match tokio::time::timeout(shared.config.admin_timeout, acting_as(actor, call(args))).await {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(e)) => instance_error(&e),
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the action did not finish in time",
            "its outcome is in `freshcache events`",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EtlCompleteBody {
    batch: String,
    #[serde(default)]
    tables: Vec<String>,
}

/// `POST /v1/etl-complete {"batch": "20261126-10:00", "tables": [...]}`.
pub(super) async fn etl_complete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let instance = shared.instance.clone();
    run(&shared, &headers, body, |b: EtlCompleteBody| async move {
        let ids = instance.table_ids(&b.tables)?;
        let report = instance.etl_complete(&b.batch, &ids).await?;
        let summary = format!(
            "ok: bumped {}",
            if report.bumped.is_empty() {
                "nothing".to_string()
            } else {
                report.bumped.join(", ")
            }
        );
        instance
            .audit(Action::EtlComplete, vec![b.batch.clone()], &summary)
            .await;
        Ok(json!(report))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InvalidateBody {
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /v1/invalidate {"tables": ["sales"]}` or `{"all": true}`.
pub(super) async fn invalidate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let instance = shared.instance.clone();
    run(&shared, &headers, body, |b: InvalidateBody| async move {
        if b.tables.is_empty() != b.all {
            return Err(InstanceError::BadInput(
                "name the tables (\"tables\": [...]) or say \"all\": true, not both".into(),
            ));
        }
        // Empty means every table to the instance.
        let ids = instance.table_ids(&b.tables)?;
        Ok(json!(instance.invalidate(&ids).await?))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WarmBody {
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    50
}

/// `POST /v1/warm {"top": 50}`: starts loading the hottest keys that are not fresh; answers at
/// once with how many it started.
pub(super) async fn warm(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let instance = shared.instance.clone();
    run(&shared, &headers, body, |b: WarmBody| async move {
        let progress = instance.warm(b.top.min(10_000)).await?;
        let started = progress.borrow().total;
        Ok(json!({ "started": started }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SimulatePartialBody {
    fail: Vec<String>,
}

/// `POST /v1/simulate-partial {"fail": ["inventory"]}` (staging and development only).
pub(super) async fn simulate_partial(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let instance = shared.instance.clone();
    run(
        &shared,
        &headers,
        body,
        |b: SimulatePartialBody| async move {
            let ids = instance.table_ids(&b.fail)?;
            let (run, report) = instance.simulate_partial(&ids).await?;
            Ok(json!({ "batch": run.batch, "report": report }))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-tokem", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token-and-more", b"s3cret-token"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
