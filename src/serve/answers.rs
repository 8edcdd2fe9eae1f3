//! The read side of the sidecar: an answer (`GET /v1/answers/{query}?NAME=VALUE…`), the catalog
//! (`/v1/queries`), the versions (`/v1/versions`) and readiness (`/readyz`).
//!
//! An answer carries what a chatbot needs to say how current it is — fresh or stale, its age and
//! why, the versions and the batch its data is of, where it came from — in its JSON and in the
//! HTTP headers a cache would use: `Cache-Status` as RFC 9211 writes it, `Age`, and a weak `ETag`
//! derived from the query and the versions, so `If-None-Match` gets `304` until the data changes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, Shared};
use crate::engine::flight::LoadError;
use crate::engine::{Answer, Freshness, GetError, Source};
use crate::model::catalog::{CatalogError, Request};
use crate::warehouse::WarehouseError;

/// How long a client should wait before asking again when the warehouse is unavailable.
const RETRY_AFTER_S: u64 = 5;

/// Where answers are: `/v1/answers/{query}`.
const ANSWERS: &str = "/v1/answers/";

/// Whether `path` names an answer (one segment after [`ANSWERS`]); anything else is the
/// router's (its `404` for `/v1/answers/` alone or with more segments).
pub(super) fn is_answer_path(path: &str) -> bool {
    path.strip_prefix(ANSWERS)
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// `GET /v1/answers/{query}?NAME=VALUE…` as routed by axum (`HEAD` and the like; a `GET` comes
/// straight to [`answer_to`]).
pub(super) async fn answer(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
) -> Response {
    answer_to(&shared, request.into_parts().0).await
}

/// The answer to a request with `head` (its body, if any, is not read), or the error saying why
/// there is none.
pub(super) async fn answer_to(shared: &Shared, head: axum::http::request::Parts) -> Response {
    match answer_of(shared, &head.uri, &head.headers).await {
        Ok(r) | Err(r) => r,
    }
}

async fn answer_of(
    shared: &Shared,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<Response, Response> {
    let encoded = uri.path().strip_prefix(ANSWERS).unwrap_or_default();
    let name = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|e| {
            bad_request(
                format!("bad query name in the path: {e}"),
                "GET /v1/queries lists the queries",
            )
        })?;
    // Decoded in place: owned only where a name or value was percent-encoded.
    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).collect();
    if let Some(dup) = params
        .iter()
        .enumerate()
        .find(|(i, (k, _))| params[..*i].iter().any(|(seen, _)| seen == k))
    {
        return Err(bad_request(
            format!("parameter `{}` given twice", dup.1.0),
            "give each parameter once",
        ));
    }
    let engine = shared.instance.engine();
    let request = engine
        .request(&name, &params)
        .map_err(|e| catalog_error(shared, &e))?;
    let answer = engine
        .get(&request)
        .await
        .map_err(|e| get_error(shared, e))?;
    Ok(respond(shared, &request, &answer, headers))
}

fn bad_request(error: String, hint: &str) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, error, hint).into_response()
}

/// `404` naming the known queries for an unknown one; `400` naming the parameter otherwise.
fn catalog_error(shared: &Shared, e: &CatalogError) -> Response {
    match e {
        CatalogError::UnknownQuery { .. } => {
            let known: Vec<&str> = shared
                .instance
                .engine()
                .catalog()
                .queries()
                .iter()
                .map(|q| q.name.as_str())
                .collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                e.to_string(),
                "GET /v1/queries lists the queries with their parameters",
            )
            .with("known", json!(known))
            .into_response()
        }
        _ => bad_request(
            e.to_string(),
            "GET /v1/queries lists each query's parameters",
        ),
    }
}

