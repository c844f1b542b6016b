//! `fabric serve`: the real server on 127.0.0.1 with a free port, spoken to
//! over plain HTTP/1.1.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};

use serde_json::{Value, json};

use super::Workspace;
use super::prime::snapshot;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(ws: &Workspace, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--origin", "http://127.0.0.1:9"];
        args.extend_from_slice(extra);
        Server::spawn(ws.command(&args))
    }

    /// Starts `command` (a `fabric serve`) and reads the port it announces.
    fn spawn(mut command: std::process::Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on http://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        Server { child, port }
    }

    fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns the status, lower-cased headers and body.
fn http(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, BTreeMap<String, String>, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A server that never answers fails the test rather than hanging it.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_lowercase(), v.to_string()))
        .collect();
    (status, headers, body.to_string())
}

const EXPORTER: &[(&str, &str)] = &[
    ("Content-Type", "application/json"),
    ("X-Prime-Fabric-Channel", "prime-brain"),
];

fn post(port: u16, record: &Value) -> (u16, String) {
    let (status, _, body) = http(port, "POST", "/v1/snapshots", EXPORTER, record.to_string().as_bytes());
    (status, body)
}

fn stored_lines(ws: &Workspace) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(ws.path("snapshots/raw")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "no torn record");
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

#[test]
fn every_status_path_of_the_contract() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &["--max-body", "1000"]);
    let port = server.port;
    let record = snapshot(1, "s1", 0);

    let (status, body) = post(port, &record);
    assert_eq!(status, 201, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "stored");
    // Only the sanitized record lands: no raw identifier.
    let stored: Value = serde_json::from_str(&stored_lines(&ws)[0]).unwrap();
    assert_eq!(stored["sessionId"].as_str().unwrap().len(), 32, "{stored}");
    assert_ne!(stored["snapshotId"], record["snapshotId"]);
    let (status, body) = post(port, &record);
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["status"].clone()),
        (200, json!("duplicate"))
    );
    assert_eq!(stored_lines(&ws).len(), 1, "a retry is not stored twice");

    let plain = record.to_string();
    let (status, _, body) = http(
        port,
        "POST",
        "/v1/snapshots",
        &[("Content-Type", "application/json")],
        plain.as_bytes(),
    );
    // Without a channel, the one channel this server takes (a beacon to the
    // README's URL): here a retry, so a duplicate.
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "duplicate");
    let (status, _, _) = http(
        port,
        "POST",
        "/v1/snapshots",
        &[("X-Prime-Fabric-Channel", "other")],
        plain.as_bytes(),
    );
    assert_eq!(status, 403);

    // sendBeacon: text/plain, channel in the query.
    let beacon = snapshot(2, "s1", 1).to_string();
    let (status, _, _) = http(
        port,
        "POST",
        "/v1/snapshots?channel=prime-brain",
        &[("Content-Type", "text/plain;charset=UTF-8")],
        beacon.as_bytes(),
    );
    assert_eq!(status, 201);

    let (status, _, body) = http(port, "POST", "/v1/snapshots", EXPORTER, b"{\"snapshotId\": ");
    assert_eq!(status, 400);
    assert!(body.contains("invalid JSON"), "{body}");
    let (status, _, body) = post_raw(port, &json!({"sessionId": "s1"}));
    assert_eq!(status, 422, "{body}");
    let (status, _, _) = post_raw(port, &json!({"snapshotId": 7, "sessionId": "s1"}));
    assert_eq!(status, 422);

    let mut big = snapshot(3, "s1", 2);
    big["pad"] = json!("x".repeat(2000));
    let (status, _, _) = post_raw(port, &big);
    assert_eq!(status, 413);

    // No consent: refused, nothing of it stored. Invalid: what sanitize would drop.
    let mut refused = snapshot(4, "s1", 3);
    refused["allowExport"] = json!(false);
    let (status, _, body) = post_raw(port, &refused);
    assert_eq!(status, 403, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["reason"], "consent");
    let mut invalid = snapshot(5, "s1", 4);
    invalid["transport"]["tempo"] = json!(1000);
    let (status, _, body) = post_raw(port, &invalid);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("invalid:transport.tempo"), "{body}");
    assert_eq!(stored_lines(&ws).len(), 2);

    // CORS: the configured origin gets a preflight answer, others are refused.
    let (status, headers, _) = http(
        port,
        "OPTIONS",
        "/v1/snapshots",
        &[
            ("Origin", "http://127.0.0.1:9"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(status, 204);
    assert_eq!(headers["access-control-allow-origin"], "http://127.0.0.1:9");
    assert!(headers["access-control-allow-headers"].contains("x-prime-fabric-channel"));
    let (status, _, _) = http(
        port,
        "OPTIONS",
        "/v1/snapshots",
        &[("Origin", "http://evil.localhost")],
        b"",
    );
    assert_eq!(status, 403);
    let mut cross = EXPORTER.to_vec();
    cross.push(("Origin", "http://evil.localhost"));
    let (status, _, _) = http(
        port,
        "POST",
        "/v1/snapshots",
        &cross,
        snapshot(9, "s", 0).to_string().as_bytes(),
    );
    assert_eq!(status, 403);

    let (status, _, body) = http(port, "GET", "/healthz", &[], b"");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (_, _, metrics) = http(port, "GET", "/metrics", &[], b"");
    assert!(metrics.contains("fabric_ingest_accepted_total 2"), "{metrics}");
    assert!(metrics.contains("fabric_ingest_duplicates_total 2"), "{metrics}");
    assert!(
        metrics.contains("fabric_ingest_refused_total{reason=\"size\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fabric_ingest_refused_total{reason=\"ids\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fabric_ingest_refused_total{reason=\"consent\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fabric_ingest_refused_total{reason=\"invalid\"} 1"),
        "{metrics}"
    );
}

fn post_raw(port: u16, record: &Value) -> (u16, BTreeMap<String, String>, String) {
    http(port, "POST", "/v1/snapshots", EXPORTER, record.to_string().as_bytes())
}

#[test]
fn session_ids_never_name_files() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    for (n, session) in ["../../escape", "/etc/passwd", "a/b", "..", "x".repeat(200).as_str()]
        .iter()
        .enumerate()
    {
        let (status, body) = post(server.port, &snapshot(n as u32, session, 0));
        assert_eq!(status, 422, "{body}");
    }
    assert_eq!(stored_lines(&ws).len(), 0, "nothing of a refused record lands");
    assert_eq!(post(server.port, &snapshot(9, "jane-doe-macbook", 0)).0, 201);
    let names: Vec<String> = std::fs::read_dir(ws.path("snapshots/raw"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1);
    let stamp = names[0]
        .strip_prefix("ingest-")
        .and_then(|n| n.strip_suffix(".jsonl"))
        .unwrap();
    assert!(stamp.bytes().all(|b| b.is_ascii_digit()), "{names:?}");
    assert!(!stored_lines(&ws)[0].contains("jane"));
}

#[test]
fn tokens_are_required_when_configured_and_off_loopback() {
    let ws = Workspace::new();
    let refused = ws.fabric(&["serve", "--bind", "0.0.0.0:0"]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("requires a token"), "{}", refused.stderr);

    let server = Server::start(&ws, &["--token", "s3cret"]);
    let body = snapshot(11, "s", 0).to_string();
    let (status, _, _) = http(server.port, "POST", "/v1/snapshots", EXPORTER, body.as_bytes());
    assert_eq!(status, 401);
    let mut wrong = EXPORTER.to_vec();
    wrong.push(("Authorization", "Bearer nope"));
    assert_eq!(
        http(server.port, "POST", "/v1/snapshots", &wrong, body.as_bytes()).0,
        401
    );
    let mut right = EXPORTER.to_vec();
    right.push(("Authorization", "Bearer s3cret"));
    assert_eq!(
        http(server.port, "POST", "/v1/snapshots", &right, body.as_bytes()).0,
        201
    );
    let beacon = snapshot(12, "s", 1).to_string();
    assert_eq!(
        http(
            server.port,
            "POST",
            "/v1/snapshots?channel=prime-brain&token=s3cret",
            &[],
            beacon.as_bytes()
        )
        .0,
        201
    );
}

#[test]
fn a_slow_client_gets_408() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &["--request-timeout", "1"]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    // Promise 100 bytes, send 10, and wait for the server's answer.
    stream
        .write_all(b"POST /v1/snapshots HTTP/1.1\r\nHost: x\r\nX-Prime-Fabric-Channel: prime-brain\r\nContent-Length: 100\r\n\r\n{\"snapshot")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
}

#[test]
fn idempotency_survives_a_restart_and_sigterm_exits_cleanly() {
    let ws = Workspace::new();
    let mut server = Server::start(&ws, &[]);
    assert_eq!(post(server.port, &snapshot(21, "s", 0)).0, 201);
    let status = server.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let server = Server::start(&ws, &[]);
    assert_eq!(post(server.port, &snapshot(21, "s", 0)).0, 200);
    assert_eq!(stored_lines(&ws).len(), 1);
}

#[test]
fn after_kill_9_every_acknowledged_snapshot_is_on_disk_exactly_once() {
    let ws = Workspace::new();
    for trial in 0..3u64 {
        let mut server = Server::start(&ws, &[]);
        let port = server.port;
        let acknowledged = std::sync::Mutex::new(Vec::<String>::new());
        // Kill after a different number of acknowledgements each trial.
        let kill_after = 40 + (trial as usize * 37) % 90;
        std::thread::scope(|scope| {
            for client in 0..4 {
                let acknowledged = &acknowledged;
                scope.spawn(move || {
                    for n in 0.. {
                        let id = trial as u32 * 1_000_000 + client * 100_000 + n;
                        let mut record = snapshot(id, &format!("s{client}"), n % 60);
                        record["pad"] = json!("p".repeat(300));
                        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { break };
                        let body = record.to_string();
                        let request = format!(
                            "POST /v1/snapshots HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Prime-Fabric-Channel: prime-brain\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(request.as_bytes()).is_err() {
                            break;
                        }
                        let mut response = String::new();
                        let _ = stream.read_to_string(&mut response);
                        if response.starts_with("HTTP/1.1 201") {
                            let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
                            acknowledged.lock().unwrap().push(body["storedAs"].as_str().unwrap().to_string());
                        } else {
                            break;
                        }
                    }
                });
            }
            while acknowledged.lock().unwrap().len() < kill_after {
                std::thread::yield_now();
            }
            server.signal(libc::SIGKILL);
        });
        // Restart (which repairs torn tails), then check.
        drop(Server::start(&ws, &[]));
        let lines = stored_lines(&ws);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for line in &lines {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("torn record {line:?}: {e}"));
            *counts
                .entry(value["snapshotId"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        assert!(counts.values().all(|c| *c == 1), "a record stored twice");
        for id in acknowledged.into_inner().unwrap() {
            assert_eq!(counts.get(&id), Some(&1), "acknowledged {id} is not on disk");
        }
    }
}

#[test]
fn fabric_run_picks_ingested_snapshots_up_incrementally() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        &format!(
            "[stage.sanitize]\nstep = \"prime.sanitize\"\ndeps = [\"snapshots/raw\"]\nouts = [\"clean\", \"report.json\"]\n\n[stage.count]\ncmd = \"{} && cat clean/*.jsonl | wc -l > count.txt\"\ndeps = [\"clean\"]\nouts = [\"count.txt\"]\n",
            ws.tick("count")
        ),
    );
    ws.ok(&[
        "simulate",
        "--output-dir",
        "sim",
        "--users",
        "1",
        "--sessions-per-user",
        "1",
        "--snapshots-per-session",
        "6",
        "--bad-fraction",
        "0",
    ]);
    let records: Vec<Value> = ws.jsonl("sim/u00-s00.jsonl");
    let server = Server::start(&ws, &[]);
    for record in &records[..4] {
        assert_eq!(post(server.port, record).0, 201);
    }
    ws.ok(&["run"]);
    assert_eq!(ws.read("count.txt").trim(), "4");
    ws.ok(&["run"]);
    assert_eq!(ws.count("count"), 1, "nothing new, nothing runs");
    for record in &records[4..] {
        assert_eq!(post(server.port, record).0, 201);
    }
    let run = ws.ok(&["run"]);
    assert!(run.stderr.contains("dep `snapshots/raw` changed"), "{}", run.stderr);
    assert_eq!(ws.read("count.txt").trim(), "6");
    assert_eq!(ws.count("count"), 2);
}

#[test]
fn a_real_browser_posts_with_fetch_and_send_beacon_from_another_origin() {
    let ws = Workspace::new();
    // The page's origin must be allowed before the page exists: bind it first.
    let page = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let page_port = page.local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{page_port}");
    let server = Server::start(&ws, &["--origin", &origin]);
    let records: Vec<Value> = (0..6).map(|i| snapshot(100 + i, "browser", i)).collect();
    let html = format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const url = "http://127.0.0.1:{port}/v1/snapshots";
const records = {records};
(async () => {{
  const fetched = [];
  for (let i = 0; i < 3; i++) {{
    const r = await fetch(url, {{method: "POST", headers: {{"Content-Type": "application/json", "X-Prime-Fabric-Channel": "prime-brain"}},
                               body: JSON.stringify(records[i])}});
    fetched.push(r.status);
  }}
  const beacons = [];
  for (let i = 0; i < 3; i++) beacons.push(navigator.sendBeacon(url + "?channel=prime-brain", JSON.stringify(records[3 + i])));
  document.getElementById("out").textContent = JSON.stringify({{fetch: fetched, beacon: beacons}});
}})();
</script></body></html>"#,
        port = server.port,
        records = Value::Array(records.clone()),
    );
    serve_page(page, html);
    let dom = super::headless_chromium(&format!("http://127.0.0.1:{page_port}/"), 10_000);
    assert!(
        dom.contains(r#"{"fetch":[201,201,201],"beacon":[true,true,true]}"#),
        "{dom}"
    );
    // Beacons are fire-and-forget: wait (bounded) until they are on disk.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines = if ws.path("snapshots/raw").exists() {
            stored_lines(&ws).join("\n")
        } else {
            String::new()
        };
        if lines.lines().count() == 6 {
            let ids: std::collections::BTreeSet<&str> = lines.lines().map(|l| &l[..50]).collect();
            assert_eq!(ids.len(), 6, "six distinct snapshots: {lines}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the beacons did not land: {lines}"
        );
        std::thread::yield_now();
    }
}

