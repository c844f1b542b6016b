//! The Prime Brain data steps: simulate, sanitize, dataset, schema.

use serde_json::{Value, json};

use super::Workspace;

/// A valid v1 snapshot.
pub(super) fn snapshot(id: u32, session: &str, second: u32) -> Value {
    json!({
        "snapshotId": format!("00000000-0000-4000-8000-{id:012}"),
        "sessionId": session,
        "capturedAt": format!("2026-11-24T10:00:{second:02}Z"),
        "sequence": second,
        "mode": "active",
        "transport": {"isPlaying": true, "tempo": 120.0, "playheadBeats": 8.0, "timeSignature": "4/4",
                      "cycle": {"enabled": false, "startBeats": 0.0, "endBeats": 16.0}},
        "alsChannels": [{"channel": "energy", "value": 70.0, "normalized": 0.7},
                        {"channel": "pressure", "value": 40.0, "normalized": 0.4}],
        "audioMetrics": {"latencyMs": 10.0, "cpuLoad": 0.4, "dropouts": 0, "bufferSize": 256, "sampleRate": 48000},
        "harmonicState": {"key": "C", "scale": "major", "consonance": 0.8, "tension": 0.3, "velocityEnergy": 0.5},
        "aiAnalysisFlags": [],
        "bloomTrace": [],
        "issuedCommands": [],
        "conversationTurns": []
    })
}

