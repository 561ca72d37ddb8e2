//! The admin API's endpoints (described in `openapi.json`, served at `/openapi.json`).
//!
//! | method | path | scope |
//! |---|---|---|
//! | GET | `/v1/status` | read |
//! | GET | `/v1/silos` | read |
//! | GET | `/v1/rounds?limit=N` | read |
//! | GET | `/v1/versions` | read |
//! | GET | `/v1/audit?limit=N` | read |
//! | POST | `/v1/candidates/{version}/approve` | approve |
//! | POST | `/v1/candidates/{version}/reject` | approve |
//! | POST | `/v1/rounds` | operate |
//! | POST | `/v1/pause` | operate |
//! | POST | `/v1/resume` | operate |

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{authenticate, require, Caller, Denied, Peer};
use super::tokens::{Scope, TokenFile};
use crate::control::{ControlError, ControlRequest, FederationControl};
use crate::registry::Registry;

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the endpoints work on.
#[derive(Debug)]
pub struct AdminApi {
    /// The running coordinator.
    pub control: FederationControl,
    /// The model registry (read-only use).
    pub registry: Arc<Registry>,
    /// The coordinator's state directory (events and audit journal).
    pub state_dir: PathBuf,
    /// Bearer tokens, if any are accepted.
    pub tokens: Option<TokenFile>,
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"fedsilo\""),
            );
        }
        r
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(m) => ApiError(StatusCode::UNAUTHORIZED, m),
            Denied::Forbidden(m) => ApiError(StatusCode::FORBIDDEN, m),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            ControlError::Unavailable(_) => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

type Api = State<Arc<AdminApi>>;
type Answer = Result<Json<Value>, ApiError>;

/// The caller, if authenticated and allowed `needed`.
fn guard(
    api: &AdminApi,
    headers: &HeaderMap,
    peer: &Peer,
    needed: Scope,
) -> Result<Caller, ApiError> {
    let caller = authenticate(headers, peer, api.tokens.as_ref())?;
    require(&caller, needed)?;
    Ok(caller)
}

/// `?limit=N` (default 50, at most 1000).
#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<usize>,
}

impl Limit {
    fn get(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 1000)
    }
}

/// A request body with an optional reason (`{}` or no body at all is fine).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: String,
}

fn reason(body: &Bytes) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    serde_json::from_slice::<Reason>(body)
        .map(|r| r.reason)
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON like {{\"reason\": \"...\"}}: {e}"),
            )
        })
}

/// The last `n` lines of a JSON-lines file, parsed (unparsable lines are skipped and counted).
fn tail(
    path: &std::path::Path,
    n: usize,
    keep: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>, ApiError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}: {e}", path.display()),
            ))
        }
    };
    let mut out: Vec<Value> = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| keep(v))
        .take(n)
        .collect();
    out.reverse();
    Ok(out)
}

async fn status(State(api): Api, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    Ok(Json(json!(api.control.status())))
}

async fn silos(State(api): Api, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    Ok(Json(json!({ "silos": api.control.status().silos })))
}

/// Round outcomes, oldest first, from the event log.
async fn rounds(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Query(limit): Query<Limit>,
) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let rounds = tail(&api.state_dir.join("events.jsonl"), limit.get(), |e| {
        matches!(
            e["event"].as_str(),
            Some("round_committed" | "round_rejected" | "round_abandoned" | "awaiting_approval")
        )
    })?;
    Ok(Json(json!({ "rounds": rounds })))
}

async fn versions(State(api): Api, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let registry = api.registry.clone();
    let list = tokio::task::spawn_blocking(move || registry.list())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "versions": list })))
}

async fn audit(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Query(limit): Query<Limit>,
) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let entries = tail(&api.state_dir.join("audit.jsonl"), limit.get(), |_| true)?;
    Ok(Json(json!({ "entries": entries })))
}

async fn decide(
    api: &AdminApi,
    peer: &Peer,
    headers: &HeaderMap,
    version: u64,
    body: &Bytes,
    approve: bool,
) -> Answer {
    let caller = guard(api, headers, peer, Scope::Approve)?;
    let result = api
        .control
        .request(ControlRequest::Decide {
            approve,
            version,
            reason: reason(body)?,
            by: caller.by(),
            certificate: caller.certificate(),
        })
        .await?;
    Ok(Json(json!({ "result": result })))
}

async fn approve(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(version): Path<u64>,
    body: Bytes,
) -> Answer {
    decide(&api, &peer, &headers, version, &body, true).await
}

async fn reject(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(version): Path<u64>,
    body: Bytes,
) -> Answer {
    decide(&api, &peer, &headers, version, &body, false).await
}

async fn start_round(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = guard(&api, &headers, &peer, Scope::Operate)?;
    let result = api
        .control
        .request(ControlRequest::StartRound { by: caller.by() })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "result": result }))))
}

async fn pause(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = guard(&api, &headers, &peer, Scope::Operate)?;
    let result = api.control.pause(&caller.by(), &reason(&body)?).await?;
    Ok(Json(json!({ "result": result })))
}

async fn resume(State(api): Api, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Answer {
    let caller = guard(&api, &headers, &peer, Scope::Operate)?;
    let result = api.control.resume(&caller.by()).await?;
    Ok(Json(json!({ "result": result })))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint: see GET /openapi.json".into(),
    )
}

/// The API's routes (every connection adds its [`Peer`] as an extension).
pub fn router(api: Arc<AdminApi>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/status", get(status))
        .route("/v1/silos", get(silos))
        .route("/v1/rounds", get(rounds).post(start_round))
        .route("/v1/versions", get(versions))
        .route("/v1/audit", get(audit))
        .route("/v1/candidates/{version}/approve", post(approve))
        .route("/v1/candidates/{version}/reject", post(reject))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .fallback(not_found)
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route is in the OpenAPI description, with the methods the router serves.
    #[test]
    fn the_openapi_description_covers_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        for (path, method) in [
            ("/v1/status", "get"),
            ("/v1/silos", "get"),
            ("/v1/rounds", "get"),
            ("/v1/rounds", "post"),
            ("/v1/versions", "get"),
            ("/v1/audit", "get"),
            ("/v1/candidates/{version}/approve", "post"),
            ("/v1/candidates/{version}/reject", "post"),
            ("/v1/pause", "post"),
            ("/v1/resume", "post"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not described");
            for code in ["401", "403"] {
                assert!(
                    op["responses"][code].is_object(),
                    "{method} {path}: no {code}"
                );
            }
        }
        let described = doc["paths"].as_object().unwrap().len();
        assert_eq!(
            described, 9,
            "a path is described that the router does not serve"
        );
    }
}