/// Serves one HTML page from `listener`, in the background.
fn serve_page(listener: std::net::TcpListener, html: String) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

/// The exporter's queue (up to 20 snapshots) flushed as one JSON array: one
/// result per snapshot; more than 20 is refused whole.
#[test]
fn a_batch_gets_a_result_per_snapshot() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    let mut invalid = snapshot(32, "s", 2);
    invalid["mode"] = json!("furious");
    let batch = json!([
        snapshot(30, "s", 0),
        snapshot(31, "s", 1),
        invalid,
        snapshot(30, "s", 0)
    ]);
    let (status, body) = post(server.port, &batch);
    assert_eq!(status, 200, "{body}");
    let results: Value = serde_json::from_str(&body).unwrap();
    let codes: Vec<u64> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [201, 201, 422, 200], "{body}");
    assert_eq!(results["results"][2]["reason"], "invalid");
    assert_eq!(stored_lines(&ws).len(), 2);

    let too_many: Vec<Value> = (0..21).map(|n| snapshot(100 + n, "s", n)).collect();
    let (status, body) = post(server.port, &json!(too_many));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("at most 20"), "{body}");
    assert_eq!(stored_lines(&ws).len(), 2, "nothing of a refused batch lands");
}

/// A 10 MB body gets a 413 that real clients read: Python's http.client
/// and Node's fetch send the whole body before reading the answer.
#[test]
fn an_oversized_body_gets_a_413_that_real_clients_read() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    let url = format!("http://127.0.0.1:{}/v1/snapshots", server.port);
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import http.client, sys\nc = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))\nc.request('POST', '/v1/snapshots', body=b'x' * 10_000_000, headers={'X-Prime-Fabric-Channel': 'prime-brain'})\nprint(c.getresponse().status)",
            &server.port.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&python.stdout).trim(),
        "413",
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );
    let node = std::process::Command::new("node")
        .args([
            "-e",
            "fetch(process.argv[1], {method: 'POST', body: 'x'.repeat(10_000_000), headers: {'X-Prime-Fabric-Channel': 'prime-brain'}}).then(r => console.log(r.status), e => console.log('error', e.cause && e.cause.code))",
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&node.stdout).trim(),
        "413",
        "{}",
        String::from_utf8_lossy(&node.stderr)
    );
    // The server still works.
    assert_eq!(post(server.port, &snapshot(40, "s", 0)).0, 201);
}

