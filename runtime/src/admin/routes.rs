//! The admin API's endpoints (described in `openapi.json`, served at `/openapi.json`).
//!
//! | method | path | scope |
//! |---|---|---|
//! | GET | `/v1/status` | read |
//! | GET | `/v1/silos` | read |
//! | GET | `/v1/rounds?limit=N` | read |
//! | GET | `/v1/versions` | read |
//! | GET | `/v1/audit?limit=N` | read |
//! | GET | `/v1/runs` | read |
//! | GET | `/v1/runs/{id}` | read |
//! | GET | `/v1/deployments` | read |
//! | GET | `/metrics` | read (Prometheus text format) |
//! | POST | `/v1/candidates/{version}/approve` | approve |
//! | POST | `/v1/candidates/{version}/reject` | approve |
//! | POST | `/v1/versions/{version}/rollback` | operate |
//! | POST | `/v1/rounds` | operate |
//! | POST | `/v1/runs` | operate |
//! | POST | `/v1/runs/{id}/cancel` | operate |
//! | POST | `/v1/deployments` | operate |
//! | POST | `/v1/pause` | operate |
//! | POST | `/v1/resume` | operate |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{authenticate, require, Caller, Denied, Peer};
use super::tokens::{Scope, TokenFile};
use crate::cluster::refusal_log::RefusalLog;
use crate::control::{ControlError, ControlRequest, FederationControl, RunRequest};
use crate::decision::Kind as DecisionKind;
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
    /// Refused requests (401, 403), logged rate-limited and counted.
    pub refusals: RefusalLog,
    /// The coordinator's metrics, where refusals are counted by status (`None`: not counted).
    pub metrics: Option<Arc<crate::metrics::FederationMetrics>>,
    /// What `GET /metrics` shows (`None`: 404).
    pub exposition: Option<crate::metrics::Exposition>,
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

/// Largest request body (a JSON reason).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time a whole request body may take to arrive, counted once the caller is authenticated.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"fedsilo\""),
            );
        }
        // A refused request's body is never read: the connection cannot carry another request.
        if self.0.is_client_error() {
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        r
    }
}

/// Reads a request body once its caller has been authenticated: at most [`MAX_BODY_BYTES`],
/// all of it within [`BODY_DEADLINE`]. Handlers take the body unread ([`Body`]) and call this
/// after [`guard`], so an unauthenticated client can never make the server wait for a body.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_DEADLINE, limited.collect()).await {
        Err(_) => Err(ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {BODY_DEADLINE:?}"),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )),
        Ok(Err(e)) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
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
            ControlError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            ControlError::Failed(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, m),
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
    let checked = authenticate(headers, peer, api.tokens.as_ref())
        .and_then(|caller| require(&caller, needed).map(|()| caller));
    checked.map_err(|denied| {
        let (status, why) = match &denied {
            Denied::Unauthenticated(m) => (401, format!("admin API 401: {m}")),
            Denied::Forbidden(m) => (403, format!("admin API 403: {m}")),
        };
        if let Some(m) = &api.metrics {
            m.admin_refused(status);
        }
        let identity = peer.certificate.as_ref().map(|(id, _)| id);
        api.refusals.warn(&peer.addr, identity, &why);
        denied.into()
    })
}

/// `?limit=N` (default 50, at most 1000), read after the caller is authenticated.
fn limit(query: Option<&str>) -> Result<usize, ApiError> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="));
    match value {
        None => Ok(50),
        Some(v) => v.parse::<usize>().map(|n| n.clamp(1, 1000)).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("limit={v}: must be a whole number (1 to 1000)"),
            )
        }),
    }
}

/// A version number from the path, read after the caller is authenticated.
fn version(v: &str) -> Result<u64, ApiError> {
    v.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{v:?} is not a version number"),
        )
    })
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

/// The last `n` lines of a JSON-lines file that `keep` accepts, oldest first (lines that do
/// not parse are skipped). Reads backwards from the end in blocks, off the async threads.
async fn tail(
    path: std::path::PathBuf,
    n: usize,
    keep: fn(&Value) -> bool,
) -> Result<Vec<Value>, ApiError> {
    let read = move || -> std::io::Result<Vec<Value>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut end = file.seek(SeekFrom::End(0))?;
        let mut carry: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        const BLOCK: u64 = 64 << 10;
        while end > 0 && out.len() < n {
            let start = end.saturating_sub(BLOCK);
            let mut block = vec![0u8; (end - start) as usize];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut block)?;
            block.extend_from_slice(&carry);
            // The first line of the block may be partial unless the block starts the file.
            let mut lines: Vec<&[u8]> = block.split(|b| *b == b'\n').collect();
            carry = if start > 0 {
                lines.remove(0).to_vec()
            } else {
                Vec::new()
            };
            for line in lines.iter().rev() {
                if let Ok(v) = serde_json::from_slice::<Value>(line) {
                    if keep(&v) {
                        out.push(v);
                        if out.len() == n {
                            break;
                        }
                    }
                }
            }
            end = start;
        }
        out.reverse();
        Ok(out)
    };
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the log: {e}"),
            )
        })
}