/// `503` (with `Retry-After`) when the warehouse is unavailable and nothing can be served, `504`
/// when it did not answer in time, `502` when it answered with an error.
fn get_error(shared: &Shared, e: GetError) -> Response {
    match &e {
        GetError::Catalog(c) => catalog_error(shared, c),
        GetError::Warehouse {
            error:
                LoadError::Warehouse(WarehouseError::Unavailable(_) | WarehouseError::NotInitialised(_)),
            ..
        } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
            "the warehouse is unavailable and no earlier answer is held; ask again later",
        )
        .retry_after(RETRY_AFTER_S)
        .into_response(),
        GetError::Timeout { .. }
        | GetError::Warehouse {
            error: LoadError::Deadline(_),
            ..
        } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            e.to_string(),
            "the warehouse was too slow; the load goes on and fills the cache when it finishes",
        )
        .into_response(),
        GetError::Warehouse { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            e.to_string(),
            "the warehouse failed this query; its logs say why",
        )
        .into_response(),
    }
}

/// The answer's weak entity tag: the request's fingerprint and the versions its data is of.
fn etag(request: &Request, answer: &Answer) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let fingerprint = request.fingerprint();
    let mut tag = String::with_capacity(64);
    tag.push_str("W/\"");
    // 32 hex digits, most significant first, as `{:032x}` writes them (without its formatter).
    tag.extend(
        (0..32)
            .rev()
            .map(|i| char::from(HEX[((fingerprint >> (4 * i)) & 0xf) as usize])),
    );
    for v in answer.versions().versions() {
        let _ = write!(tag, "-{v}");
    }
    tag.push('"');
    tag
}

/// Whether `If-None-Match` names `tag` (or is `*`); weak comparison, as RFC 9110 asks for it.
fn none_match(headers: &HeaderMap, tag: &str) -> bool {
    fn weak(t: &str) -> &str {
        t.trim().trim_start_matches("W/")
    }
    let ours = weak(tag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || weak(t) == ours)
}

/// `Cache-Status` (RFC 9211): a hit; a miss forwarded to the warehouse (and stored); a miss that
/// joined another caller's load (collapsed); a stale hit with its negative TTL and why.
fn cache_status(answer: &Answer) -> HeaderValue {
    match (&answer.freshness, answer.source) {
        (Freshness::Fresh, Source::Cache) => HeaderValue::from_static("freshcache; hit"),
        (Freshness::Fresh, Source::Warehouse) => {
            HeaderValue::from_static("freshcache; fwd=miss; stored")
        }
        (Freshness::Fresh, Source::Coalesced) => {
            HeaderValue::from_static("freshcache; fwd=miss; collapsed")
        }
        (Freshness::Stale { age, reason }, _) => header_value(format!(
            "freshcache; hit; ttl=-{}; detail={}",
            age.as_secs(),
            serde_json::to_string(&reason.to_string()).unwrap_or_default()
        )),
    }
}

