//! The Studio contract: the brief's commands as written, one schema for
//! both sides (JSON Schema and TypeScript, checked by tools that are not
//! Fabric's), and drift between the Studio's schema file and Fabric's.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::Workspace;
use super::prime::{like_a_fresh_clone, snapshot};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The brief's commands (tests/fixtures/brief-commands.sh, copied verbatim
/// from the brief), each as `fabric` arguments.
fn brief_commands() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(root().join("tests/fixtures/brief-commands.sh")).unwrap();
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pnpm --dir prime-fabric/prime-brain cli "))
        .map(|command| command.split_whitespace().map(String::from).collect())
        .collect()
}

/// A new user runs the main job, then the brief's commands exactly as the
/// brief writes them, in its order, against snapshots the Studio sent and
/// the Studio's own `src/schema.ts`.
#[test]
fn the_briefs_commands_work_as_written_in_its_order() {
    let ws = Workspace::new();
    like_a_fresh_clone(&ws);
    ws.ok(&["run"]);
    // The Studio's snapshots: other sessions than the built-in data's.
    ws.ok(&["simulate", "--output-dir", "snapshots/raw", "--seed", "58"]);
    let typescript = ws.ok(&["schema", "--format", "typescript"]).stdout;
    ws.write("src/schema.ts", &typescript);
    let commands = brief_commands();
    let names: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(names, ["sanitize", "dataset", "train", "evaluate", "run"]);
    for command in &commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let outcome = ws.ok(&args);
        match args[0] {
            "train" => assert!(
                outcome.stderr.contains("its tuning runs on Vertex AI")
                    && ws.path("models/prime-brain-v1/tuning-job.json").exists(),
                "{}",
                outcome.stderr
            ),
            "evaluate" => {
                assert!(ws.path("reports/eval-v1.md").exists());
                // The model in that directory came from the main job, on other data.
                assert!(
                    outcome
                        .stderr
                        .contains("warning: ./models/prime-brain-v1 was trained on dataset"),
                    "{}",
                    outcome.stderr
                );
            }
            "run" => {
                assert!(
                    outcome.stderr.contains("ran train"),
                    "trained on the Studio's snapshots: {}",
                    outcome.stderr
                );
                let sanitize: Value = serde_json::from_str(&ws.read("reports/sanitize.json")).unwrap();
                let simulated = prime_brain::simulate::SimulateOptions::default();
                let records = simulated.users * simulated.sessions_per_user * simulated.snapshots_per_session;
                assert_eq!(sanitize["records_in"], records, "{sanitize}");
            }
            _ => {}
        }
    }
    // `--dry-run true` plans and changes nothing.
    let plan = ws.ok(&[
        "run",
        "--snapshots-dir",
        "./snapshots/raw",
        "--output-model",
        "./models/prime-brain-v1",
        "--dry-run",
        "true",
    ]);
    assert!(plan.stdout.contains("up to date  train"), "{}", plan.stdout);
}

