//! `fabric serve`: the ingest endpoint the Studio's exporter posts snapshots to.
//!
//! Contract (spec 04): `POST /v1/snapshots` with the channel in the
//! `X-Prime-Fabric-Channel` header, or the `?channel=` query, or neither
//! (`navigator.sendBeacon` cannot set headers, and this server takes one
//! channel; another channel named is 403). The body is one snapshot, or a
//! JSON array of up to [`MAX_BATCH`] (the exporter's queue flushed at once)
//! answered 200 with one result per snapshot. CORS preflights answered for
//! configured origins only. A body over the limit gets 413 after the rest
//! is read and discarded (so clients that write the whole body first still
//! read the answer), without being buffered; invalid JSON 400, a record
//! without `snapshotId`/`sessionId` 422, all with JSON error bodies; 201 once
//! the record is durably on disk ([`journal`]), 200 for a duplicate.
//! Request headers must arrive within the header timeout (half-sent requests
//! are closed, so they cannot hold sockets), bodies within the request
//! timeout (408). Loopback by default; any other address needs a token
//! (`Authorization: Bearer …` or `?token=`), compared in constant time.
//! `GET /healthz`, `GET /metrics` (Prometheus text). SIGTERM or Ctrl-C stop
//! accepting, flush, and exit 0.
//!
//! **No identifiable data lands**: each record is sanitized
//! ([`prime_brain::sanitize::clean_record`]: free text rebuilt from the
//! vocabulary, identifiers pseudonymized with the workspace's key) and
//! checked by the privacy verifier before anything touches the disk; only
//! the sanitized record is stored. A record sanitize would drop gets 422
//! with the reason; one whose consent flag is false gets 403 and nothing of
//! it is kept.

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

use prime_brain::pseudonym::PseudonymKey;
use prime_brain::{privacy, sanitize};

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
    /// Longest a request may take once its headers are in (slow bodies get 408).
    pub request_timeout: Duration,
    /// Longest a connection may take to send its request headers (then it is closed).
    pub header_timeout: Duration,
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
    Outcome::refused(reason, status, message).into_response(state)
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

/// What became of one snapshot.
enum Outcome {
    /// Stored (201) or already stored (200).
    Stored {
        duplicate: bool,
        id: String,
        stored_as: String,
    },
    /// Refused, with the status, the reason (counted) and a message.
    Refused {
        status: StatusCode,
        reason: &'static str,
        message: String,
    },
}

impl Outcome {
    fn refused(reason: &'static str, status: StatusCode, message: impl Into<String>) -> Outcome {
        Outcome::Refused {
            status,
            reason,
            message: message.into(),
        }
    }

    /// Counts the outcome and gives its status and JSON body.
    fn settle(self, state: &Shared) -> (StatusCode, serde_json::Value) {
        match self {
            Outcome::Stored {
                duplicate,
                id,
                stored_as,
            } => {
                let (counter, status, word) = if duplicate {
                    (&state.counters.duplicates, StatusCode::OK, "duplicate")
                } else {
                    (&state.counters.accepted, StatusCode::CREATED, "stored")
                };
                counter.fetch_add(1, Ordering::Relaxed);
                (status, json!({"status": word, "snapshotId": id, "storedAs": stored_as}))
            }
            Outcome::Refused {
                status,
                reason,
                message,
            } => {
                *state
                    .counters
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(reason)
                    .or_insert(0) += 1;
                (status, json!({"error": message, "reason": reason}))
            }
        }
    }