/// A header value from text this module wrote (never a control character); empty if it were.
fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_maybe_shared(axum::body::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The batch the answer's data is of: for a fresh answer the newest batch of the tables it reads
/// as the versions have them; for a stale one, the batches its value says it was read at.
fn batch(shared: &Shared, request: &Request, answer: &Answer) -> Option<String> {
    if answer.freshness.is_fresh() {
        let versions = shared.instance.engine().versions();
        return request
            .query()
            .tables
            .iter()
            .map(|&t| versions.table_batch(t))
            .max()
            .filter(|b| !b.is_empty())
            .map(str::to_string);
    }
    let value: serde_json::Value = serde_json::from_str(answer.value()).ok()?;
    value["batches"]
        .as_object()?
        .values()
        .filter_map(serde_json::Value::as_str)
        .max()
        .map(str::to_string)
}

fn respond(shared: &Shared, request: &Request, answer: &Answer, headers: &HeaderMap) -> Response {
    let engine = shared.instance.engine();
    let now = engine.clock().now_ms();
    let age_ms = now.saturating_sub(answer.computed_at_ms());
    let tag = etag(request, answer);
    let mut response = if none_match(headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body(shared, request, answer, age_ms),
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, header_value(tag));
    h.insert("cache-status", cache_status(answer));
    h.insert(header::AGE, HeaderValue::from(age_ms / 1000));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Appends `text` as a JSON string.
fn push_str(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail, and a &str always serialises.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The JSON answer, written field by field around the stored value (already JSON) rather than
/// built as a document and re-encoded: this is the sidecar's hot path.
fn body(shared: &Shared, request: &Request, answer: &Answer, age_ms: u64) -> Vec<u8> {
    let tables = shared.instance.engine().catalog().tables();
    let value = answer.value();
    let mut out = Vec::with_capacity(value.len() + 384);
    out.extend_from_slice(b"{\"query\":");
    push_str(&mut out, &request.query().name);
    out.extend_from_slice(b",\"params\":{");
    for (i, (k, v)) in request.params().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(&mut out, k);
        out.push(b':');
        push_str(&mut out, v);
    }
    let (freshness, reason) = match &answer.freshness {
        Freshness::Fresh => ("fresh", None),
        Freshness::Stale { reason, .. } => ("stale", Some(reason.to_string())),
    };
    let _ = write!(
        out,
        "}},\"freshness\":\"{freshness}\",\"age_ms\":{age_ms},\"reason\":"
    );
    match reason {
        Some(r) => push_str(&mut out, &r),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"computed_at\":");
    match crate::model::clock::rfc3339_bytes(answer.computed_at_ms()) {
        Some(at) => {
            out.push(b'"');
            out.extend_from_slice(&at);
            out.push(b'"');
        }
        None => push_str(
            &mut out,
            &crate::model::clock::format_rfc3339(answer.computed_at_ms()),
        ),
    }
    out.extend_from_slice(b",\"versions\":{");
    for (i, (t, v)) in answer.versions().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(&mut out, tables.name(t));
        let _ = write!(out, ":{v}");
    }
    out.extend_from_slice(b"},\"batch\":");
    match batch(shared, request, answer) {
        Some(b) => push_str(&mut out, &b),
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, ",\"source\":\"{}\",\"value\":", answer.source);
    out.extend_from_slice(value.as_bytes());
    out.push(b'}');
    out
}

/// `GET /v1/queries`: every query, its title, parameters and tables.
pub(super) async fn queries(State(shared): State<Arc<Shared>>) -> Response {
    let catalog = shared.instance.engine().catalog();
    let tables = catalog.tables();
    let list: Vec<serde_json::Value> = catalog
        .queries()
        .iter()
        .map(|q| {
            json!({
                "name": q.name,
                "title": q.title,
                "tables": q.tables.iter().map(|&t| tables.name(t)).collect::<Vec<_>>(),
                "params": q.params.iter().map(|p| json!({
                    "name": p.name,
                    "required": p.default.is_none(),
                    "default": p.default,
                    "choices": p.choices,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(json!({ "queries": list })).into_response()
}

/// `GET /v1/versions`: the versions this instance holds, each table's batch, and whether they
/// are confirmed by the truth.
pub(super) async fn versions(State(shared): State<Arc<Shared>>) -> Response {
    let engine = shared.instance.engine();
    let v = engine.versions();
    let tables = engine.catalog().tables();
    let by_table: serde_json::Map<String, serde_json::Value> = tables
        .ids()
        .map(|t| {
            (
                tables.name(t).to_string(),
                json!({ "version": v.version(t), "batch": v.table_batch(t) }),
            )
        })
        .collect();
    axum::Json(json!({
        "tables": by_table,
        "batch": v.batch.to_string(),
        "verified": engine.unverified_since().is_none(),
        "degraded": engine.degraded(),
    }))
    .into_response()
}

/// `GET /readyz`: `200` when the versions are confirmed by the truth and the cache is not
/// degraded; `503` saying which otherwise.
pub(super) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let engine = shared.instance.engine();
    let why = shared
        .instance
        .start_error()
        .or_else(|| engine.degraded())
        .map(|d| format!("degraded: {d}"))
        .or_else(|| {
            engine.unverified_since().map(|since| {
                format!(
                    "the versions are unverified since {}",
                    crate::model::clock::format_rfc3339(since)
                )
            })
        });
    match why {
        None => axum::Json(json!({ "status": "ready" })).into_response(),
        Some(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            why,
            "answers are still served (stale ones labelled); readiness returns with the shared cache",
        )
        .retry_after(1)
        .into_response(),
    }
}