#[test]
fn sanitize_refuses_a_studio_schema_that_drifted_and_says_how() {
    let ws = Workspace::new();
    ws.simulate("raw", 1, 1, 5);
    let sanitize = |schema: &str| {
        ws.fabric(&[
            "sanitize",
            "--input-dir",
            "raw",
            "--output-dir",
            "clean",
            "--schema",
            schema,
        ])
    };
    let typescript = ws.ok(&["schema", "--format", "typescript"]).stdout;
    ws.write("schema.ts", &typescript);
    assert_eq!(sanitize("schema.ts").code, 0);
    ws.write("clean/keep.txt", "not touched\n");

    let drifted = typescript
        .replace("  tempo: number;", "  tempo: string;")
        .replace(
            "  sampleRate?: number | null;",
            "  sampleRate?: number | null;\n  roomSize: number;",
        )
        .replace(" * @maxItems 24", " * @maxItems 32")
        .replace("  bloomTrace: 24,", "  bloomTrace: 32,");
    ws.write("schema.ts", &drifted);
    let refused = sanitize("schema.ts");
    assert_eq!(refused.code, 1);
    for line in [
        "schema.ts differs from Fabric's snapshot schema v1:",
        "- retyped: `transport.tempo` is string here, number in Fabric's schema",
        "- added: `audioMetrics.roomSize` (number) is not in Fabric's schema",
        "- limit: `bloomTrace` maxItems is 32 here, 24 in Fabric's schema",
        "- changed: constant `PRIME_BRAIN_LIMITS` is `{recentActions:10,bloomTrace:32,",
        "help: regenerate it with `fabric schema --format typescript`",
    ] {
        assert!(refused.stderr.contains(line), "{line}\n{}", refused.stderr);
    }
    assert_eq!(ws.read("clean/keep.txt"), "not touched\n", "nothing was sanitized");

    // The JSON Schema form is compared the same way.
    let json_schema = ws.ok(&["schema", "--format", "json-schema"]).stdout;
    ws.write("schema.json", &json_schema);
    assert_eq!(sanitize("schema.json").code, 0);
    let mut edited: Value = serde_json::from_str(&json_schema).unwrap();
    edited["$defs"]["HarmonicState"]["required"] = json!(["key"]);
    ws.write("schema.json", &edited.to_string());
    let refused = sanitize("schema.json");
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("- changed: `harmonicState.scale` is optional here, required in Fabric's schema"),
        "{}",
        refused.stderr
    );
    ws.write(
        "bad.ts",
        "export interface PrimeBrainRawSnapshot {\n  mode passive\n}\n",
    );
    let bad = sanitize("bad.ts");
    assert_eq!(bad.code, 2, "an unreadable schema file is a usage error");
    assert!(
        bad.stderr.contains("bad.ts:2: expected `name: type;`"),
        "{}",
        bad.stderr
    );
}

/// tsc (not Fabric) accepts the TypeScript Fabric writes, accepts a real
/// simulated record as a `PrimeBrainRawSnapshot`, and rejects a record
/// with a wrong mode.
#[test]
fn the_typescript_schema_type_checks_real_records() {
    let ws = Workspace::new();
    ws.write("schema.ts", &ws.ok(&["schema", "--format", "typescript"]).stdout);
    ws.simulate("raw", 1, 1, 3);
    let raw = std::fs::read_dir(ws.path("raw"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record = std::fs::read_to_string(raw)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let check = |record: &str| {
        ws.write(
            "check.ts",
            &format!("import type {{ PrimeBrainRawSnapshot }} from \"./schema\";\nexport const record: PrimeBrainRawSnapshot = {record};\n"),
        );
        Command::new(root().join(".fabric/node/node_modules/.bin/tsc"))
            .args([
                "--noEmit", "--strict", "--target", "es2020", "--module", "es2020", "check.ts",
            ])
            .current_dir(ws.root())
            .output()
            .unwrap()
    };
    let good = check(&record);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stdout));
    let mut wrong: Value = serde_json::from_str(&record).unwrap();
    wrong["mode"] = json!("furious");
    let bad = check(&wrong.to_string());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("furious"));
}

/// A small deterministic generator (xorshift), so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One mutation a real stream might carry: a JSON pointer and the value
/// put there (None removes the field).
fn mutation(rng: &mut Rng) -> (&'static str, Option<Value>) {
    let options: [(&str, Option<Value>); 34] = [
        ("/mode", Some(json!("Passive"))),
        ("/mode", Some(json!("loud"))),
        ("/mode", None),
        ("/snapshotId", Some(json!("not-a-uuid"))),
        ("/snapshotId", Some(json!("00000000-0000-1000-8000-000000000001"))),
        ("/sessionId", Some(json!("has space"))),
        ("/sessionId", Some(json!("x".repeat(65)))),
        ("/sessionId", Some(json!(""))),
        ("/capturedAt", Some(json!("2026-13-01T10:00:00Z"))),
        ("/capturedAt", Some(json!("yesterday"))),
        ("/capturedAt", None),
        ("/sequence", Some(json!(-1))),
        ("/transport/tempo", Some(json!(1000))),
        ("/transport/tempo", Some(json!("fast"))),
        ("/transport/tempo", Some(json!(19.5))),
        ("/transport/timeSignature", Some(json!("5/3"))),
        ("/transport/timeSignature", None),
        ("/transport/playheadBeats", Some(json!(-4))),
        ("/transport/cycle/startBeats", Some(json!(-1))),
        ("/alsChannels/0/channel", Some(json!("shimmer"))),
        ("/alsChannels/0/normalized", Some(json!(1.5))),
        ("/audioMetrics/cpuLoad", Some(json!(3.5))),
        ("/audioMetrics/bufferSize", Some(json!(100))),
        ("/audioMetrics/bufferSize", Some(json!(512.0))),
        ("/audioMetrics/latencyMs", Some(json!(-3))),
        ("/audioMetrics/sampleRate", Some(json!(1000))),
        ("/audioMetrics/sampleRate", None),
        ("/audioMetrics/dropouts", Some(json!(1.5))),
        ("/harmonicState/key", Some(json!("H"))),
        ("/harmonicState/tension", Some(json!(2))),
        ("/harmonicState", None),
        (
            "/bloomTrace",
            Some(json!(
                (0..30)
                    .map(|_| json!({"action": "mix.eqCut", "source": "bloom", "outcome": "ignored"}))
                    .collect::<Vec<_>>()
            )),
        ),
        ("/conversationTurns", Some(json!([{"role": "narrator", "text": "hi"}]))),
        ("/guidance", Some(json!(null))),
    ];
    options[rng.below(options.len())].clone()
}