    fn into_response(self, state: &Shared) -> Response {
        let (status, body) = self.settle(state);
        (status, axum::Json(body)).into_response()
    }
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
    // The header, else the query (sendBeacon cannot set headers), else the
    // one channel this server takes.
    let channel = headers
        .get(CHANNEL_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| query.get("channel").cloned());
    if let Some(other) = channel.as_deref().filter(|c| *c != CHANNEL) {
        return refuse(
            state,
            StatusCode::FORBIDDEN,
            "channel",
            format!("unknown channel `{other}`; this server takes `{CHANNEL}`"),
        );
    }
    let bytes = match read_body(body, state.config.max_body).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            let mut response = refuse(
                state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "size",
                format!("the body is over the limit of {} bytes", state.config.max_body),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Err(BodyError::Broken) => {
            return refuse(
                state,
                StatusCode::BAD_REQUEST,
                "body",
                "the body could not be read".into(),
            );
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(error) => return refuse(state, StatusCode::BAD_REQUEST, "json", format!("invalid JSON: {error}")),
    };
    let serde_json::Value::Array(batch) = value else {
        // The record is sanitized from the bytes as sent, not re-serialized.
        return outcome(submit(state, &value, &String::from_utf8_lossy(&bytes)))
            .await
            .into_response(state);
    };
    // A batch (the exporter's queue, flushed at once): one result per snapshot.
    if batch.len() > MAX_BATCH {
        return refuse(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch",
            format!(
                "a batch holds at most {MAX_BATCH} snapshots (the exporter's queue); this one has {}",
                batch.len()
            ),
        );
    }
    // Every record is handed to the writer first, so that the batch shares
    // group commits; then the answers are collected in order.
    let pending: Vec<_> = batch
        .iter()
        .map(|record| submit(state, record, &record.to_string()))
        .collect();
    let mut results = Vec::with_capacity(batch.len());
    for submitted in pending {
        let (status, mut body) = outcome(submitted).await.settle(state);
        body["code"] = json!(status.as_u16());
        results.push(body);
    }
    (StatusCode::OK, axum::Json(json!({ "results": results }))).into_response()
}

/// At most this many snapshots in one batch.
pub const MAX_BATCH: usize = 20;

/// Why a body was not read.
enum BodyError {
    /// Over the limit (the rest was read and discarded, up to a bound, so
    /// that the client sees the 413 rather than a reset connection).
    TooLarge,
    /// The connection failed mid-body.
    Broken,
}

/// Reads a body of at most `limit` bytes. An oversized body is read to its
/// end (up to [`DRAIN_LIMIT`], keeping nothing) before the 413 goes out:
/// clients that send the whole body before reading — Node's fetch, Python's
/// http.client — otherwise see a broken pipe instead of the answer.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut bytes = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total <= limit {
            bytes.extend_from_slice(&data);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(bytes)
}

/// The most an oversized body is read (and discarded) before its 413.
pub const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// A snapshot handed to the writer: its id as sent, its stored id, and
/// where the writer answers.
struct Submitted {
    id: String,
    stored_as: String,
    acknowledged: oneshot::Receiver<std::io::Result<Stored>>,
}

/// Sanitizes and verifies one snapshot (`text`, whose parsed form is
/// `value`) and hands it to the writer (or says why not).
fn submit(state: &Shared, value: &serde_json::Value, text: &str) -> Result<Submitted, Outcome> {
    let id = value
        .get("snapshotId")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    let session = value
        .get("sessionId")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    let (Some(id), Some(_)) = (id, session) else {
        return Err(Outcome::refused(
            "ids",
            StatusCode::UNPROCESSABLE_ENTITY,
            "the record needs string `snapshotId` and `sessionId` fields",
        ));
    };
    let id = id.to_string();
    let clean = match sanitize::clean_record(text, &state.config.key) {
        Ok(clean) => clean,
        Err(reason) if reason == "no_consent" => {
            return Err(Outcome::refused(
                "consent",
                StatusCode::FORBIDDEN,
                "the snapshot's consent flag (allowExport) is false: nothing of it was stored",
            ));
        }
        Err(reason) => {
            return Err(Outcome::refused(
                "invalid",
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the snapshot would be dropped by sanitize ({reason}); nothing was stored"),
            ));
        }
    };
    if let Err(problem) = privacy::check_snapshot(&clean) {
        return Err(Outcome::refused(
            "privacy",
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the privacy verifier refused the sanitized record ({problem}); nothing was stored"),
        ));
    }
    let (done, acknowledged) = oneshot::channel();
    let stored_as = clean.snapshot_id.clone();
    let job = Job {
        line: serde_json::to_string(&clean).expect("snapshots serialize"),
        id: clean.snapshot_id,
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
        return Err(Outcome::refused(
            "shutdown",
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    Ok(Submitted {
        id,
        stored_as,
        acknowledged,
    })
}

/// What became of a submitted snapshot, once the writer answered.
async fn outcome(submitted: Result<Submitted, Outcome>) -> Outcome {
    let submitted = match submitted {
        Ok(submitted) => submitted,
        Err(refused) => return refused,
    };
    match submitted.acknowledged.await {
        Ok(Ok(stored)) => Outcome::Stored {
            duplicate: stored == Stored::Duplicate,
            id: submitted.id,
            stored_as: submitted.stored_as,
        },
        Ok(Err(error)) => Outcome::refused(
            "storage",
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not stored: {error}"),
        ),
        Err(_) => Outcome::refused(
            "shutdown",
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
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

/// Accepts connections until `shutdown` completes, then lets in-flight
/// requests finish. A connection must deliver its request headers within
/// `header_timeout` or it is closed, so half-sent requests cannot hold
/// sockets (and file descriptors) for long; when descriptors run out anyway,
/// accepting pauses briefly and resumes as slow connections time out.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of descriptors (or a connection reset before it was
                    // taken): back off, not spin, while timeouts free some.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Raises the soft limit of open files to the hard limit: each connection
/// holds one.
#[allow(unsafe_code)]
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
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
    raise_file_limit();
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
    accept(listener, app, state.config.header_timeout, shutdown).await;
    // Every request has been answered; close the journal and wait for its last fsync.
    state.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the journal writer panicked"))?;
    Ok(())
}