fn round_outcome(e: &Value) -> bool {
    matches!(
        e["event"].as_str(),
        Some("round_committed" | "round_rejected" | "round_abandoned" | "awaiting_approval")
    )
}

async fn status(State(api): Api, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    Ok(Json(json!(api.control.status())))
}

async fn silos(State(api): Api, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let status = api.control.status();
    Ok(Json(
        json!({ "silos": status.silos, "expected": status.roster }),
    ))
}

/// Round outcomes, oldest first, from the event log.
async fn rounds(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let n = limit(query.as_deref())?;
    let rounds = tail(api.state_dir.join("events.jsonl"), n, round_outcome).await?;
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
    RawQuery(query): RawQuery,
) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let n = limit(query.as_deref())?;
    let entries = tail(api.state_dir.join("audit.jsonl"), n, |_| true).await?;
    Ok(Json(json!({ "entries": entries })))
}

async fn decide(
    api: &AdminApi,
    peer: &Peer,
    headers: &HeaderMap,
    version: &str,
    body: Body,
    kind: DecisionKind,
) -> Answer {
    // Rolling the live model back is an operator's act; approving a candidate the board's.
    let needed = match kind {
        DecisionKind::Rollback => Scope::Operate,
        DecisionKind::Approve | DecisionKind::Reject => Scope::Approve,
    };
    let caller = guard(api, headers, peer, needed)?;
    let version = self::version(version)?;
    let body = read_body(body).await?;
    let result = api
        .control
        .request(ControlRequest::Decide {
            kind,
            version,
            reason: reason(&body)?,
            by: caller.by(),
            certificate: caller.certificate(),
        })
        .await?;
    Ok(Json(json!({ "result": result })))
}

/// The POST route of a decision of `kind` on the version in the path.
fn decision(kind: DecisionKind) -> axum::routing::MethodRouter<Arc<AdminApi>> {
    post(
        move |State(api): Api,
              Extension(peer): Extension<Peer>,
              headers: HeaderMap,
              Path(version): Path<String>,
              body: Body| async move {
            decide(&api, &peer, &headers, &version, body, kind).await
        },
    )
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
    body: Body,
) -> Answer {
    let caller = guard(&api, &headers, &peer, Scope::Operate)?;
    let body = read_body(body).await?;
    let result = api.control.pause(&caller.by(), &reason(&body)?).await?;
    Ok(Json(json!({ "result": result })))
}

/// The body of `POST /v1/runs`: `rounds`, and optionally the run's own `epochs`,
/// `batch_size`, `learning_rate`, `prox_mu` ([`crate::runs::RunSettings`]) and
/// `require_approval`, `max_auc_drop`, `max_silo_auc_drop`
/// ([`crate::runs::PolicyOverrides`]) — spelled out, because serde cannot refuse unknown
/// fields around a flattened struct.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    rounds: u64,
    #[serde(default)]
    epochs: Option<u32>,
    #[serde(default)]
    batch_size: Option<u32>,
    #[serde(default)]
    learning_rate: Option<f32>,
    #[serde(default)]
    prox_mu: Option<f32>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    require_approval: bool,
    #[serde(default)]
    max_auc_drop: Option<f64>,
    #[serde(default)]
    max_silo_auc_drop: Option<f64>,
}

/// The training runs, oldest first.
async fn runs(State(api): Api, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let status = api.control.status();
    Ok(Json(json!({ "active": status.run, "runs": status.runs })))
}

/// One training run (the status carries the open runs and the last 100 past ones).
async fn run(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let id = run_id(&id)?;
    match api.control.status().runs.into_iter().find(|r| r.id == id) {
        Some(r) => Ok(Json(json!(r))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("there is no run {id} among the open runs and the last 100 past ones"),
        )),
    }
}

/// The request's body as JSON of type `T`; a 400 naming `like` (an example body) otherwise.
async fn json_body<T: serde::de::DeserializeOwned>(body: Body, like: &str) -> Result<T, ApiError> {
    let body = read_body(body).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {like}: {e}"),
        )
    })
}

/// A run id from the path, read after the caller is authenticated.
fn run_id(v: &str) -> Result<u64, ApiError> {
    v.parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{v:?} is not a run id")))
}

/// Queues a training run.
async fn submit_run(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = guard(&api, &headers, &peer, Scope::Operate)?;
    let plan: Submission = json_body(body, r#"{"rounds": 5}"#).await?;
    let plan = crate::runs::RunPlan {
        rounds: plan.rounds,
        settings: crate::runs::RunSettings {
            epochs: plan.epochs,
            batch_size: plan.batch_size,
            learning_rate: plan.learning_rate,
            prox_mu: plan.prox_mu,
        },
        policy: crate::runs::PolicyOverrides {
            require_approval: plan.require_approval,
            max_auc_drop: plan.max_auc_drop,
            max_silo_auc_drop: plan.max_silo_auc_drop,
        },
        key: plan.key,
    };
    let (id, result) = api.control.submit_run(plan, &caller.by()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run": id, "result": result })),
    ))
}