fn apply(record: &mut Value, (pointer, value): (&str, Option<Value>)) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let Some(parent) = record.pointer_mut(parent) else {
        return;
    };
    match (parent, value) {
        (Value::Object(map), Some(value)) => {
            map.insert(key.to_string(), value);
        }
        (Value::Object(map), None) => {
            map.remove(key);
        }
        (Value::Array(items), Some(value)) => {
            if let Some(item) = key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                *item = value;
            }
        }
        _ => {}
    }
}

/// The JSON Schema and sanitize agree, checked by an independent validator
/// (Python's jsonschema with format checks) over simulated records and
/// mutations of them: every record the schema accepts, sanitize keeps; every
/// record sanitize drops, the schema rejects. (Sanitize is more lenient than
/// the schema where the Studio may differ — case, unknown items, arrays
/// over their limit — so the reverse need not hold.)
#[test]
fn the_json_schema_and_sanitize_agree_on_every_record() {
    let ws = Workspace::new();
    ws.write("schema.json", &ws.ok(&["schema"]).stdout);
    ws.simulate("raw", 2, 2, 30);
    let mut base: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(ws.path("raw")).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path()).unwrap().lines() {
            if let Ok(value) = serde_json::from_str::<Value>(line)
                && value.is_object()
            {
                base.push(value);
            }
        }
    }
    base.push(snapshot(1, "hand-made", 1));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut records = Vec::new();
    for (n, record) in base.iter().cycle().take(800).enumerate() {
        let mut record = record.clone();
        for _ in 0..(n % 3) {
            apply(&mut record, mutation(&mut rng));
        }
        records.push(record);
    }
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    ws.write("records.jsonl", &lines);
    let (problems, valid, dropped) = disagreements(&ws, &records);
    assert_eq!(problems, Vec::<String>::new());
    assert!(
        valid > 200 && dropped > 100,
        "both kinds are well represented: {valid} valid, {dropped} dropped"
    );

    // The check can fail: a schema that forgot the tempo range disagrees.
    let mut weakened: Value = serde_json::from_str(&ws.read("schema.json")).unwrap();
    let tempo = weakened["$defs"]["Transport"]["properties"]["tempo"]
        .as_object_mut()
        .unwrap();
    tempo.remove("minimum");
    tempo.remove("maximum");
    ws.write("schema.json", &weakened.to_string());
    let (problems, _, _) = disagreements(&ws, &records);
    assert!(
        !problems.is_empty() && problems.iter().all(|p| p.contains("\"tempo\"")),
        "{problems:#?}"
    );
}