fn write_jsonl(ws: &Workspace, path: &str, records: &[Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    ws.write(path, &text);
}

fn sanitized(ws: &Workspace) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(ws.path("clean"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| ws.jsonl(&f.strip_prefix(ws.root()).unwrap().to_string_lossy()))
        .collect()
}

fn report(ws: &Workspace) -> Value {
    serde_json::from_str(&ws.read("reports/sanitize.json")).unwrap()
}

fn sanitize(ws: &Workspace) {
    ws.ok(&["sanitize", "--input-dir", "raw", "--output-dir", "clean"]);
}

/// Both personal-data corpora: the first (90 cases) and the broad one
/// (names in many cases and scripts, obfuscated contacts, numbers, paths,
/// machine names, birth dates, in every free-text field, nested argument
/// and identifier).
fn corpus() -> Vec<Value> {
    let mut cases: Vec<Value> = serde_json::from_str(include_str!("../fixtures/pii-corpus.json")).unwrap();
    let broad: Vec<Value> = serde_json::from_str(include_str!("../fixtures/pii-corpus-broad.json")).unwrap();
    cases.extend(broad);
    assert!(cases.len() >= 400);
    cases
}

/// A valid snapshot carrying one corpus case where its `field` says.
fn corpus_record(n: usize, case: &Value) -> Value {
    let text = case["text"].as_str().unwrap();
    let mut record = snapshot(n as u32, "pii-corpus", (n % 60) as u32);
    let command = |args: Value| json!([{"type": "mix.eqCut", "target": "bass", "args": args}]);
    match case["field"].as_str().unwrap() {
        "conversation" => record["conversationTurns"] = json!([{"role": "user", "text": text}]),
        "flag_message" => record["aiAnalysisFlags"] = json!([{"category": "mix", "severity": "low", "message": text}]),
        "guidance" => record["guidance"] = json!({"channel": "energy", "intensity": "whisper", "text": text}),
        "recent_action" => record["userMemorySummary"] = json!({"recentActions": [text]}),
        "preference_value" => record["userMemorySummary"] = json!({"recentActions": [], "preferences": {"note": text}}),
        "preference_key" => record["userMemorySummary"] = json!({"recentActions": [], "preferences": {text: "on"}}),
        "bloom_action" => {
            record["bloomTrace"] =
                json!([{"action": text, "source": "bloom", "outcome": "ignored", "at": "2026-11-24T10:00:00Z"}])
        }
        "command_target" => record["issuedCommands"] = json!([{"type": "track.mute", "target": text}]),
        "arg_value" => record["issuedCommands"] = command(json!({"note": text})),
        "arg_key" => record["issuedCommands"] = command(json!({text: 3})),
        "arg_nested" => record["issuedCommands"] = command(json!({"file": {"path": text}})),
        "arg_array" => record["issuedCommands"] = command(json!({"names": ["lead vocal", text]})),
        "scale" => record["harmonicState"]["scale"] = json!(text),
        "session_id" => record["sessionId"] = json!(text),
        other => panic!("unknown field {other}"),
    }
    record
}

/// Every corpus secret found (case-insensitively, as a whole token: not
/// inside a longer word or number, so "ines" in "pipelines" is no leak) in
/// `haystack`, as "case id: secret".
fn leaks(corpus: &[Value], haystack: &str) -> Vec<String> {
    let haystack = haystack.to_lowercase();
    let inside = |at: Option<char>| at.is_some_and(char::is_alphanumeric);
    let mut found = Vec::new();
    for case in corpus {
        for secret in case["secrets"].as_array().unwrap() {
            let secret = secret.as_str().unwrap().to_lowercase();
            let whole = haystack.match_indices(&secret).any(|(at, _)| {
                let before = haystack[..at].chars().next_back();
                let after = haystack[at + secret.len()..].chars().next();
                let bounded =
                    |edge: Option<char>, c: Option<char>| !(c.is_some_and(char::is_alphanumeric) && inside(edge));
                bounded(before, secret.chars().next()) && bounded(after, secret.chars().next_back())
            });
            if whole {
                found.push(format!("{}: {secret}", case["id"]));
            }
        }
    }
    found
}

#[test]
fn the_personal_data_corpus_leaks_nothing() {
    let corpus = corpus();
    let ws = Workspace::new();
    let records: Vec<Value> = corpus
        .iter()
        .enumerate()
        .map(|(n, case)| corpus_record(n, case))
        .collect();
    write_jsonl(&ws, "raw/pii.jsonl", &records);
    sanitize(&ws);
    let report_text = ws.read("reports/sanitize.json");
    let report: Value = serde_json::from_str(&report_text).unwrap();
    assert_eq!(
        report["records_out"],
        corpus.len(),
        "no case is dropped, each is cleaned"
    );
    let mut output = report_text;
    for entry in std::fs::read_dir(ws.path("clean")).unwrap() {
        let path = entry.unwrap().path();
        output.push_str(&path.file_name().unwrap().to_string_lossy());
        output.push_str(&std::fs::read_to_string(path).unwrap());
    }
    let found = leaks(&corpus, &output);
    assert!(found.is_empty(), "{} leaks:\n{}", found.len(), found.join("\n"));
    for record in sanitized(&ws) {
        for command in record["issuedCommands"].as_array().unwrap() {
            if let Some(target) = command.get("target") {
                let archetypes = [
                    "drums", "bass", "keys", "vocals", "guitar", "synth", "fx", "bus", "master",
                ];
                assert!(archetypes.contains(&target.as_str().unwrap()), "{target}");
            }
        }
    }
    // The report says what was removed, by placeholder.
    for kind in ["person", "contact", "path", "number", "link", "handle", "address"] {
        assert!(report["redactions"][kind].as_u64().unwrap_or(0) > 0, "{kind}: {report}");
    }
}

#[test]
fn clean_text_keeps_its_meaning() {
    let ws = Workspace::new();
    ws.ok(&[
        "simulate",
        "--output-dir",
        "raw",
        "--users",
        "6",
        "--sessions-per-user",
        "2",
        "--bad-fraction",
        "0",
    ]);
    sanitize(&ws);
    let free = &report(&ws)["free_text"];
    assert!(free["tokens"].as_u64().unwrap() > 10_000, "{free}");
    assert!(free["kept_share"].as_f64().unwrap() >= 0.95, "{free}");
    assert!(
        report(&ws)["redactions"].get("person").is_none(),
        "clean text names no one: {}",
        report(&ws)
    );
}

#[test]
fn identifiers_become_keyed_pseudonyms_stable_for_a_key() {
    let ws = Workspace::new();
    write_jsonl(
        &ws,
        "raw/a.jsonl",
        &[snapshot(1, "jane-doe-macbook", 0), snapshot(2, "jane-doe-macbook", 1)],
    );
    sanitize(&ws);
    let first = sanitized(&ws);
    let session = first[0]["sessionId"].as_str().unwrap().to_string();
    assert_eq!(session.len(), 32);
    assert_eq!(first[1]["sessionId"], session.as_str(), "one session, one pseudonym");
    assert_ne!(first[0]["snapshotId"], "00000000-0000-4000-8000-000000000001");
    // Not recoverable by hashing guesses: no unkeyed hash of the raw id.
    assert!(!blake3::hash(b"jane-doe-macbook").to_hex().contains(&session));
    // Stable for the workspace's key (kept in .fabric/keys, mode 0600) ...
    sanitize(&ws);
    assert_eq!(sanitized(&ws), first);
    // ... and another key gives other pseudonyms but the same file names.
    let names = |ws: &Workspace| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(ws.path("clean"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = names(&ws);
    let mut other = ws.command(&["sanitize", "--input-dir", "raw", "--output-dir", "clean"]);
    other.env("FABRIC_PSEUDONYM_KEY", "ab".repeat(32));
    assert!(other.output().unwrap().status.success());
    assert_ne!(sanitized(&ws)[0]["sessionId"], session.as_str());
    assert_eq!(names(&ws), before, "file names do not depend on the key");
}

#[test]
fn a_record_without_consent_is_dropped() {
    let ws = Workspace::new();
    let mut refused = snapshot(2, "s1", 1);
    refused["allowExport"] = json!(false);
    let mut agreed = snapshot(3, "s1", 2);
    agreed["allowExport"] = json!(true);
    write_jsonl(&ws, "raw/a.jsonl", &[snapshot(1, "s1", 0), refused, agreed]);
    sanitize(&ws);
    assert_eq!(report(&ws)["dropped"]["no_consent"], 1);
    assert_eq!(report(&ws)["records_out"], 2);
    assert!(sanitized(&ws).iter().all(|r| r.get("allowExport").is_none()));
}

#[test]
fn unknown_fields_are_dropped_and_arrays_keep_the_most_recent() {
    let ws = Workspace::new();
    let mut record = snapshot(1, "s1", 0);
    record["smuggled"] = json!("leak@example.com");
    record["transport"]["secret"] = json!("hidden");
    // Turn i says "more" i + 1 times; Bloom event i happens at second i.
    record["conversationTurns"] = Value::Array(
        (0..30)
            .map(|i| json!({"role": "prime", "text": vec!["more"; i + 1].join(" ")}))
            .collect(),
    );
    record["bloomTrace"] = Value::Array(
        (0..30)
            .map(|i| json!({"action": "mix.eqCut", "source": "als", "outcome": "ignored", "at": format!("2026-11-24T10:00:{i:02}Z")}))
            .collect(),
    );
    record["alsChannels"][0]["normalized"] = json!(1.7);
    record["audioMetrics"]["cpuLoad"] = json!(0.123456789);
    write_jsonl(&ws, "raw/a.jsonl", &[record]);
    sanitize(&ws);
    let out = &sanitized(&ws)[0];
    let text = out.to_string();
    assert!(
        !text.contains("smuggled") && !text.contains("leak@") && !text.contains("hidden"),
        "{text}"
    );
    let turns = out["conversationTurns"].as_array().unwrap();
    assert_eq!(turns.len(), 10);
    assert_eq!(turns[0]["text"], vec!["more"; 21].join(" "));
    assert_eq!(turns[9]["text"], vec!["more"; 30].join(" "));
    assert_eq!(out["bloomTrace"].as_array().unwrap().len(), 24);
    assert_eq!(out["bloomTrace"][0]["at"], "2026-11-24T10:00:06Z");
    assert_eq!(out["alsChannels"][0]["normalized"], 1.0);
    assert_eq!(out["audioMetrics"]["cpuLoad"], 0.1235);
    let report = report(&ws);
    assert_eq!(report["normalized"]["truncated:conversationTurns"], 1);
    assert_eq!(report["normalized"]["clamped:alsChannels.normalized"], 1);
}

#[test]
fn every_drop_reason_is_counted_and_duplicates_are_removed() {
    let ws = Workspace::new();
    let good = snapshot(1, "s1", 0);
    let mut missing = snapshot(2, "s1", 1);
    missing.as_object_mut().unwrap().remove("harmonicState");
    let mut wrong_type = snapshot(3, "s1", 2);
    wrong_type["transport"]["tempo"] = json!("fast");
    let mut out_of_range = snapshot(4, "s1", 3);
    out_of_range["audioMetrics"]["cpuLoad"] = json!(3.5);
    let mut bad_enum = snapshot(5, "s1", 4);
    bad_enum["mode"] = json!("frantic");
    let mut bad_id = snapshot(6, "s1", 5);
    bad_id["snapshotId"] = json!("not-a-uuid");
    let mut escaping = snapshot(7, "../../etc", 6);
    escaping["sessionId"] = json!("../../etc");
    let mut text: String = [
        &good,
        &missing,
        &wrong_type,
        &out_of_range,
        &bad_enum,
        &bad_id,
        &escaping,
        &good,
    ]
    .iter()
    .map(|r| format!("{r}\n"))
    .collect();
    let truncated = snapshot(8, "s1", 7).to_string();
    text.push_str(&truncated[..truncated.len() / 2]);
    text.push('\n');
    ws.write("raw/a.jsonl", &text);
    ws.write("raw/b.json", &snapshot(9, "s2", 0).to_string());
    sanitize(&ws);
    let report = report(&ws);
    assert_eq!(report["records_in"], 10);
    assert_eq!(report["records_out"], 2);
    let dropped = &report["dropped"];
    assert_eq!(dropped["missing_field:harmonicState"], 1);
    assert_eq!(dropped["wrong_type:transport.tempo"], 1);
    assert_eq!(dropped["invalid:audioMetrics.cpuLoad"], 1);
    assert_eq!(dropped["invalid_value:mode"], 1);
    assert_eq!(dropped["invalid:snapshotId"], 1);
    assert_eq!(dropped["invalid:sessionId"], 1);
    assert_eq!(dropped["duplicate"], 1);
    assert_eq!(dropped["invalid_json"], 1);
    let mut names: Vec<String> = std::fs::read_dir(ws.path("clean"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // Named by content without identifiers: s1 and s2 hold the same record
    // apart from its ids, so the second name is numbered.
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], names[1].replace(".jsonl", "-2.jsonl"), "{names:?}");
    assert_eq!(names[1].len(), "0123456789abcdef0123456789abcdef.jsonl".len());
}

#[test]
fn sanitize_and_dataset_are_deterministic_whatever_the_thread_count() {
    let ws = Workspace::new();
    ws.simulate("raw", 3, 2, 40);
    let run = |threads: &str, out: &str| {
        let output = ws
            .command(&[
                "sanitize",
                "--input-dir",
                "raw",
                "--output-dir",
                out,
                "--report",
                &format!("{out}.json"),
            ])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(output.status.success());
        let output = ws
            .command(&[
                "dataset",
                "--input-dir",
                out,
                "--output-file",
                &format!("{out}-data/d.jsonl"),
                "--augment-mode",
            ])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(output.status.success());
    };
    run("1", "one");
    run("2", "two");
    for file in std::fs::read_dir(ws.path("one")).unwrap() {
        let name = file.unwrap().file_name().to_string_lossy().into_owned();
        assert_eq!(
            ws.read(&format!("one/{name}")),
            ws.read(&format!("two/{name}")),
            "{name}"
        );
    }
    assert_eq!(ws.read("one.json"), ws.read("two.json"));
    for file in ["d.jsonl", "d-test.jsonl", "d.card.json"] {
        assert_eq!(
            ws.read(&format!("one-data/{file}")),
            ws.read(&format!("two-data/{file}")),
            "{file}"
        );
    }
    // And simulate itself is seeded.
    ws.simulate("raw2", 3, 2, 40);
    assert_eq!(ws.read("raw/u01-s01.jsonl"), ws.read("raw2/u01-s01.jsonl"));
}

#[test]
fn a_hand_computed_session_pins_windows_features_targets_and_split() {
    let ws = Workspace::new();
    // Four snapshots, window 2 → two examples. Written out of order on purpose.
    let mut s: Vec<Value> = (0..4).map(|i| snapshot(i + 1, "hand", i * 4)).collect();
    s[1]["audioMetrics"]["cpuLoad"] = json!(0.9);
    s[1]["mode"] = json!("passive");
    s[2]["issuedCommands"] = json!([{"type": "engine.setBufferSize", "args": {"size": 512}}]);
    s[2]["mode"] = json!("optimizing");
    s[3]["issuedCommands"] = json!([{"type": "engine.setBufferSize", "args": {"size": 512}}]);
    s[3]["bloomTrace"] =
        json!([{"action": "mix.eqCut", "source": "bloom", "outcome": "accepted", "at": "2026-11-24T10:00:10Z"}]);
    write_jsonl(
        &ws,
        "raw/hand.jsonl",
        &[s[3].clone(), s[0].clone(), s[2].clone(), s[1].clone()],
    );
    sanitize(&ws);
    ws.ok(&[
        "dataset",
        "--input-dir",
        "clean",
        "--output-file",
        "d/train.jsonl",
        "--window-size",
        "2",
        "--test-fraction",
        "0",
    ]);
    let examples: Vec<Value> = ws.jsonl("d/train.jsonl");
    assert_eq!(examples.len(), 2);
    assert_eq!(ws.read("d/train-test.jsonl"), "", "test fraction 0 holds nothing out");

    let first = &examples[0];
    assert_eq!(first["windowEnd"], 1, "the window ends at the second snapshot");
    assert_eq!(first["mode"], "passive");
    assert_eq!(
        first["command"],
        json!({"type": "engine.setBufferSize", "args": {"size": 512}}),
        "new in the next snapshot, with its arguments"
    );
    assert_eq!(first["nextMode"], "optimizing");
    // Seed label: strained engine, but passive mode forbids acting: whisper, no command.
    assert_eq!(first["seedLabel"]["command"], json!({"type": "none"}));
    assert_eq!(
        first["guidance"],
        json!({"channel": "pressure", "intensity": "whisper"})
    );
    let features = first["features"].as_array().unwrap();
    let layout: Value = serde_json::from_str(&ws.read("d/train.card.json")).unwrap();
    let layout = layout["featureLayout"].as_array().unwrap();
    assert_eq!(features.len(), layout.len());
    let at = |name: &str| {
        features[layout.iter().position(|n| n == name).unwrap()]
            .as_f64()
            .unwrap()
    };
    assert_eq!(at("mode.passive"), 1.0);
    assert_eq!(at("mode.active"), 0.0);
    assert!((at("health.cpuLoad.last") - 0.9).abs() < 1e-6);
    assert!((at("health.cpuLoad.max") - 0.9).abs() < 1e-6);
    assert!((at("als.energy.mean") - 0.7).abs() < 1e-6);
    assert_eq!(at("transport.playing"), 1.0);
    assert!((at("transport.tempo") - 0.6).abs() < 1e-6);

    let second = &examples[1];
    assert_eq!(second["windowEnd"], 2);
    assert_eq!(
        second["command"],
        json!({"type": "mix.eqCut"}),
        "an accepted Bloom suggestion after the window"
    );
    let card: Value = serde_json::from_str(&ws.read("d/train.card.json")).unwrap();
    assert_eq!(card["examples"]["train"], 2);
    assert_eq!(card["sessions"], json!({"test": 0, "train": 1}));
    assert_eq!(
        card["classes"]["command"],
        json!({"engine.setBufferSize": 1, "mix.eqCut": 1})
    );
    assert_eq!(card["dataset_hash"], Value::Null);
    assert_eq!(card["datasetHash"].as_str().unwrap().len(), 64);
}

/// The sessions the examples come from.
fn sessions_of(examples: &[Value]) -> std::collections::BTreeSet<String> {
    examples
        .iter()
        .map(|e| e["session"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_split_keeps_each_session_on_one_side_and_augmentation_obeys_the_doctrine() {
    let ws = Workspace::new();
    ws.simulate("raw", 4, 3, 30);
    sanitize(&ws);
    ws.ok(&[
        "dataset",
        "--input-dir",
        "clean",
        "--output-file",
        "d/x.jsonl",
        "--augment-mode",
    ]);
    let train = ws.jsonl("d/x.jsonl");
    let test = ws.jsonl("d/x-test.jsonl");
    assert!(!train.is_empty() && !test.is_empty());
    assert!(sessions_of(&train).is_disjoint(&sessions_of(&test)));
    assert!(
        test.iter().all(|e| e.get("augmented").is_none()),
        "only train is augmented"
    );
    let intrusive = super::INTRUSIVE;
    for example in train.iter().filter(|e| e["augmented"] == true) {
        let kind = example["command"]["type"].as_str().unwrap();
        match example["mode"].as_str().unwrap() {
            "passive" if example["critical"] == false => assert_eq!(kind, "none"),
            "passive" | "learning" => assert!(!intrusive.contains(&kind), "{example}"),
            _ => {}
        }
    }
    assert!(train.iter().any(|e| e["augmented"] == true && e["mode"] == "passive"));
}

/// Users never seen in training make the test split: `simulate --group
/// test` writes other users than the default group's, and `dataset
/// --held-out-users` puts every one of their sessions, and only those, on
/// the test side.
#[test]
fn held_out_users_make_the_test_split() {
    let ws = Workspace::new();
    ws.simulate("raw", 3, 2, 30);
    ws.ok(&[
        "simulate",
        "--output-dir",
        "raw-held-out",
        "--group",
        "test",
        "--users",
        "2",
        "--sessions-per-user",
        "2",
        "--snapshots-per-session",
        "30",
    ]);
    sanitize(&ws);
    ws.ok(&[
        "sanitize",
        "--input-dir",
        "raw-held-out",
        "--output-dir",
        "clean-held-out",
    ]);
    let build = |out: &str, held_out: Option<&str>, test_fraction: Option<&str>| {
        let mut args = vec!["dataset", "--input-dir", "clean", "--output-file", out];
        if let Some(dir) = held_out {
            args.extend(["--held-out-users", dir]);
        }
        if let Some(fraction) = test_fraction {
            args.extend(["--test-fraction", fraction]);
        }
        ws.fabric(&args)
    };
    // With held-out users and no test fraction, they alone are the test split.
    assert_eq!(build("d/x.jsonl", Some("clean-held-out"), None).code, 0);
    let names = |dir: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(ws.path(dir))
            .unwrap()
            .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let sessions = |file: &str| sessions_of(&ws.jsonl(file));
    assert_eq!(sessions("d/x-test.jsonl"), names("clean-held-out"));
    assert_eq!(sessions("d/x.jsonl"), names("clean"));
    let card: Value = serde_json::from_str(&ws.read("d/x.card.json")).unwrap();
    assert_eq!(card["sessions"]["test"], 4);
    assert_eq!(card["params"]["testFraction"], 0.0);
    let held_out_sources = card["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.as_str().unwrap().starts_with("held-out/"));
    assert_eq!(held_out_sources.count(), 4);
    // Without them, a test fraction of 0 leaves the test split empty.
    assert_eq!(build("e/x.jsonl", None, Some("0")).code, 0);
    assert!(ws.read("e/x-test.jsonl").is_empty());
    assert_eq!(ws.read("e/x.jsonl"), ws.read("d/x.jsonl"));
    // A test fraction given besides holds out a share of the input too.
    assert_eq!(build("f/x.jsonl", Some("clean-held-out"), Some("0.5")).code, 0);
    let test = sessions("f/x-test.jsonl");
    assert!(test.is_superset(&names("clean-held-out")) && test.len() > 4, "{test:?}");
    assert!(test.is_disjoint(&sessions("f/x.jsonl")));
    // A session on both sides, or no held-out session at all, is refused.
    let twice = build("g/x.jsonl", Some("clean"), None);
    assert_ne!(twice.code, 0);
    assert!(twice.stderr.contains("is the input directory"), "{}", twice.stderr);
    std::fs::create_dir_all(ws.path("overlap")).unwrap();
    let shared = names("clean").into_iter().next().unwrap();
    std::fs::copy(
        ws.path(&format!("clean/{shared}.jsonl")),
        ws.path(&format!("overlap/{shared}.jsonl")),
    )
    .unwrap();
    let overlap = build("g/x.jsonl", Some("overlap"), None);
    assert!(
        overlap
            .stderr
            .contains(&format!("session {shared}.jsonl is in both clean and overlap")),
        "{}",
        overlap.stderr
    );
    std::fs::create_dir_all(ws.path("empty")).unwrap();
    let empty = build("g/x.jsonl", Some("empty"), None);
    assert!(
        empty.stderr.contains("no sanitized *.jsonl session files in empty"),
        "{}",
        empty.stderr
    );
}

#[test]
fn the_default_pipeline_runs_on_built_in_data_and_reruns_incrementally() {
    let ws = Workspace::new();
    // Like a fresh clone: manifests, the shipped releases, their changelog
    // and the reviews are there (the lock is compared below).
    like_a_fresh_clone(&ws);
    let first = ws.ok(&["run"]);
    assert!(
        first.stderr.contains("ran dataset") && first.stderr.contains("ran evaluate"),
        "{}",
        first.stderr
    );
    let card: Value = serde_json::from_str(&ws.read("datasets/prime-brain-v1.card.json")).unwrap();
    assert!(card["examples"]["train"].as_u64().unwrap() > 1000);
    let report: Value = serde_json::from_str(&ws.read("reports/sanitize.json")).unwrap();
    assert!(
        report["dropped"]["invalid_json"].as_u64().unwrap() > 0,
        "the simulated stream has bad records"
    );
    let metrics: Value = serde_json::from_str(&ws.read("reports/metrics.json")).unwrap();
    let model = metrics["model"]["command_accuracy"].as_f64().unwrap();
    assert!(
        model > metrics["seed_rules"]["command_accuracy"].as_f64().unwrap(),
        "{metrics}"
    );
    assert!(
        model > metrics["majority"]["command_accuracy"].as_f64().unwrap(),
        "{metrics}"
    );
    assert_eq!(metrics["model"]["mode_compliance"], 1.0);
    assert_eq!(metrics["model"]["tone_audit"], 1.0);
    assert!(
        ws.read("reports/eval-v1.md")
            .contains("![confusion matrix](eval-v1-confusion.svg)")
    );
    assert!(ws.read("reports/eval-v1-loss.svg").starts_with("<svg"));
    // The releases the repository ships were copied in: publishing the
    // current version again succeeded, so every file is byte-identical
    // (releases are immutable and the stage checks).
    let receipt: Value = serde_json::from_str(&ws.read("reports/release.json")).unwrap();
    assert!(
        ws.path(&format!(
            "artifacts/prime-brain/{}/model.onnx",
            receipt["version"].as_str().unwrap()
        ))
        .exists()
    );
    matches_the_committed_lock(&ws);
    // Training reproduces byte for byte from scratch, without any cache.
    // (Sanitize too: the scratch copy gets the workspace's pseudonym key.)
    let reproduce = ws.ok(&[
        "verify",
        "--reproduce",
        "sanitize",
        "dataset",
        "train",
        "reinforce",
        "evaluate",
    ]);
    assert!(
        reproduce
            .stdout
            .contains("reproduced sanitize dataset train reinforce evaluate"),
        "{}",
        reproduce.stdout
    );
    let rerun = ws.ok(&["run"]);
    assert!(
        rerun.stderr.contains("0 ran, 0 restored, 13 up to date"),
        "{}",
        rerun.stderr
    );
    let changed = ws.ok(&["run", "-P", "epochs=2", "train"]);
    assert!(
        changed.stderr.contains("1 ran, 0 restored, 5 up to date"),
        "{}",
        changed.stderr
    );
    // The README tour: an experiment with `-P` ends in the release stage,
    // which holds the different model back with a note instead of failing;
    // going back restores everything from the cache.
    let experiment = ws.ok(&["run", "-P", "window_size=12"]);
    assert!(
        experiment
            .stderr
            .contains("warning: release: not published: prime-brain/"),
        "{}",
        experiment.stderr
    );
    let back = ws.ok(&["run"]);
    assert!(back.stderr.contains("0 ran"), "{}", back.stderr);
    // The gates can fail: a model trained with the brief's under-training
    // (three epochs at 1e-5) is stopped before release ...
    let undertrained = ws.fabric(&["run", "-P", "epochs=3", "-P", "learning_rate=0.00001"]);
    assert_eq!(undertrained.code, 1, "{}", undertrained.stderr);
    assert!(
        undertrained.stderr.contains("failed evaluate") && undertrained.stderr.contains("beat_baselines"),
        "{}",
        undertrained.stderr
    );
    // ... and so is always answering "none", under the pipeline's gates.
    let none: String = ws
        .jsonl("datasets/prime-brain-v1-test.jsonl")
        .iter()
        .map(|_| "{\"response\": \"The mix feels a touch warm.\", \"command\": {\"type\": \"none\"}}\n")
        .collect();
    ws.write("none.jsonl", &none);
    let always_none = ws.fabric(&[
        "evaluate",
        "--predictions",
        "none.jsonl",
        "--test-dataset",
        "datasets/prime-brain-v1-test.jsonl",
        "--output-report",
        "none/report.md",
        "--beat-baselines",
        "--max-interventions-per-minute",
        "2",
    ]);
    assert_eq!(always_none.code, 1);
    let gates: Value = serde_json::from_str(&ws.read("none/metrics.json")).unwrap();
    for gate in ["beat_baselines", "min_acceptance", "min_macro_f1"] {
        assert_eq!(gates["gates"][gate], false, "always none fails {gate}");
    }
}

#[test]
fn schema_prints_the_json_schema_of_the_snapshot_types() {
    let ws = Workspace::new();
    let out = ws.ok(&["schema"]);
    let schema: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(schema["title"], "PrimeBrainRawSnapshot");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(required.contains(&"snapshotId") && required.contains(&"bloomTrace"));
    assert!(!required.contains(&"guidance"));
    assert!(schema["$defs"]["Mode"].to_string().contains("optimizing"));
}

#[test]
fn step_arguments_are_checked_when_the_manifest_loads() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.d]\nstep = \"prime.dataset\"\ndeps = [\"in\"]\nouts = [\"a\", \"b\", \"c\"]\n[stage.d.with]\nwindow = 3\n",
    );
    ws.write("in/x.jsonl", "");
    let outcome = ws.fabric(&["run"]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome
            .stderr
            .contains("invalid arguments for step `prime.dataset`: unknown field `window`"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("Fabric.toml:6:1"), "{}", outcome.stderr);
}

#[test]
fn the_instruction_tuning_export_is_calm_number_free_and_obeys_the_doctrine() {
    let ws = Workspace::new();
    ws.simulate("raw", 4, 2, 30);
    sanitize(&ws);
    ws.ok(&[
        "dataset",
        "--input-dir",
        "clean",
        "--output-file",
        "d/x.jsonl",
        "--augment-mode",
        "--sft-output",
        "d/sft.jsonl",
    ]);
    let train = ws.read("d/x.jsonl").lines().count();
    let lines: Vec<Value> = ws.jsonl("d/sft.jsonl");
    assert_eq!(lines.len(), train, "one conversation per train example");
    let test = ws.read("d/x-test.jsonl").lines().count();
    assert_eq!(
        ws.jsonl("d/sft-test.jsonl").len(),
        test,
        "one held-out prompt per test example"
    );
    let card: Value = serde_json::from_str(&ws.read("d/x.card.json")).unwrap();
    assert_eq!(card["files"]["sft"], "sft.jsonl");
    let audited: Value = serde_json::from_str(&ws.read("d/sft.card.json")).unwrap();
    assert_eq!(audited["kind"], "instruction-tuning");
    assert_eq!(audited["conversations"]["train"], train);
    assert_eq!(audited["conversations"]["test"], test);
    assert!(audited["mostHistoryTurns"].as_u64().unwrap() <= 10);
    // Many phrasings of one situation: the silences alone take dozens.
    let silences: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["messages"][2]["content"].as_str().unwrap())
        .filter(|answer| answer.ends_with("{\"type\":\"none\"}"))
        .collect();
    assert!(silences.len() >= 40, "{} distinct silences", silences.len());
    for line in &lines {
        assert_openai_chat(line);
        let messages = line["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        let turns = messages[1]["content"]
            .as_str()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("Creator: ") || l.starts_with("Prime: "))
            .count();
        assert!(turns <= 10, "{turns} turns of conversation");
        assert_eq!(messages[0]["role"], "system");
        assert!(
            messages[0]["content"]
                .as_str()
                .unwrap()
                .contains("passive mode only whisper")
        );
        let context = messages[1]["content"].as_str().unwrap();
        assert!(
            !context.chars().any(|c| c.is_ascii_digit()),
            "raw numbers in the context: {context}"
        );
        assert_eq!(messages[1]["role"], "user");
        assert_eq!(messages[2]["role"], "assistant", "the OpenAI chat format's role names");
        let answer = messages[2]["content"].as_str().unwrap();
        let (response, command) = answer.split_once('\n').unwrap();
        assert!(!response.chars().any(|c| c.is_ascii_digit()) && !response.contains('!'));
        let command: Value = serde_json::from_str(command).unwrap();
        if context.starts_with("Mode: passive.") && !context.contains("critical") {
            assert_eq!(command["type"], "none", "{answer}");
        }
    }
    assert!(lines.iter().any(|l| {
        l["messages"][2]["content"]
            .as_str()
            .unwrap()
            .contains("\"type\":\"track.freeze\"")
            || l["messages"][2]["content"]
                .as_str()
                .unwrap()
                .contains("\"type\":\"engine.setBufferSize\"")
    }));
}

/// The OpenAI chat fine-tuning line shape: `messages`, each with a `role`
/// of system, user or assistant and text `content`, ending on the
/// assistant's answer that is trained on.
pub fn assert_openai_chat(line: &Value) {
    let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["messages"], "{line}");
    let messages = line["messages"].as_array().unwrap();
    for message in messages {
        let role = message["role"].as_str().unwrap();
        assert!(["system", "user", "assistant"].contains(&role), "{role}");
        assert!(!message["content"].as_str().unwrap().is_empty());
    }
    assert_eq!(messages.last().unwrap()["role"], "assistant");
    assert!(
        messages.iter().skip(1).all(|m| m["role"] != "system"),
        "system comes first"
    );
}

/// `raw/` sanitized into `clean/`, then made a dataset in `data/`.
const SANITIZE_AND_DATASET: &str = "[stage.sanitize]\nstep = \"prime.sanitize\"\ndeps = [\"raw\"]\nouts = [\"clean\", \"reports/sanitize.json\"]\n\n\
                                    [stage.dataset]\nstep = \"prime.dataset\"\ndeps = [\"clean\"]\n\
                                    outs = [\"data/train.jsonl\", \"data/test.jsonl\", \"data/card.json\", \"data/sft.jsonl\", \"data/sft-test.jsonl\", \"data/sft.card.json\"]\n";

/// A new workspace with `ws`'s raw data and pseudonym key (pseudonyms
/// depend on the key: a colleague shares it through FABRIC_PSEUDONYM_KEY or
/// the key file).
fn raw_and_key_of(ws: &Workspace) -> Workspace {
    let fresh = Workspace::new();
    let copied = std::process::Command::new("cp")
        .args(["-r", &ws.path("raw").to_string_lossy(), &fresh.root().to_string_lossy()])
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(fresh.path(".fabric/keys")).unwrap();
    std::fs::copy(
        ws.path(".fabric/keys/pseudonym.key"),
        fresh.path(".fabric/keys/pseudonym.key"),
    )
    .unwrap();
    fresh
}

/// Any executor can run any stage: built-in steps run as `fabric`
/// processes (`run --step-processes`) make the same outs, lock and memos as
/// in-process, on a first run and on a rerun that takes unchanged files
/// from the memo.
#[test]
fn built_in_steps_run_as_fabric_processes_match_in_process() {
    let in_process = Workspace::new();
    in_process.simulate("raw", 3, 2, 30);
    in_process.write("Fabric.toml", SANITIZE_AND_DATASET);
    in_process.ok(&["run"]);
    let processes = raw_and_key_of(&in_process);
    processes.write("Fabric.toml", SANITIZE_AND_DATASET);
    processes.ok(&["run", "--step-processes"]);
    let same = |when: &str| {
        for dir in ["clean", "reports", "data", ".fabric/memo"] {
            assert_eq!(in_process.files(dir), processes.files(dir), "{dir} differs {when}");
        }
        assert_eq!(in_process.read("Fabric.lock"), processes.read("Fabric.lock"), "{when}");
    };
    same("after a first run");
    for stage in ["sanitize", "dataset"] {
        let log = processes.read(&format!(".fabric/logs/{stage}.log"));
        assert!(log.contains(&format!("fabric __step: stage `{stage}`")), "{log}");
        assert!(!in_process.path(&format!(".fabric/logs/{stage}.log")).exists());
    }

    // A record added to one session file: both stages run again, taking
    // the other files from their memos.
    for ws in [&in_process, &processes] {
        let text = ws.read("raw/u01-s01.jsonl");
        let mut added: Value = text.lines().find_map(|l| serde_json::from_str(l).ok()).unwrap();
        added["snapshotId"] = json!("00000000-0000-4000-8000-000000000778");
        added["sequence"] = json!(10_001);
        ws.write("raw/u01-s01.jsonl", &format!("{text}{added}\n"));
    }
    in_process.ok(&["run"]);
    let rerun = processes.ok(&["run", "--step-processes"]);
    assert!(rerun.stderr.contains("2 ran"), "{}", rerun.stderr);
    same("after a rerun");
}

/// A session moved from the training users' directory to the held-out
/// users' (same name, same bytes) goes to the test split on the rerun,
/// although the dataset's memo knows it as a train session.
#[test]
fn a_session_moved_to_the_held_out_users_changes_sides_on_a_memoized_rerun() {
    let ws = Workspace::new();
    ws.simulate("raw", 3, 2, 30);
    sanitize(&ws);
    ws.write(
        "Fabric.toml",
        "[stage.dataset]\nstep = \"prime.dataset\"\ndeps = [\"clean\", \"held\"]\n\
         outs = [\"data/train.jsonl\", \"data/test.jsonl\", \"data/card.json\"]\n\
         [stage.dataset.with]\ntest_fraction = 0.0\n",
    );
    let names: Vec<String> = ws
        .files("clean")
        .into_keys()
        .map(|path| path.trim_start_matches("clean/").to_string())
        .collect();
    let move_to_held = |name: &str| {
        std::fs::create_dir_all(ws.path("held")).unwrap();
        std::fs::rename(ws.path(&format!("clean/{name}")), ws.path(&format!("held/{name}"))).unwrap();
    };
    let sessions = |file: &str| sessions_of(&ws.jsonl(file));
    move_to_held(&names[1]);
    ws.ok(&["run"]);
    let session = names[0].trim_end_matches(".jsonl");
    assert!(sessions("data/train.jsonl").contains(session));
    move_to_held(&names[0]);
    ws.ok(&["run"]);
    assert!(sessions("data/test.jsonl").contains(session));
    assert!(!sessions("data/train.jsonl").contains(session));
    // The same bytes as a build without a memo.
    ws.ok(&[
        "dataset",
        "--input-dir",
        "clean",
        "--held-out-users",
        "held",
        "--output-file",
        "fresh/train.jsonl",
        "--test-fraction",
        "0",
    ]);
    assert_eq!(ws.read("data/train.jsonl"), ws.read("fresh/train.jsonl"));
    assert_eq!(ws.read("data/test.jsonl"), ws.read("fresh/train-test.jsonl"));
}

#[test]
fn sanitize_and_dataset_steps_redo_only_changed_files_and_match_a_fresh_run() {
    let manifest = SANITIZE_AND_DATASET;
    let ws = Workspace::new();
    ws.simulate("raw", 3, 2, 30);
    // One-record files beside the session files, in a subdirectory.
    for i in 0..3 {
        ws.write(
            &format!("raw/extra/{i}.json"),
            &snapshot(900 + i, "extra", i).to_string(),
        );
    }
    ws.write("Fabric.toml", manifest);
    ws.ok(&["run"]);
    assert!(ws.path(".fabric/memo/sanitize").is_file() && ws.path(".fabric/memo/dataset").is_file());

    // A record added to one session file, a one-record file removed, another added.
    // (Simulated files hold deliberately broken lines; they stay as they are.)
    let parsed = |path: &str| -> Vec<Value> {
        ws.read(path)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut added = parsed("raw/u01-s01.jsonl").last().unwrap().clone();
    added["snapshotId"] = json!("00000000-0000-4000-8000-000000000777");
    added["sequence"] = json!(10_000);
    let text = ws.read("raw/u01-s01.jsonl") + &format!("{added}\n");
    ws.write("raw/u01-s01.jsonl", &text);
    std::fs::remove_file(ws.path("raw/extra/2.json")).unwrap();
    ws.write("raw/extra/3.json", &snapshot(903, "extra", 3).to_string());
    ws.ok(&["run"]);

    // A workspace built from scratch on the same raw data has the same bytes.
    let fresh = raw_and_key_of(&ws);
    fresh.write("Fabric.toml", manifest);
    fresh.ok(&["run"]);
    for dir in ["clean", "reports", "data"] {
        assert_eq!(ws.files(dir), fresh.files(dir), "{dir} differs from a fresh run");
    }
    let added = ws.files("clean");
    assert!(
        added
            .values()
            .any(|bytes| String::from_utf8_lossy(bytes).contains("\"sequence\":10000"))
    );

    // The rerun really took unchanged files from the memo: a result altered
    // inside it (one hex digit of a pseudonym) shows up in the output once
    // sanitize runs again.
    let first = added.keys().next().unwrap().clone();
    let id = ws.jsonl(&first)[0]["snapshotId"].as_str().unwrap().to_string();
    let last = if id.ends_with('0') { "1" } else { "0" };
    let altered = format!("{}{last}", &id[..id.len() - 1]);
    let mut memo = std::fs::read(ws.path(".fabric/memo/sanitize")).unwrap();
    let mut replaced = 0;
    while let Some(at) = memo.windows(id.len()).position(|w| w == id.as_bytes()) {
        memo[at..at + id.len()].copy_from_slice(altered.as_bytes());
        replaced += 1;
    }
    assert!(replaced >= 2, "the memo keeps the record's id and line");
    std::fs::write(ws.path(".fabric/memo/sanitize"), memo).unwrap();
    ws.write("raw/extra/4.json", &snapshot(904, "extra", 4).to_string());
    ws.ok(&["run"]);
    let clean = ws.read(&first);
    assert!(
        clean.contains(&altered) && !clean.contains(&id),
        "the kept result was not used"
    );

    // `gc` drops the memos of stages no longer declared.
    ws.write("Fabric.toml", manifest.split("[stage.dataset]").next().unwrap());
    let gc = ws.ok(&["gc"]);
    assert!(gc.stdout.contains("1 step memos"), "{}", gc.stdout);
    assert!(ws.path(".fabric/memo/sanitize").is_file() && !ws.path(".fabric/memo/dataset").exists());
}

/// The corpus goes through the whole default pipeline as Studio data
/// (sanitize pointed at `snapshots/raw`, as the README says), then every file
/// in the workspace but the raw input is searched: sanitized snapshots,
/// datasets, card, the instruction-tuning export, model, reports, release,
/// logs, memos and the store.
#[test]
fn the_personal_data_corpus_reaches_nothing_downstream_in_the_whole_pipeline() {
    let corpus = corpus();
    let ws = Workspace::new();
    let root = env!("CARGO_MANIFEST_DIR");
    ws.write(
        "Fabric.toml",
        &std::fs::read_to_string(format!("{root}/Fabric.toml")).unwrap(),
    );
    let pipeline = std::fs::read_to_string(format!("{root}/pipelines/prime-brain.toml")).unwrap();
    // The simulate stages go: the training users' sessions are the corpus
    // and simulated ones, the validation and test users' are written
    // below without the simulator's own deliberately bad (personal) records.
    let simulate = pipeline.find("[stage.simulate]").unwrap()..pipeline.find("[stage.sanitize]").unwrap();
    let pipeline = format!("{}{}", &pipeline[..simulate.start], &pipeline[simulate.end..])
        .replace("${stage.simulate-validation.outs[0]}", "snapshots/simulated-validation")
        .replace("${stage.simulate-test.outs[0]}", "snapshots/simulated-test");
    assert!(
        pipeline.contains("sft.jsonl"),
        "the default pipeline writes the instruction-tuning set"
    );
    ws.write("pipelines/prime-brain.toml", &pipeline);
    ws.write("reviews/README.md", "No review yet.\n");
    ws.write(
        "changes/next.md",
        "### What\nA model.\n\n### Why\nA test.\n\n### How\nThe pipeline.\n",
    );
    ws.ok(&["simulate", "--output-dir", "snapshots/raw"]);
    for group in ["validation", "test"] {
        let dir = format!("snapshots/simulated-{group}");
        ws.ok(&[
            "simulate",
            "--output-dir",
            &dir,
            "--group",
            group,
            "--users",
            "10",
            "--bad-fraction",
            "0",
        ]);
    }
    let records: Vec<Value> = corpus
        .iter()
        .enumerate()
        .map(|(n, case)| corpus_record(n, case))
        .collect();
    // The raw file is named after an identifying session id, as an exporter
    // might name it: the name must not reach anything either.
    let session_case = corpus.iter().find(|c| c["field"] == "session_id").unwrap();
    let raw_name = format!("snapshots/raw/{}.jsonl", session_case["text"].as_str().unwrap());
    write_jsonl(&ws, &raw_name, &records);
    let run = ws.ok(&["run", "--snapshots-dir", "snapshots/raw"]);
    assert!(run.stderr.contains("ran release"), "{}", run.stderr);
    assert!(ws.path("datasets/prime-brain-v1.sft.jsonl").exists());

    let mut searched = 0;
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(ws.root()) {
        let entry = entry.unwrap();
        let relative = entry
            .path()
            .strip_prefix(ws.root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // The raw input, and sanitize's step memo, which indexes the raw
        // files by their paths (local state beside them, never an output).
        if relative.starts_with("snapshots/raw") || relative.starts_with(".fabric/memo") || !entry.file_type().is_file()
        {
            continue;
        }
        let text = format!(
            "{relative}\n{}",
            String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap())
        );
        found.extend(
            leaks(&corpus, &text)
                .into_iter()
                .map(|leak| format!("{relative}: {leak}")),
        );
        searched += 1;
    }
    assert!(searched > 20, "the store, models and reports were searched");
    assert!(found.is_empty(), "{} leaks:\n{}", found.len(), found.join("\n"));
}

/// The README's short tour, command by command, in a fresh copy of the
/// repository's workspace: every command works as written.
#[test]
fn the_readme_tour_works_as_written_in_a_fresh_copy() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ws = Workspace::new();
    like_a_fresh_clone(&ws);
    ws.write(
        "Fabric.lock",
        &std::fs::read_to_string(format!("{root}/Fabric.lock")).unwrap(),
    );
    ws.git(&["init", "-q", "-b", "main"]);
    ws.git(&["add", "-A"]);
    ws.git(&["commit", "-qm", "workspace"]);
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let tour = readme
        .split("## A short tour\n\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a tour");
    let commands: Vec<Vec<String>> = tour
        .lines()
        .filter_map(|line| line.split('#').next()?.trim().strip_prefix("fabric "))
        .map(|command| {
            command
                .replace(['[', ']'], "")
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    for (step, args) in commands.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let outcome = ws.ok(&args);
        if step == 0 {
            // A second revision for `metrics --diff HEAD~1`.
            ws.git(&["commit", "-qam", "first run"]);
        }
        if args.starts_with(&["metrics", "--diff"]) {
            // reports/ is not committed: the old values come through the committed lock.
            let accuracy = outcome
                .stdout
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some("model.command_accuracy"))
                .unwrap_or_default();
            let cells: Vec<&str> = accuracy.split_whitespace().collect();
            assert!(
                cells.len() >= 4 && cells[2].parse::<f64>().is_ok(),
                "{}",
                outcome.stdout
            );
        }
        if step == 2 {
            assert!(
                outcome.stderr.contains("restored"),
                "back to 10 restores: {}",
                outcome.stderr
            );
        }
    }
    assert!(ws.path("my-workspace/Fabric.toml").exists());
}

/// A fresh workspace (a new pseudonym key) records exactly the lock the
/// repository commits for every stage the key does not reach: the sanitize
/// stages' entries are per key, the fingerprints of the stages reading
/// their outputs (the datasets, studio) too, but their outs, and all after
/// them, are the same.
pub(super) fn matches_the_committed_lock(ws: &Workspace) {
    let root = env!("CARGO_MANIFEST_DIR");
    let committed = fabric_core::lock::Lock::read(std::path::Path::new(&format!("{root}/Fabric.lock"))).unwrap();
    let fresh = fabric_core::lock::Lock::read(&ws.path("Fabric.lock")).unwrap();
    assert_eq!(
        committed.stage.keys().collect::<Vec<_>>(),
        fresh.stage.keys().collect::<Vec<_>>()
    );
    for (name, entry) in &committed.stage {
        match name.as_str() {
            "sanitize" | "sanitize-validation" | "sanitize-test" => {
                assert_ne!(entry, &fresh.stage[name], "another key, other pseudonyms")
            }
            "dataset" | "dataset-validation" | "studio" => assert_eq!(
                entry.outs, fresh.stage[name].outs,
                "{name}'s outs do not depend on the key"
            ),
            _ => assert_eq!(
                entry, &fresh.stage[name],
                "{name} differs from the committed lock: rerun the pipeline and commit"
            ),
        }
    }
}

/// Copies what a fresh clone holds for the default pipeline (manifests,
/// `.gitignore`, reviews, the shipped releases; not the lock) into `ws`.
pub(super) fn like_a_fresh_clone(ws: &Workspace) {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "Fabric.toml",
        "pipelines/prime-brain.toml",
        "reviews/README.md",
        ".gitignore",
    ] {
        ws.write(file, &std::fs::read_to_string(format!("{root}/{file}")).unwrap());
    }
    for entry in walkdir::WalkDir::new(format!("{root}/artifacts")) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let relative = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            std::fs::create_dir_all(ws.path(&relative).parent().unwrap()).unwrap();
            std::fs::copy(entry.path(), ws.path(&relative)).unwrap();
        }
    }
}

