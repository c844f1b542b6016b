//! The ONNX nodes: training, evaluation, the exported model.

use std::process::Command;

use serde_json::Value;

use super::{Workspace, ort_dir};

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
fn base_model_warm_starts_from_a_released_model_and_refuses_hosted_models() {
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
    let hosted = train(&ws, "m5", &["--base-model", "gemini-2.5-flash"]);
    assert_eq!(hosted.code, 1);
    assert!(
        hosted
            .stderr
            .contains("hosted models (such as gemini-2.5-flash) cannot be tuned inside the sealed Fabric"),
        "{}",
        hosted.stderr
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
        prime_fabric::onnx::runtime::session(Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))), &bytes, 1)
            .unwrap();
    let input = prime_fabric::onnx::tensors::f32_value(&[features.len(), width], flat).unwrap();
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
fn evaluation_gates_fail_a_regressed_model_and_external_predictions_face_the_same_audit() {
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
        strict.stderr.contains("regression gates failed: min_command_accuracy"),
        "{}",
        strict.stderr
    );
    assert!(ws.read("r/report.md").contains("- min_command_accuracy: FAILED"));

    // External predictions: shouting, numbers, and intrusive commands in passive mode.
    let examples: Vec<Value> = ws.jsonl("d/train-test.jsonl");
    let lines: String = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let prediction = if i % 2 == 0 {
                serde_json::json!({"response": "TURN IT UP! CPU at 93%", "command": {"type": "transport.stop"}})
            } else {
                serde_json::json!({"response": "All calm; the pulse is steady.", "command": {"type": "none"}, "channel": e["guidance"]["channel"]})
            };
            format!("{prediction}\n")
        })
        .collect();
    ws.write("predictions.jsonl", &lines);
    let external = ws.fabric(&[
        "evaluate",
        "--predictions",
        "predictions.jsonl",
        "--test-dataset",
        "d/train-test.jsonl",
        "--output-report",
        "x/report.md",
    ]);
    assert_eq!(external.code, 1);
    let metrics: Value = serde_json::from_str(&ws.read("x/metrics.json")).unwrap();
    let tone = metrics["model"]["tone_audit"].as_f64().unwrap();
    assert!((tone - 0.5).abs() < 0.01, "half the texts shout: {tone}");
    let passive = examples
        .iter()
        .enumerate()
        .filter(|(i, e)| i % 2 == 0 && e["mode"] == "passive")
        .count();
    assert!(passive > 0);
    assert!(metrics["model"]["mode_compliance_by_mode"]["passive"].as_f64().unwrap() < 1.0);
    assert!(
        ws.read("x/report.md")
            .contains("| metric | external predictions | seed rules | majority |")
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
        let model =
            prime_fabric::onnx::proto::ModelProto::decode(std::fs::read(ws.path(path)).unwrap().as_slice()).unwrap();
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