/// Where schema.json (validated by Python's jsonschema, format checks on)
/// and sanitize disagree about records.jsonl, with the counts of
/// schema-valid and sanitize-dropped records.
fn disagreements(ws: &Workspace, records: &[Value]) -> (Vec<String>, usize, usize) {
    let script = r#"
import json
from jsonschema import Draft202012Validator
schema = json.load(open("schema.json"))
validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
for line in open("records.jsonl"):
    print(1 if validator.is_valid(json.loads(line)) else 0)
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", root().join(".fabric/python"))
        .current_dir(ws.root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let verdicts: Vec<bool> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l == "1")
        .collect();
    assert_eq!(verdicts.len(), records.len());

    let key = prime_brain::pseudonym::PseudonymKey::from_bytes([7; 32]);
    let (mut problems, mut valid, mut dropped) = (Vec::new(), 0, 0);
    for (record, schema_valid) in records.iter().zip(&verdicts) {
        let kept = prime_brain::sanitize::clean_record(&record.to_string(), &key);
        valid += usize::from(*schema_valid);
        dropped += usize::from(kept.is_err());
        if *schema_valid && let Err(reason) = kept {
            problems.push(format!("the schema accepts it, sanitize drops it ({reason}): {record}"));
        }
    }
    (problems, valid, dropped)
}