/// Many clients that send half a request line and stop cannot starve a real
/// one, even when the server may hold only 64 files: they are closed when
/// their header time runs out.
#[test]
fn half_sent_requests_cannot_starve_real_clients() {
    let ws = Workspace::new();
    let mut limited = std::process::Command::new("sh");
    limited
        .args([
            "-c",
            "ulimit -n 64 && exec \"$0\" serve --bind 127.0.0.1:0 --header-timeout 1",
            env!("CARGO_BIN_EXE_fabric"),
        ])
        .current_dir(ws.root())
        .env("CI", "true");
    let server = Server::spawn(limited);
    let port = server.port;
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.write_all(b"POST /v1/snap").unwrap();
            stream
        })
        .collect();
    let started = std::time::Instant::now();
    let (status, body) = post(port, &snapshot(50, "s", 0));
    let waited = started.elapsed();
    drop(server);
    assert_eq!(status, 201, "{body}");
    assert!(waited < std::time::Duration::from_secs(15), "served after {waited:?}");
    // The slow ones were closed by the server, not left hanging.
    let mut first = &slow[0];
    let mut rest = Vec::new();
    first
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        first.read_to_end(&mut rest).map_err(|e| e.kind()),
        Ok(0),
        "closed by the server"
    );
}

/// Start-up repairs a torn last line only in the server's own logs; a file
/// someone else put in the directory is left exactly as it is.
#[test]
fn start_up_repairs_only_the_servers_own_files() {
    let ws = Workspace::new();
    let mut server = Server::start(&ws, &[]);
    assert_eq!(post(server.port, &snapshot(60, "s", 0)).0, 201);
    assert_eq!(server.signal(libc::SIGTERM).code(), Some(0));
    let log = std::fs::read_dir(ws.path("snapshots/raw"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut torn = std::fs::read_to_string(&log).unwrap();
    torn.push_str("{\"snapshotId\": \"half");
    std::fs::write(&log, &torn).unwrap();
    let foreign = "{\"exported\": 1}\n{\"exported\": 2, \"still being writ";
    ws.write("snapshots/raw/studio-export.jsonl", foreign);
    let server = Server::start(&ws, &[]);
    drop(server);
    assert_eq!(
        ws.read("snapshots/raw/studio-export.jsonl"),
        foreign,
        "not ours: untouched"
    );
    let repaired = std::fs::read_to_string(&log).unwrap();
    assert!(repaired.ends_with("}\n") && !repaired.contains("half"), "{repaired}");
}
