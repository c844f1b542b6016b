//! `fabric serve`: the ingest endpoint the Studio's exporter posts snapshots to.
//!
//! Contract (spec 04): `POST /v1/snapshots` with the channel in the
//! `X-Prime-Fabric-Channel` header or, for `navigator.sendBeacon`, the
//! `?channel=` query; CORS preflights answered for configured origins only;
//! bodies over the limit get 413 without being buffered whole; invalid JSON
//! 400, a record without `snapshotId`/`sessionId` 422, all with JSON error
//! bodies; 201 once the record is durably on disk ([`journal`]), 200 for a
//! duplicate. Loopback by default; any other address needs a token
//! (`Authorization: Bearer …` or `?token=`), compared in constant time.
//! `GET /healthz`, `GET /metrics` (Prometheus text). SIGTERM or Ctrl-C stop
//! accepting, flush, and exit 0.
//!
//! **No identifiable data lands**: each record is sanitized
//! ([`crate::prime::sanitize::clean_record`]: free text rebuilt from the
//! vocabulary, identifiers pseudonymized with the workspace's key) and
//! checked by the privacy verifier before anything touches the disk; only
//! the sanitized record is stored, under its session's pseudonym. A record
//! sanitize would drop gets 422 with the reason; one whose consent flag is
//! false gets 403 and nothing of it is kept.

pub mod journal;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::oneshot;

use journal::{Job, Stored};

use crate::prime::pseudonym::PseudonymKey;
use crate::prime::{privacy, sanitize};

/// The channel the Studio's exporter uses.
pub const CHANNEL: &str = "prime-brain";
/// The channel header.
pub const CHANNEL_HEADER: &str = "x-prime-fabric-channel";

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind (port 0 picks a free one).
    pub bind: SocketAddr,
    /// The POST path.
    pub path: String,
    /// Where records land.
    pub dir: PathBuf,
    /// Browser origins allowed to post (CORS).
    pub origins: Vec<String>,
    /// Required token, if any.
    pub token: Option<String>,
    /// Largest accepted body in bytes.
    pub max_body: usize,
    /// Longest a request may take (slow clients get 408).
    pub request_timeout: Duration,
    /// The pseudonym key identifiers are replaced with before storing.
    pub key: PseudonymKey,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

struct Shared {
    config: Config,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    counters: Counters,
}

type AppState = Arc<Shared>;

fn refuse(state: &Shared, status: StatusCode, reason: &'static str, message: String) -> Response {
    *state
        .counters
        .refused
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(reason)
        .or_insert(0) += 1;
    (status, axum::Json(json!({"error": message, "reason": reason}))).into_response()
}

/// The CORS headers for an allowed origin; `Err` when the origin is not allowed.
fn cors(state: &Shared, headers: &HeaderMap) -> Result<Vec<(header::HeaderName, HeaderValue)>, ()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(Vec::new());
    };
    let allowed = origin
        .to_str()
        .is_ok_and(|o| state.config.origins.iter().any(|a| a == o));
    if !allowed {
        return Err(());
    }
    Ok(vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
        (header::VARY, HeaderValue::from_static("Origin")),
    ])
}

fn token_ok(state: &Shared, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let Some(expected) = &state.config.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| query.get("token").cloned())
        .unwrap_or_default();
    // BLAKE3 hashes compare in constant time.
    blake3::hash(given.as_bytes()) == blake3::hash(expected.as_bytes())
}

async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match cors(&state, &headers) {
        Ok(allow) if !allow.is_empty() => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let h = response.headers_mut();
            for (name, value) in allow {
                h.insert(name, value);
            }
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type, x-prime-fabric-channel, authorization"),
            );
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            response
        }
        _ => refuse(
            &state,
            StatusCode::FORBIDDEN,
            "origin",
            "this origin may not post snapshots".into(),
        ),
    }
}

async fn ingest(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let Ok(allow) = cors(&state, &headers) else {
        return refuse(
            &state,
            StatusCode::FORBIDDEN,
            "origin",
            "this origin may not post snapshots".into(),
        );
    };
    let mut response = handle(&state, &query, &headers, request.into_body()).await;
    for (name, value) in allow {
        response.headers_mut().insert(name, value);
    }
    response
}