/// Serves the files of `dir` over HTTP on 127.0.0.1, in the background,
/// with the MIME types a browser needs for modules and WebAssembly.
fn serve_dir(dir: PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            if BufReader::new(&stream).read_line(&mut request).is_err() {
                continue;
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/');
            let path = if path.is_empty() { "index.html" } else { path };
            let (status, body) = match std::fs::read(dir.join(path)) {
                Ok(body) if !path.contains("..") => ("200 OK", body),
                _ => ("404 Not Found", Vec::new()),
            };
            let kind = match path.rsplit('.').next() {
                Some("html") => "text/html",
                Some("js" | "mjs") => "text/javascript",
                Some("wasm") => "application/wasm",
                Some("json") => "application/json",
                _ => "application/octet-stream",
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    port
}

/// The release's TypeScript module, compiled with tsc, runs the release's
/// model.onnx with onnxruntime-web (npm) in headless Chromium and
/// reproduces every test vector Fabric wrote: the same features, the same
/// probabilities within 1e-5, the same command, target, top-3 and guidance.
/// A copy of the module with one feature computed differently is caught.
#[test]
fn the_studio_module_runs_the_model_in_a_browser_as_fabric_does() {
    let ws = Workspace::new();
    like_a_fresh_clone(&ws);
    ws.ok(&["run"]);
    let web = ws.path("web");
    std::fs::create_dir_all(&web).unwrap();
    let module = ws.read("models/prime-brain-v1/prime-brain.ts");
    std::fs::write(web.join("prime-brain.ts"), &module).unwrap();
    let broken = module.replace("t.tempo / 200", "t.tempo / 199");
    assert_ne!(broken, module);
    std::fs::write(web.join("broken.ts"), broken).unwrap();
    let tsc = Command::new(root().join(".fabric/node/node_modules/.bin/tsc"))
        .args([
            "--strict",
            "--target",
            "es2020",
            "--module",
            "es2020",
            "prime-brain.ts",
            "broken.ts",
        ])
        .current_dir(&web)
        .output()
        .unwrap();
    assert!(tsc.status.success(), "{}", String::from_utf8_lossy(&tsc.stdout));
    // The README's snippet type-checks against onnxruntime-web's own types.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let snippet = readme
        .split("### The model in the Studio")
        .nth(1)
        .and_then(|section| section.split("```ts\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows how the Studio runs the model");
    std::fs::write(
        web.join("snippet.ts"),
        format!("declare const lastTenSnapshots: import(\"./prime-brain\").Snapshot[];\n{snippet}\nexport {{}};\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(root().join(".fabric/node/node_modules"), web.join("node_modules")).unwrap();
    let snippet_check = Command::new(root().join(".fabric/node/node_modules/.bin/tsc"))
        .args([
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
            "--skipLibCheck",
            "snippet.ts",
        ])
        .current_dir(&web)
        .output()
        .unwrap();
    assert!(
        snippet_check.status.success(),
        "{}",
        String::from_utf8_lossy(&snippet_check.stdout)
    );
    std::fs::remove_file(web.join("node_modules")).unwrap();
    for file in ["model.onnx", "test-vectors.json"] {
        std::fs::copy(ws.path(&format!("models/prime-brain-v1/{file}")), web.join(file)).unwrap();
    }
    let dist = root().join(".fabric/node/node_modules/onnxruntime-web/dist");
    for file in [
        "ort.wasm.min.js",
        "ort-wasm-simd-threaded.wasm",
        "ort-wasm-simd-threaded.mjs",
    ] {
        std::fs::copy(dist.join(file), web.join(file)).unwrap();
    }
    std::fs::write(
        web.join("index.html"),
        r#"<!doctype html><html><body><pre id="out">pending</pre>
<script src="ort.wasm.min.js"></script>
<script type="module">
const same = (a, b) => JSON.stringify(a, Object.keys(a ?? {}).sort()) === JSON.stringify(b, Object.keys(b ?? {}).sort())
  && (typeof a !== "object" || a === null || Object.keys(a).every((k) => same(a[k], b[k])));
async function check(path, session, vectors) {
  const studio = await import(path);
  const problems = [];
  let maxDiff = 0;
  for (const [i, v] of vectors.entries()) {
    const f = studio.features(v.window);
    f.forEach((x, j) => {
      if (x !== Math.fround(v.features[j])) problems.push(`vector ${i}: feature ${studio.FEATURE_LAYOUT[j]} ${x} vs ${v.features[j]}`);
    });
    const out = await session.run({ [studio.INPUT]: new ort.Tensor("float32", f, [1, f.length]) });
    for (const [name, expected] of Object.entries(v.probs)) {
      out[name].data.forEach((p, k) => { maxDiff = Math.max(maxDiff, Math.abs(p - expected[k])); });
    }
    // The same window as the Studio might send it before sanitize: other
    // spellings, and items sanitize would drop.
    const raw = v.window.map((s) => ({ ...s, mode: s.mode.toUpperCase(),
      alsChannels: [...s.alsChannels.map((r) => ({ ...r, channel: r.channel.toUpperCase() })),
                    { channel: "shimmer", value: 1, normalized: 0.5 }],
      aiAnalysisFlags: [...s.aiAnalysisFlags, { category: "vibes", severity: "low", message: "odd" }],
      bloomTrace: [...s.bloomTrace, { action: "mix.eqCut", source: "bloom", outcome: "maybe" }] }));
    studio.features(raw).forEach((x, j) => {
      if (x !== Math.fround(v.features[j])) problems.push(`vector ${i} (raw): feature ${studio.FEATURE_LAYOUT[j]} ${x} vs ${v.features[j]}`);
    });
    const decision = await studio.decide(ort, session, v.window);
    if (!same(decision, v.decision)) problems.push(`vector ${i}: ${JSON.stringify(decision)} vs ${JSON.stringify(v.decision)}`);
  }
  return { maxDiff, problems: problems.length, first: problems[0] ?? null };
}
(async () => {
  try {
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.wasmPaths = "/";
    const session = await ort.InferenceSession.create("/model.onnx", { executionProviders: ["wasm"] });
    const vectors = (await (await fetch("/test-vectors.json")).json()).vectors;
    const result = { vectors: vectors.length, module: await check("./prime-brain.js", session, vectors),
                     broken: await check("./broken.js", session, vectors) };
    document.getElementById("out").textContent = "RESULT " + JSON.stringify(result);
  } catch (error) {
    document.getElementById("out").textContent = "ERROR " + error;
  }
})();
</script></body></html>"#,
    )
    .unwrap();
    let port = serve_dir(web);
    let dom = super::headless_chromium(&format!("http://127.0.0.1:{port}/"), 60_000);
    let result: Value = dom
        .split("RESULT ")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .and_then(|json| {
            serde_json::from_str(
                &json
                    .replace("&quot;", "\"")
                    .replace("&amp;", "&")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">"),
            )
            .ok()
        })
        .unwrap_or_else(|| panic!("{dom}"));
    assert_eq!(result["vectors"], 24, "{result}");
    assert_eq!(result["module"]["problems"], 0, "{result}");
    assert!(result["module"]["maxDiff"].as_f64().unwrap() < 1e-5, "{result}");
    assert!(result["broken"]["problems"].as_u64().unwrap() > 0, "{result}");
    assert!(
        result["broken"]["first"].as_str().unwrap().contains("transport.tempo"),
        "{result}"
    );
}