/// A step's options are declared once: the direct commands take the same
/// names as the `with` tables and break the same rules, said as flags.
#[test]
fn direct_commands_check_options_as_the_steps_do() {
    let ws = Workspace::new();
    for (args, said) in [
        (
            &["simulate", "--output-dir", "raw", "--bad-fraction", "1.5"][..],
            "--bad-fraction must be within 0–1",
        ),
        (
            &[
                "dataset",
                "--input-dir",
                "s",
                "--output-file",
                "d/x.jsonl",
                "--window-size",
                "0",
            ][..],
            "--window-size must be at least 1",
        ),
        (
            &[
                "dataset",
                "--input-dir",
                "s",
                "--output-file",
                "d/x.jsonl",
                "--test-fraction",
                "1",
            ][..],
            "--test-fraction must be at least 0 and below 1",
        ),
        (
            &[
                "train",
                "--dataset",
                "s.jsonl",
                "--output-dir",
                "d",
                "--batch-size",
                "0",
            ][..],
            "--batch-size must be at least 1",
        ),
        (
            &["train", "--dataset", "s.jsonl", "--output-dir", "d", "--hidden", "8,0"][..],
            "--hidden needs at least one layer, each wider than 0",
        ),
    ] {
        let outcome = ws.fabric(args);
        assert_eq!(outcome.code, 2, "{args:?}: {}", outcome.stderr);
        assert!(outcome.stderr.contains(said), "{args:?}: {}", outcome.stderr);
        assert!(!ws.path("raw").exists() && !ws.path("d").exists(), "nothing is written");
    }
    ws.write(
        "Fabric.toml",
        "[stage.d]\nstep = \"prime.dataset\"\ndeps = [\"s\"]\nouts = [\"a\", \"b\", \"c\"]\n[stage.d.with]\nwindow_size = 0\n",
    );
    let outcome = ws.fabric(&["status"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("window_size must be at least 1"),
        "{}",
        outcome.stderr
    );
}