async fn handle(state: &Shared, query: &HashMap<String, String>, headers: &HeaderMap, body: Body) -> Response {
    if !token_ok(state, headers, query) {
        return refuse(
            state,
            StatusCode::UNAUTHORIZED,
            "token",
            "a valid token is required".into(),
        );
    }
    let channel = headers
        .get(CHANNEL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.get("channel").cloned());
    match channel.as_deref() {
        None => {
            return refuse(
                state,
                StatusCode::BAD_REQUEST,
                "channel",
                format!("missing channel: send `X-Prime-Fabric-Channel: {CHANNEL}` or `?channel={CHANNEL}`"),
            );
        }
        Some(CHANNEL) => {}
        Some(other) => {
            return refuse(
                state,
                StatusCode::FORBIDDEN,
                "channel",
                format!("unknown channel `{other}`"),
            );
        }
    }
    let bytes = match axum::body::to_bytes(body, state.config.max_body).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return refuse(
                state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "size",
                format!("the body is over the limit of {} bytes", state.config.max_body),
            );
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(error) => return refuse(state, StatusCode::BAD_REQUEST, "json", format!("invalid JSON: {error}")),
    };
    let id = value
        .get("snapshotId")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    let session = value
        .get("sessionId")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    let (Some(id), Some(_)) = (id, session) else {
        return refuse(
            state,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ids",
            "the record needs string `snapshotId` and `sessionId` fields".into(),
        );
    };
    let clean = match sanitize::clean_record(&String::from_utf8_lossy(&bytes), &state.config.key) {
        Ok(clean) => clean,
        Err(reason) if reason == "no_consent" => {
            return refuse(
                state,
                StatusCode::FORBIDDEN,
                "consent",
                "the snapshot's consent flag (allowExport) is false: nothing of it was stored".into(),
            );
        }
        Err(reason) => {
            return refuse(
                state,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("the snapshot would be dropped by sanitize ({reason}); nothing was stored"),
            );
        }
    };
    if let Err(problem) = privacy::check_snapshot(&clean) {
        return refuse(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "privacy",
            format!("the privacy verifier refused the sanitized record ({problem}); nothing was stored"),
        );
    }
    let (done, acknowledged) = oneshot::channel();
    let stored_as = clean.snapshot_id.clone();
    let job = Job {
        line: serde_json::to_string(&clean).expect("snapshots serialize"),
        id: clean.snapshot_id,
        session: clean.session_id,
        done,
    };
    let sent = state
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|jobs| jobs.send(job).is_ok())
        .unwrap_or(false);
    if !sent {
        return refuse(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutdown",
            "the server is shutting down".into(),
        );
    }
    match acknowledged.await {
        Ok(Ok(Stored::New)) => {
            state.counters.accepted.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::CREATED,
                axum::Json(json!({"status": "stored", "snapshotId": id, "storedAs": stored_as})),
            )
                .into_response()
        }
        Ok(Ok(Stored::Duplicate)) => {
            state.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::OK,
                axum::Json(json!({"status": "duplicate", "snapshotId": id, "storedAs": stored_as})),
            )
                .into_response()
        }
        Ok(Err(error)) => refuse(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("not stored: {error}"),
        ),
        Err(_) => refuse(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutdown",
            "the server is shutting down".into(),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let c = &state.counters;
    let mut text = String::new();
    text.push_str(
        "# HELP fabric_ingest_accepted_total Snapshots stored.\n# TYPE fabric_ingest_accepted_total counter\n",
    );
    text.push_str(&format!(
        "fabric_ingest_accepted_total {}\n",
        c.accepted.load(Ordering::Relaxed)
    ));
    text.push_str("# HELP fabric_ingest_duplicates_total Snapshots already stored.\n# TYPE fabric_ingest_duplicates_total counter\n");
    text.push_str(&format!(
        "fabric_ingest_duplicates_total {}\n",
        c.duplicates.load(Ordering::Relaxed)
    ));
    text.push_str(
        "# HELP fabric_ingest_refused_total Requests refused, by reason.\n# TYPE fabric_ingest_refused_total counter\n",
    );
    for (reason, count) in c.refused.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        text.push_str(&format!("fabric_ingest_refused_total{{reason=\"{reason}\"}} {count}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Serves until `shutdown` completes; then stops accepting, lets in-flight
/// requests finish, flushes the journal and returns. `ready` gets the bound address.
pub async fn serve(
    config: Config,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.bind.ip().is_loopback() || config.token.is_some(),
        "binding {} (not loopback) requires a token: pass --token or set FABRIC_INGEST_TOKEN",
        config.bind.ip()
    );
    let ids = journal::recover(&config.dir)?;
    let (sender, receiver) = mpsc::channel();
    let dir = config.dir.clone();
    let writer = std::thread::spawn(move || journal::run(dir, ids, receiver));
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    ready(listener.local_addr()?);
    let state = Arc::new(Shared {
        jobs: Mutex::new(Some(sender)),
        counters: Counters::default(),
        config,
    });
    let app = Router::new()
        .route(
            &state.config.path,
            axum::routing::post(ingest).on(axum::routing::MethodFilter::OPTIONS, preflight),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout,
        ))
        .with_state(state.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    // Every request has been answered; close the journal and wait for its last fsync.
    state.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the journal writer panicked"))?;
    Ok(())
}