/// Cancels a queued or running run.
async fn cancel_run(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Answer {
    let caller = guard(&api, &headers, &peer, Scope::Operate)?;
    let body = read_body(body).await?;
    let run = run_id(&id)?;
    let result = api
        .control
        .request(ControlRequest::Run(RunRequest::Cancel {
            run,
            by: caller.by(),
            reason: reason(&body)?,
        }))
        .await?;
    Ok(Json(json!({ "result": result })))
}

/// The body of `POST /v1/deployments`: the version, and where to — every silo (neither
/// `region` nor `silos`), a region, or named silos.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentOrder {
    version: u64,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    silos: Option<Vec<String>>,
    #[serde(default)]
    reason: String,
}

/// The deployment orders (the newest 100) and what each silo holds.
async fn deployments(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    guard(&api, &headers, &peer, Scope::Read)?;
    let status = api.control.status();
    let silos: Vec<Value> = status
        .silos
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "region": s.region,
                "deployed_version": s.deployed_version,
                "deployment_due": s.deployment_due,
                "deployment_refused": s.deployment_refused,
            })
        })
        .collect();
    Ok(Json(
        json!({ "deployments": status.deployments, "silos": silos }),
    ))
}

/// Orders a committed version deployed.
async fn deploy(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = guard(&api, &headers, &peer, Scope::Operate)?;
    let like = r#"{"version": 3}, with "region" or "silos" to deploy to fewer than every silo"#;
    let order: DeploymentOrder = json_body(body, like).await?;
    let target = match (order.region, order.silos) {
        (None, None) => crate::deploy::Target::All,
        (Some(region), None) => crate::deploy::Target::Region { region },
        (None, Some(silos)) => crate::deploy::Target::Silos { silos },
        (Some(_), Some(_)) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give \"region\" or \"silos\", not both".into(),
            ))
        }
    };
    let (id, result) = api
        .control
        .deploy(order.version, target, &caller.by(), &order.reason)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "deployment": id, "result": result })),
    ))
}

async fn resume(State(api): Api, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Answer {
    let caller = guard(&api, &headers, &peer, Scope::Operate)?;
    let result = api.control.resume(&caller.by()).await?;
    Ok(Json(json!({ "result": result })))
}

/// The Prometheus metrics, for a scraper on another host (the plain-HTTP endpoint binds to
/// loopback only).
async fn metrics(
    State(api): Api,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    guard(&api, &headers, &peer, Scope::Read)?;
    let what = api.exposition.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this coordinator exposes no metrics".into(),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            crate::metrics::Exposition::CONTENT_TYPE,
        )],
        what.render(),
    )
        .into_response())
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
        .route("/metrics", get(metrics))
        .route(
            "/v1/candidates/{version}/approve",
            decision(DecisionKind::Approve),
        )
        .route(
            "/v1/candidates/{version}/reject",
            decision(DecisionKind::Reject),
        )
        .route(
            "/v1/versions/{version}/rollback",
            decision(DecisionKind::Rollback),
        )
        .route("/v1/runs", get(runs).post(submit_run))
        .route("/v1/runs/{id}", get(run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/deployments", get(deployments).post(deploy))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .fallback(not_found)
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tail_reads_backwards_across_blocks_and_skips_what_does_not_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!(
                "{{\"event\":\"round_committed\",\"round\":{i},\"pad\":\"{}\"}}\n",
                "x".repeat(40)
            ));
            if i % 7 == 0 {
                text.push_str("not json\n{\"event\":\"silo_left\"}\n");
            }
        }
        std::fs::write(&path, &text).unwrap();
        assert!(text.len() > 3 * 65536, "spans blocks");
        let got = tail(path.clone(), 3, round_outcome).await.unwrap();
        let rounds: Vec<u64> = got.iter().map(|v| v["round"].as_u64().unwrap()).collect();
        assert_eq!(rounds, [4997, 4998, 4999]);
        let all = tail(path.clone(), 1000, round_outcome).await.unwrap();
        assert_eq!(all.len(), 1000);
        assert!(all
            .windows(2)
            .all(|w| w[0]["round"].as_u64() < w[1]["round"].as_u64()));
        assert!(tail(dir.path().join("none"), 5, round_outcome)
            .await
            .unwrap()
            .is_empty());
        assert!(limit(Some("limit=abc")).is_err());
        assert_eq!(limit(Some("x=1&limit=5000")).unwrap(), 1000);
        assert_eq!(limit(None).unwrap(), 50);
    }

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
            ("/v1/versions/{version}/rollback", "post"),
            ("/v1/pause", "post"),
            ("/v1/resume", "post"),
            ("/v1/runs", "get"),
            ("/v1/runs", "post"),
            ("/v1/runs/{id}", "get"),
            ("/v1/runs/{id}/cancel", "post"),
            ("/v1/deployments", "get"),
            ("/v1/deployments", "post"),
            ("/metrics", "get"),
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
            described, 15,
            "a path is described that the router does not serve"
        );
    }
}
