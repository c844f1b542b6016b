//! The ONNX nodes: training, evaluation, the exported model.

use std::process::Command;

use serde_json::Value;

use super::{INTRUSIVE, Workspace, ort_dir};

/// A small dataset in `d/` (train, test, card).
fn small_dataset(ws: &Workspace) {
    ws.simulate("raw", 4, 3, 40);
    ws.ok(&["sanitize", "--input-dir", "raw", "--output-dir", "clean"]);
    ws.ok(&[
        "dataset",
        "--input-dir",
        "clean",
        "--output-file",
        "d/train.jsonl",
        "--augment-mode",
    ]);
}

fn train(ws: &Workspace, out: &str, extra: &[&str]) -> super::Outcome {
    let mut args = vec!["train", "--dataset", "d/train.jsonl", "--output-dir", out];
    if !extra.contains(&"--epochs") {
        args.extend(["--epochs", "3"]);
    }
    args.extend_from_slice(extra);
    let outcome = ws.fabric(&args);
    if outcome.code != 0 {
        eprintln!("fabric {args:?}:\n{}", outcome.stderr);
    }
    outcome
}

#[test]
fn training_is_byte_reproducible_and_the_model_carries_its_metadata() {
    let ws = Workspace::new();
    small_dataset(&ws);
    assert_eq!(train(&ws, "m1", &[]).code, 0);
    assert_eq!(train(&ws, "m2", &[]).code, 0);
    let one = std::fs::read(ws.path("m1/model.onnx")).unwrap();
    assert_eq!(
        one,
        std::fs::read(ws.path("m2/model.onnx")).unwrap(),
        "same inputs, seed, threads: same bytes"
    );
    assert_eq!(train(&ws, "m3", &["--seed", "8"]).code, 0);
    assert_ne!(one, std::fs::read(ws.path("m3/model.onnx")).unwrap());

    let card: Value = serde_json::from_str(&ws.read("d/train.card.json")).unwrap();
    let hash = card["datasetHash"].as_str().unwrap();
    let text = String::from_utf8_lossy(&one);
    assert!(
        text.contains("dataset_hash") && text.contains(hash),
        "the dataset hash is in the metadata"
    );
    assert!(text.contains("vocabulary") && text.contains("mix.eqCut"));
    let log: Value = serde_json::from_str(&ws.read("m1/training-log.json")).unwrap();
    let losses: Vec<f64> = log["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 3);
    assert!(losses[2] < losses[0], "training lowers the loss: {losses:?}");
    let model_card: Value = serde_json::from_str(&ws.read("m1/model-card.json")).unwrap();
    assert_eq!(model_card["datasetHash"], hash);
}

#[test]
fn base_model_warm_starts_from_a_released_model() {
    let ws = Workspace::new();
    small_dataset(&ws);
    assert_eq!(train(&ws, "m1", &[]).code, 0);
    let warm = train(&ws, "m2", &["--base-model", "m1/model.onnx", "--epochs", "1"]);
    assert_eq!(warm.code, 0, "{}", warm.stderr);
    let cold = train(&ws, "m3", &["--epochs", "1"]);
    assert_eq!(cold.code, 0);
    let loss = |dir: &str| -> f64 {
        let log: Value = serde_json::from_str(&ws.read(&format!("{dir}/training-log.json"))).unwrap();
        log["epochs"][0]["loss"].as_f64().unwrap()
    };
    assert!(
        loss("m2") < loss("m3"),
        "a warm start begins where the released model ended"
    );

    let mismatch = train(&ws, "m4", &["--base-model", "m1/model.onnx", "--hidden", "16"]);
    assert_eq!(mismatch.code, 1);
    assert!(
        mismatch.stderr.contains("use the same `hidden` sizes"),
        "{}",
        mismatch.stderr
    );
}

/// Vertex AI's documented Gemini line shape: an optional
/// `systemInstruction` with text `parts`, and `contents` whose turns have
/// `role` user or model, alternate from a user turn, and hold non-empty
/// text `parts`; a tuning example ends on the model's turn, a prompt on
/// the user's.
fn assert_gemini_tuning(line: &Value, last: &str) {
    let object = line.as_object().unwrap();
    assert!(
        object.keys().all(|k| k == "contents" || k == "systemInstruction"),
        "{line}"
    );
    let text_parts = |content: &Value| {
        let parts = content["parts"].as_array().unwrap();
        assert!(!parts.is_empty());
        for part in parts {
            assert_eq!(part.as_object().unwrap().len(), 1, "{part}");
            assert!(!part["text"].as_str().unwrap().is_empty());
        }
    };
    text_parts(&line["systemInstruction"]);
    let contents = line["contents"].as_array().unwrap();
    for (i, content) in contents.iter().enumerate() {
        assert_eq!(
            content["role"],
            ["user", "model"][i % 2],
            "turns alternate from the user's"
        );
        text_parts(content);
    }
    assert_eq!(contents.last().unwrap()["role"], last);
}

/// The brief's `train --base-model gemini-2.5-flash --epochs 3
/// --learning-rate 1e-5`: the hosted tuning job is prepared in Vertex AI's
/// documented shapes, and nothing pretends to tune.
#[test]
fn a_hosted_base_model_gets_its_tuning_job_prepared() {
    let ws = Workspace::new();
    small_dataset(&ws);
    let hosted = train(
        &ws,
        "hosted",
        &[
            "--base-model",
            "gemini-2.5-flash",
            "--epochs",
            "3",
            "--learning-rate",
            "1e-5",
        ],
    );
    assert_eq!(hosted.code, 0, "{}", hosted.stderr);
    assert!(
        hosted.stderr.contains("its tuning runs on Vertex AI, not in Fabric"),
        "{}",
        hosted.stderr
    );
    assert!(hosted.stderr.contains("Vertex AI does not take"), "{}", hosted.stderr);
    assert!(
        !ws.path("hosted/model.onnx").exists(),
        "nothing pretends to be a tuned model"
    );

    assert!(
        hosted
            .stderr
            .contains("fabric evaluate --predictions answers.jsonl --test-dataset d/train-test.jsonl"),
        "{}",
        hosted.stderr
    );
    let export = ws.jsonl("d/train.sft.jsonl");
    let lines = ws.jsonl("hosted/tuning-data.jsonl");
    assert_eq!(lines.len(), export.len());
    assert_eq!(lines.len(), ws.read("d/train.jsonl").lines().count());
    for (line, chat) in lines.iter().zip(&export) {
        assert_gemini_tuning(line, "model");
        let system = &line["systemInstruction"]["parts"][0]["text"];
        assert_eq!(system, &chat["messages"][0]["content"]);
        let contents = line["contents"].as_array().unwrap();
        assert_eq!(contents[0]["parts"][0]["text"], chat["messages"][1]["content"]);
        assert_eq!(contents[1]["parts"][0]["text"], chat["messages"][2]["content"]);
    }
    // The held-out prompts, in the test split's order, without their answers.
    let prompts = ws.jsonl("hosted/test-prompts.jsonl");
    let held_out = ws.jsonl("d/train.sft-test.jsonl");
    assert_eq!(prompts.len(), ws.read("d/train-test.jsonl").lines().count());
    for (prompt, chat) in prompts.iter().zip(&held_out) {
        assert_gemini_tuning(&prompt["request"], "user");
        assert_eq!(
            prompt["request"]["contents"][0]["parts"][0]["text"],
            chat["messages"][1]["content"]
        );
    }
    let job: Value = serde_json::from_str(&ws.read("hosted/tuning-job.json")).unwrap();
    assert_eq!(job["baseModel"], "gemini-2.5-flash");
    assert_eq!(job["supervisedTuningSpec"]["hyperParameters"]["epochCount"], 3);
    assert_eq!(
        job["supervisedTuningSpec"]["hyperParameters"]["learningRateMultiplier"],
        1.0
    );
    assert!(
        job["supervisedTuningSpec"]["trainingDatasetUri"]
            .as_str()
            .unwrap()
            .starts_with("gs://")
    );
    assert!(ws.read("hosted/TUNING.md").contains("tuningJobs"));

    // A flag given counts, a default of the built-in architecture does not.
    for (flags, epochs) in [(&["--epochs", "5"][..], 5), (&[][..], 3)] {
        let base = ["train", "--dataset", "d/train.jsonl", "--output-dir", "hosted"];
        let hosted = ws.fabric(&[&base[..], &["--base-model", "gemini-2.5-flash"], flags].concat());
        assert_eq!(hosted.code, 0, "{}", hosted.stderr);
        assert!(!hosted.stderr.contains("Vertex AI does not take"), "{}", hosted.stderr);
        let job: Value = serde_json::from_str(&ws.read("hosted/tuning-job.json")).unwrap();
        assert_eq!(job["supervisedTuningSpec"]["hyperParameters"]["epochCount"], epochs);
    }
    let evaluated = ws.fabric(&[
        "evaluate",
        "--model-dir",
        "hosted",
        "--test-dataset",
        "d/train-test.jsonl",
        "--output-report",
        "r/hosted.md",
    ]);
    assert_eq!(evaluated.code, 1);
    assert!(
        evaluated.stderr.contains("holds a tuning job for a hosted model")
            && evaluated.stderr.contains("--predictions"),
        "{}",
        evaluated.stderr
    );

    // A damaged export is named by file and line; a missing one says what makes it.
    let mut damaged = ws.read("d/train.sft.jsonl");
    damaged.push_str("{\"prompt\": \"not a chat\"}\n");
    ws.write("d/train.sft.jsonl", &damaged);
    let refused = train(&ws, "hosted2", &["--base-model", "gemini-2.5-flash"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains(&format!(
            "train.sft.jsonl:{}: not a chat conversation",
            export.len() + 1
        )),
        "{}",
        refused.stderr
    );
    std::fs::remove_file(ws.path("d/train.sft.jsonl")).unwrap();
    let missing = train(&ws, "hosted3", &["--base-model", "gemini-2.5-flash"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("`fabric dataset --output-file d/train.jsonl` writes"),
        "{}",
        missing.stderr
    );
}

#[test]
fn python_onnxruntime_gives_the_same_outputs_as_fabric() {
    let ws = Workspace::new();
    small_dataset(&ws);
    assert_eq!(train(&ws, "m", &[]).code, 0);
    let examples: Vec<Value> = ws.jsonl("d/train-test.jsonl");
    let features: Vec<Vec<f32>> = examples
        .iter()
        .take(64)
        .map(|e| {
            e["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let width = features[0].len();
    let flat: Vec<f32> = features.concat();

    // Rust side, through the library.
    let bytes = std::fs::read(ws.path("m/model.onnx")).unwrap();
    let mut session =
        fabric_onnx::runtime::session(Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))), &bytes, 1).unwrap();
    let input = fabric_onnx::tensors::f32_value(&[features.len(), width], flat).unwrap();
    let outputs = session.run(ort::inputs!["features" => input]).unwrap();
    let heads = ["command", "target", "next_mode", "channel", "intensity"];
    let rust: Vec<Vec<f32>> = heads
        .iter()
        .map(|h| {
            outputs[format!("{h}_probs").as_str()]
                .try_extract_tensor::<f32>()
                .unwrap()
                .1
                .to_vec()
        })
        .collect();

    // Python side, with the wheel scripts/setup installed.
    ws.write("features.json", &serde_json::to_string(&features).unwrap());
    let script = r#"
import json, sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
features = np.array(json.load(open(sys.argv[2])), dtype=np.float32)
names = [o.name for o in session.get_outputs()]
values = session.run(names, {"features": features})
print(json.dumps({n: v.reshape(-1).tolist() for n, v in zip(names, values)}))
"#;
    let python_path = ort_dir().parent().unwrap().parent().unwrap().to_path_buf();
    let output = Command::new("python3")
        .args(["-c", script, "m/model.onnx", "features.json"])
        .current_dir(ws.root())
        .env("PYTHONPATH", &python_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let python: Value = serde_json::from_slice(&output.stdout).unwrap();
    for (head, values) in heads.iter().zip(&rust) {
        let theirs: Vec<f64> = python[format!("{head}_probs")]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(theirs.len(), values.len(), "{head}");
        for (a, b) in values.iter().zip(&theirs) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{head}: {a} vs {b}");
        }
    }
}

#[test]
fn evaluation_gates_fail_a_regressed_model() {
    let ws = Workspace::new();
    small_dataset(&ws);
    assert_eq!(train(&ws, "m", &[]).code, 0);
    let strict = ws.fabric(&[
        "evaluate",
        "--model-dir",
        "m",
        "--test-dataset",
        "d/train-test.jsonl",
        "--output-report",
        "r/report.md",
        "--min-command-accuracy",
        "0.999",
    ]);
    assert_eq!(strict.code, 1);
    assert!(
        strict.stderr.contains("regression gates failed:") && strict.stderr.contains("min_command_accuracy"),
        "{}",
        strict.stderr
    );
    assert!(ws.read("r/report.md").contains("- min_command_accuracy: FAILED"));
    assert!(
        !strict.stderr.contains("was trained on dataset"),
        "the model and the test split come from one dataset: no warning: {}",
        strict.stderr
    );

    assert!(
        ws.read("r/report.md")
            .contains("## Moments, as the user would see them")
    );
}

/// A good predictor: what the user did next, where the mode allows it, said
/// in a whisper on that action's channel with a calm phrase.
fn oracle(example: &Value) -> Value {
    let command = &example["command"];
    let kind = command["type"].as_str().unwrap();
    let allowed = match example["mode"].as_str().unwrap() {
        "passive" => false,
        "learning" => !INTRUSIVE.contains(&kind),
        _ => true,
    };
    serde_json::json!({
        "response": "The mix feels a touch warm.",
        "command": if allowed { command.clone() } else { serde_json::json!({"type": "none"}) },
        "channel": example["guidance"]["channel"],
        "intensity": "whisper",
    })
}

/// Scores `predict` (one prediction per test example) with the default
/// gates; returns the exit code, the metrics and the report.
fn evaluate_predictions(ws: &Workspace, name: &str, predict: impl Fn(&Value) -> Value) -> (i32, Value, String) {
    evaluate_predictions_with(ws, name, &[], predict)
}

/// [`evaluate_predictions`] with more `fabric evaluate` flags (gates).
fn evaluate_predictions_with(
    ws: &Workspace,
    name: &str,
    flags: &[&str],
    predict: impl Fn(&Value) -> Value,
) -> (i32, Value, String) {
    let examples: Vec<Value> = ws.jsonl("d/train-test.jsonl");
    let lines: String = examples.iter().map(|e| format!("{}\n", predict(e))).collect();
    ws.write(&format!("{name}.jsonl"), &lines);
    let outcome = ws.fabric(
        &[
            "evaluate",
            "--predictions",
            &format!("{name}.jsonl"),
            "--test-dataset",
            "d/train-test.jsonl",
            "--output-report",
            &format!("{name}/report.md"),
        ]
        .into_iter()
        .chain(flags.iter().copied())
        .collect::<Vec<_>>(),
    );
    let metrics = serde_json::from_str(&ws.read(&format!("{name}/metrics.json"))).unwrap();
    (outcome.code, metrics, ws.read(&format!("{name}/report.md")))
}

/// Every gate can fail: a deliberately bad predictor fails each one, while a
/// good one passes them all (so the gates are not simply unreachable).
#[test]
fn every_gate_fails_a_predictor_built_to_fail_it() {
    let ws = Workspace::new();
    small_dataset(&ws);
    let strict = ["--beat-baselines", "--min-oracle-gap-closed", "0.5"];
    let (code, metrics, report) = evaluate_predictions_with(&ws, "oracle", &strict, oracle);
    assert_eq!(code, 0, "the oracle passes every gate: {}", metrics["gates"]);
    assert!(report.contains("| metric | external predictions | seed rules | majority | oracle |"));
    // The style-knowing oracle row is a ceiling above both baselines, below
    // knowing the answers.
    let f1 = |who: &str| metrics[who]["macro_f1"].as_f64().unwrap();
    assert!(
        f1("oracle") > f1("seed_rules") && f1("oracle") > f1("majority") && f1("oracle") < f1("model"),
        "{metrics}"
    );

    // The comparative gates: a predictor that only keeps quiet closes none
    // of the gap to the oracle; one that names the wrong tracks does not
    // beat the seed rules on target accuracy.
    let (code, metrics, _) = evaluate_predictions_with(&ws, "quiet", &strict, |e| {
        let mut p = oracle(e);
        p["command"] = serde_json::json!({"type": "none"});
        p
    });
    assert_eq!(code, 1);
    assert_eq!(metrics["gates"]["min_oracle_gap_closed"], false, "{metrics}");
    assert!(metrics["oracle_gap_closed"].as_f64().unwrap() <= 0.0, "{metrics}");
    let (code, metrics, _) = evaluate_predictions_with(&ws, "wrong-tracks", &strict, |e| {
        let mut p = oracle(e);
        if p["command"]["target"].is_string() {
            p["command"]["target"] = "master".into();
        }
        p
    });
    assert_eq!(code, 1);
    assert_eq!(metrics["gates"]["beat_baselines"], false, "{metrics}");
    assert_eq!(metrics["gates"]["min_oracle_gap_closed"], true, "{metrics}");

    let in_flow = |e: &Value| e["moment"]["playing"] == true && e["moment"]["energy"].as_f64().unwrap() >= 0.6;
    type Bad = (&'static str, &'static str, fn(&Value, Value) -> Value);
    let bad: [Bad; 8] = [
        // The right commands, but not executable: their arguments left out.
        ("missing-arguments", "min_command_json_validity", |_, mut p| {
            if let Some(command) = p["command"].as_object_mut() {
                command.remove("args");
            }
            p
        }),
        ("nudging-in-passive", "min_intensity_compliance", |e, mut p| {
            if e["mode"] == "passive" && e["critical"] == false {
                p["intensity"] = "nudge".into();
            }
            p
        }),
        ("loud-in-passive", "min_mode_compliance", |e, mut p| {
            if e["mode"] == "passive" {
                p["command"] = serde_json::json!({"type": "transport.stop"});
                p["intensity"] = "call".into();
            }
            p
        }),
        ("outside-the-vocabulary", "min_command_json_validity", |e, mut p| {
            p["command"] = match e["windowEnd"].as_u64().unwrap_or(0) % 3 {
                0 => serde_json::json!({"type": "mix.explode", "target": "the lead singer"}),
                1 => serde_json::json!({"type": "engine.setBufferSize", "args": {"size": "as big as it goes"}}),
                _ => "{\"type\": \"mix.eqCut\", ".into(),
            };
            p
        }),
        ("wrong-channel", "min_als_alignment", |_, mut p| {
            let wrong = match p["channel"].as_str().unwrap() {
                "temperature" => "pulse",
                "pulse" => "energy",
                "energy" => "pressure",
                _ => "temperature",
            };
            p["channel"] = wrong.into();
            p
        }),
        ("always-none", "min_acceptance", |_, mut p| {
            p["command"] = serde_json::json!({"type": "none"});
            p
        }),
        ("one-class", "min_macro_f1", |e, mut p| {
            if e["mode"] != "passive" {
                p["command"] = serde_json::json!({"type": "mix.balanceLevels"});
            }
            p
        }),
        ("nagging", "max_interventions_per_minute", |e, mut p| {
            if e["mode"] != "passive" {
                p["command"] = serde_json::json!({"type": "mix.balanceLevels"});
            }
            p
        }),
    ];
    for (name, gate, spoil) in bad {
        let (code, metrics, report) = evaluate_predictions(&ws, name, |e| spoil(e, oracle(e)));
        assert_eq!(code, 1, "{name}: {}", metrics["gates"]);
        assert_eq!(
            metrics["gates"][gate], false,
            "{name} fails {gate}: {}",
            metrics["gates"]
        );
        assert!(report.contains(&format!("- {gate}: FAILED")), "{name}");
    }

    // Metrics without a gate of their own fall too: the wrong track, and
    // three guesses that are all wrong.
    let oracle_scores = &evaluate_predictions(&ws, "oracle", oracle).1["model"];
    let (_, metrics, _) = evaluate_predictions(&ws, "wrong-target", |e| {
        let mut p = oracle(e);
        if p["command"]["target"].is_string() {
            let wrong = if p["command"]["target"] == "bass" {
                "vocals"
            } else {
                "bass"
            };
            p["command"]["target"] = wrong.into();
        }
        p
    });
    assert!(
        oracle_scores["target_accuracy"].as_f64().unwrap() > 0.5,
        "{oracle_scores}"
    );
    assert!(
        metrics["model"]["target_accuracy"].as_f64().unwrap() < 0.1,
        "{}",
        metrics["model"]
    );
    let (_, metrics, _) = evaluate_predictions(&ws, "wrong-top3", |e| {
        let mut p = oracle(e);
        p["command"] = serde_json::json!({"type": "none"});
        let truth = e["command"]["type"].as_str().unwrap();
        let wrong: Vec<&str> = ["mix.addReverb", "track.solo", "transport.setTempo", "none"]
            .into_iter()
            .filter(|k| *k != truth)
            .take(3)
            .collect();
        p["top3"] = serde_json::json!(wrong);
        p
    });
    let top3 = metrics["model"]["command_top3"].as_f64().unwrap();
    assert!(top3 < oracle_scores["command_top3"].as_f64().unwrap() - 0.5, "{top3}");
    // The right commands with valid but wrong arguments: another buffer
    // size, another amount, another tempo.
    let (_, metrics, _) = evaluate_predictions(&ws, "wrong-arguments", |e| {
        let mut p = oracle(e);
        let Some(args) = p["command"].get_mut("args") else {
            return p;
        };
        if let Some(size) = args["size"].as_u64() {
            args["size"] = (if size == 32 { 64 } else { size / 2 }).into();
        }
        if let Some(amount) = args["amount"].as_str() {
            args["amount"] = (if amount == "gentle" { "strong" } else { "gentle" }).into();
        }
        if let Some(bpm) = args["bpm"].as_f64() {
            args["bpm"] = (bpm + 1.0).into();
        }
        p
    });
    let (right, wrong) = (
        oracle_scores["argument_accuracy"].as_f64().unwrap(),
        metrics["model"]["argument_accuracy"].as_f64().unwrap(),
    );
    assert!(right > 0.9 && wrong < 0.1, "{wrong} vs {right}");
    assert_eq!(metrics["model"]["command_json_validity"], 1.0, "still executable");
    // Speaking at the wrong intensity everywhere the doctrine allows it:
    // a nudge where it asks for a whisper, a whisper where it asks more.
    let (_, metrics, _) = evaluate_predictions(&ws, "wrong-intensity", |e| {
        let mut p = oracle(e);
        let whisper = e["guidance"]["intensity"] == "whisper";
        let quiet_only = e["mode"] == "passive" && e["critical"] == false;
        p["intensity"] = if whisper && !quiet_only { "nudge" } else { "whisper" }.into();
        p
    });
    let (right, wrong) = (
        oracle_scores["intensity_accuracy"].as_f64().unwrap(),
        metrics["model"]["intensity_accuracy"].as_f64().unwrap(),
    );
    assert!(wrong < right - 0.5, "{wrong} vs {right}");
    assert_eq!(metrics["model"]["intensity_compliance"], 1.0, "{}", metrics["model"]);

    // Interrupting a user in flow: loud, intrusive and unwanted.
    let (code, metrics, _) = evaluate_predictions(&ws, "interrupting", |e| {
        let mut p = oracle(e);
        if in_flow(e) && e["mode"] != "passive" && e["mode"] != "learning" {
            p["command"] = serde_json::json!({"type": "transport.stop"});
            p["intensity"] = "call".into();
        }
        p
    });
    assert_eq!(code, 1);
    assert_eq!(
        metrics["gates"]["min_time_in_flow"], false,
        "{}",
        metrics["model"]["flow"]
    );
    assert!(metrics["model"]["flow"]["overall"]["flow_breaks"].as_u64().unwrap() > 0);

    // Texts the tone audit must refuse, one kind at a time.
    for (text, issue) in [
        ("Your mix is garbage and you should quit; the energy is awful.", "harsh"),
        ("You keep overloading the session with your careless edits.", "blame"),
        ("Fix the pulse immediately, right now.", "urgent"),
        ("THE ENERGY IS SPILLING OVER", "shouting"),
        ("The energy is rising!", "shouting"),
        ("The mix is ninety percent warm.", "number"),
        ("The low end feels 3 dB crowded.", "number"),
        ("The pulse sits at a hundred and twenty beats per minute.", "number"),
        ("Raise the buffer size to lower the CPU load and latency.", "jargon"),
    ] {
        let (code, metrics, _) = evaluate_predictions(&ws, "tone", |e| {
            let mut p = oracle(e);
            p["response"] = text.into();
            p
        });
        assert_eq!(code, 1, "{text}");
        assert_eq!(metrics["gates"]["min_tone_audit"], false, "{text}");
        assert!(
            metrics["model"]["tone_issues"][issue].as_u64().unwrap() > 0,
            "{text}: {}",
            metrics["model"]["tone_issues"]
        );
    }
}

/// A person's review: a sheet of the model's outputs, verdicts imported with
/// who and when, shipped with the release that carries that model, and
/// checked by `fabric verify`; nothing is approved that no person approved.
#[test]
fn a_review_is_recorded_shipped_and_verified() {
    let ws = Workspace::new();
    small_dataset(&ws);
    assert_eq!(train(&ws, "m", &[]).code, 0);
    let under = [
        "--model-dir",
        "m",
        "--test-dataset",
        "d/train-test.jsonl",
        "--samples",
        "8",
    ];
    let export = |output: &str| {
        let mut args = vec!["review", "export", "--output", output];
        args.extend(under);
        ws.ok(&args);
        serde_json::from_str::<Value>(&ws.read(output)).unwrap()
    };
    let import = |sheet: &str| {
        let mut args = vec![
            "review",
            "import",
            sheet,
            "--reviewer",
            "Ada Lovelace",
            "--at",
            "2026-12-02T12:00:00Z",
        ];
        args.extend(under);
        ws.fabric(&args)
    };
    let mut sheet = export("sheet.json");
    let samples = sheet["samples"].as_array().unwrap().len();
    assert!(samples >= 4, "{sheet}");
    assert!(sheet["samples"][0]["context"].as_str().unwrap().contains("energy"));

    // Unfilled: refused.
    let unfilled = import("sheet.json");
    assert_eq!(unfilled.code, 1);
    assert!(unfilled.stderr.contains("verdict"), "{}", unfilled.stderr);
    // What was shown edited: refused.
    let mut edited = sheet.clone();
    edited["samples"][0]["says"] = "Something the model never said.".into();
    edited["samples"][0]["sample"] = sheet["samples"][1]["sample"].clone();
    for sample in edited["samples"].as_array_mut().unwrap() {
        sample["verdict"] = "approve".into();
    }
    ws.write("edited.json", &edited.to_string());
    assert!(import("edited.json").stderr.contains("differ"));

    // One rejection: recorded, not an approval; the release is unreviewed.
    for sample in sheet["samples"].as_array_mut().unwrap() {
        sample["verdict"] = "approve".into();
    }
    sheet["samples"][0]["verdict"] = "reject".into();
    ws.write("sheet.json", &sheet.to_string());
    assert_eq!(import("sheet.json").code, 0);
    ws.write(
        "Fabric.toml",
        "[stage.ship]\nstep = \"fabric.release\"\ndeps = [\"m/model.onnx\", \"reviews\"]\nouts = [\"receipt.json\"]\n\
         [stage.ship.with]\nname = \"demo\"\nversion = \"${params.version}\"\nreviews = \"reviews\"\n[params]\nversion = \"v1\"\n",
    );
    let note = "### What\nA model.\n\n### Why\nA test.\n\n### How\nTrained.\n";
    ws.write("changes/next.md", note);
    ws.ok(&["run"]);
    assert!(
        ws.read("artifacts/demo/v1/MANIFEST.toml")
            .contains("status = \"unreviewed\"")
    );
    assert!(ws.read("artifacts/CHANGELOG.md").contains("- review: unreviewed"));
    ws.ok(&["verify"]);
    let required = ws.fabric(&["verify", "--require-review"]);
    assert_eq!(required.code, 1);
    assert!(required.stdout.contains("unreviewed"), "{}", required.stdout);

    // Every sample approved by a named person: the next release ships it.
    sheet["samples"][0]["verdict"] = "approve".into();
    sheet["samples"][0]["note"] = "calm and right".into();
    ws.write("sheet.json", &sheet.to_string());
    assert_eq!(import("sheet.json").code, 0);
    ws.write("changes/next.md", note);
    ws.ok(&["run", "-P", "version=v2"]);
    let manifest = ws.read("artifacts/demo/v2/MANIFEST.toml");
    assert!(
        manifest.contains("status = \"approved\"") && manifest.contains("Ada Lovelace"),
        "{manifest}"
    );
    let record: Value = serde_json::from_str(&ws.read("artifacts/demo/v2/REVIEW.json")).unwrap();
    assert_eq!(record["samples"].as_array().unwrap().len(), samples);
    assert!(
        ws.read("artifacts/CHANGELOG.md")
            .contains("approved by Ada Lovelace on 2026-12-02T12:00:00Z")
    );
    ws.ok(&["verify", "--require-review"]);

    // A changelog naming another reviewer fails verify.
    let changelog = ws.read("artifacts/CHANGELOG.md");
    ws.write(
        "artifacts/CHANGELOG.md",
        &changelog.replace("approved by Ada Lovelace", "approved by Grace Hopper"),
    );
    let forged = ws.fabric(&["verify"]);
    assert_eq!(forged.code, 1);
    assert!(
        forged
            .stdout
            .contains("FAIL changelog: demo v2: entry does not match the release: its review is not the manifest's: `"),
        "{}",
        forged.stdout
    );
    ws.write("artifacts/CHANGELOG.md", &changelog);

    // A record tampered with (a verdict flipped) fails verify.
    let tampered = ws
        .read("artifacts/demo/v2/REVIEW.json")
        .replacen("\"approve\"", "\"reject\"", 1);
    ws.write("artifacts/demo/v2/REVIEW.json", &tampered);
    let broken = ws.fabric(&["verify"]);
    assert_eq!(broken.code, 1);
    assert!(
        broken.stdout.contains("does not approve every sample"),
        "{}",
        broken.stdout
    );
}

#[test]
fn a_missing_onnx_runtime_gives_one_clear_message() {
    let ws = Workspace::new();
    small_dataset(&ws);
    let output = ws
        .command(&["train", "--dataset", "d/train.jsonl", "--output-dir", "m"])
        .env("ORT_DYLIB_PATH", ws.path("nowhere"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ORT_DYLIB_PATH is set to") && stderr.contains("fix or unset it"),
        "{stderr}"
    );
}

#[test]
fn any_train_step_graph_following_the_convention_can_be_trained() {
    use prost::Message;
    let ws = Workspace::new();
    small_dataset(&ws);
    // The built-in architecture, and its train-step graph saved as a file.
    assert_eq!(train(&ws, "m1", &["--save-train-graph", "step.onnx"]).code, 0);
    // The same graph, now given from outside, with m1's model as the
    // inference graph that receives the trained values.
    let external = train(
        &ws,
        "m2",
        &["--train-graph", "step.onnx", "--inference-graph", "m1/model.onnx"],
    );
    assert_eq!(external.code, 0, "{}", external.stderr);
    let params = |path: &str| -> Vec<(String, Vec<f32>)> {
        let model = fabric_onnx::proto::ModelProto::decode(std::fs::read(ws.path(path)).unwrap().as_slice()).unwrap();
        let mut params: Vec<(String, Vec<f32>)> = model
            .graph
            .unwrap()
            .initializer
            .into_iter()
            .filter(|t| t.name.starts_with("param."))
            .map(|t| (t.name, t.float_data))
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params
    };
    let (builtin, trained) = (params("m1/model.onnx"), params("m2/model.onnx"));
    assert_eq!(builtin.len(), trained.len());
    assert!(
        builtin == trained,
        "the same graph, seed and data train the same weights"
    );

    let broken = train(
        &ws,
        "m3",
        &["--train-graph", "m1/model.onnx", "--inference-graph", "m1/model.onnx"],
    );
    assert_eq!(broken.code, 1);
    assert!(
        broken.stderr.contains("has no initializer") || broken.stderr.contains("no `param.*` inputs"),
        "{}",
        broken.stderr
    );
}

/// An interrupt (Ctrl-C, here SIGINT) stops a training that runs in the
/// `fabric run` process between two batches: the run ends with 130 at once
/// and records nothing of the stage.
#[test]
fn an_interrupt_stops_a_training_running_in_process() {
    use std::io::{BufRead, Read};
    let ws = Workspace::new();
    small_dataset(&ws);
    ws.write(
        "Fabric.toml",
        "[stage.train]\nstep = \"onnx.train\"\ndeps = [\"d/train.jsonl\"]\nouts = [\"m/model.onnx\", \"m/training-log.json\", \"m/model-card.json\"]\n[stage.train.with]\nepochs = 100000000\nbatch_size = 1\n",
    );
    let mut run = ws.spawn(&["run"]);
    let mut stderr = std::io::BufReader::new(run.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("running train") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the run ended early");
    }
    // SAFETY: sending a signal to a child process.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            run.kill().unwrap();
            panic!("the training went on after the interrupt");
        }
        std::thread::yield_now();
    };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("failed train: interrupted"), "{rest}");
    assert!(!ws.path("m/model.onnx").exists());
    assert!(
        !ws.path("Fabric.lock").exists() || !ws.read("Fabric.lock").contains("[stage.train]"),
        "nothing of the stage is recorded"
    );
}
