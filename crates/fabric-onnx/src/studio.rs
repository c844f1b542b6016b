//! The model as the Studio runs it: a TypeScript module with the features
//! of a window, the model's input and output names and the decoding of its
//! outputs into a DAWCommand and calm guidance, written beside `model.onnx`
//! together with test vectors the module must reproduce.
//!
//! The module's logic is `studio.ts` (one hand-written mirror of
//! [`prime_brain::dataset::features`] and [`super::eval::decode`]); every
//! constant it needs — the orders of modes, channels, categories,
//! severities, commands and outcomes, the heads' classes, the phrases, the
//! feature layout — is generated here from Fabric's own definitions. The
//! test vectors (windows, Fabric's features, the model's probabilities and
//! Fabric's decision) are what keeps the two from drifting: a test runs the
//! module in a real browser with onnxruntime-web against them.

use std::path::Path;

use serde_json::{Value, json};

use super::eval::decode;
use super::mlp::{ARGUMENTS, INPUT, heads};
use super::runtime;
use prime_brain::dataset::{feature_layout, features};
use prime_brain::schema::{self, AlsChannel, BloomOutcome, FlagCategory, Intensity, Mode, Severity, Snapshot};
use prime_brain::tone::phrase;
use prime_brain::vocabulary::{ArgValues, COMMANDS};

/// The hand-written part of the module.
const TEMPLATE: &str = include_str!("studio.ts");

/// The TypeScript module for the Studio.
pub fn typescript_module() -> String {
    let names = |items: Vec<&str>| serde_json::to_string(&items).expect("strings serialize");
    let commands: Vec<Value> = COMMANDS
        .iter()
        .map(|c| json!({"type": c.kind, "needsTarget": c.needs_target, "args": c.args.iter().map(|a| a.name).collect::<Vec<_>>()}))
        .collect();
    let arguments: serde_json::Map<String, Value> = ARGUMENTS
        .iter()
        .map(|spec| {
            let shape = match spec.values {
                ArgValues::Integers(_) => json!({"kind": "integers"}),
                ArgValues::Words(_) => json!({"kind": "words"}),
                ArgValues::Range { min, max } => json!({"kind": "range", "min": min, "max": max}),
            };
            (spec.name.to_string(), shape)
        })
        .collect();
    let heads: serde_json::Map<String, Value> = heads()
        .into_iter()
        .map(|h| (h.name.to_string(), json!(h.classes)))
        .collect();
    let mut phrases = serde_json::Map::new();
    for channel in AlsChannel::ALL {
        let by_intensity: serde_json::Map<String, Value> = Intensity::ALL
            .iter()
            .map(|i| (i.name().to_string(), json!(phrase(channel, *i))))
            .collect();
        phrases.insert(channel.name().to_string(), Value::Object(by_intensity));
    }
    let constants = format!(
        "/** The model's input: a [batch, {width}] float32 tensor of features. */\n\
         export const INPUT = {input};\n\
         export const MODES = {modes} as const;\n\
         export const ALS_CHANNELS = {channels} as const;\n\
         export const FLAG_CATEGORIES = {categories} as const;\n\
         export const SEVERITIES = {severities} as const;\n\
         export const COMMANDS: {{ type: string; needsTarget: boolean; args: string[] }}[] = {commands};\n\
         /** How each argument head's classes map to values. */\n\
         export const ARGUMENTS: Record<string, {{ kind: string; min?: number; max?: number }}> = {arguments};\n\
         export const BLOOM_OUTCOMES = {outcomes} as const;\n\
         /** The list limits sanitize keeps to (the newest items). */\n\
         export const LIMITS = {limits};\n\
         /** Each head's classes, in the order of its `<head>_probs` output. */\n\
         export const HEADS: Record<string, string[]> = {heads};\n\
         /** The calm phrase for each guidance channel and intensity. */\n\
         export const PHRASES: Record<string, Record<string, string>> = {phrases};\n\
         /** The name of each feature, in input order. */\n\
         export const FEATURE_LAYOUT = {layout};",
        width = feature_layout().len(),
        input = json!(INPUT),
        modes = names(Mode::ALL.iter().map(|m| m.name()).collect()),
        channels = names(AlsChannel::ALL.iter().map(|c| c.name()).collect()),
        categories = names(FlagCategory::ALL.iter().map(|c| c.name()).collect()),
        severities = names(Severity::ALL.iter().map(|s| s.name()).collect()),
        commands = json!(commands),
        outcomes = names(BloomOutcome::ALL.iter().map(|o| o.name()).collect()),
        limits = json!({
            "recentActions": schema::MAX_RECENT_ACTIONS,
            "bloomTrace": schema::MAX_BLOOM_TRACE,
            "issuedCommands": schema::MAX_ISSUED_COMMANDS,
        }),
        heads = Value::Object(heads),
        arguments = Value::Object(arguments),
        phrases = Value::Object(phrases),
        layout = json!(feature_layout()),
    );
    TEMPLATE.replace("/* CONSTANTS */", &constants)
}

/// Test vectors: `count` windows of `window_size` snapshots spread over the
/// sanitized sessions in `sessions` (ids left out), each with Fabric's
/// features, the model's probabilities per head and Fabric's decision.
pub fn test_vectors(
    workspace: Option<&Path>,
    model: &[u8],
    sessions: &Path,
    window_size: usize,
    count: usize,
) -> anyhow::Result<Value> {
    anyhow::ensure!(
        window_size > 0 && count > 0,
        "window_size and examples must be at least 1"
    );
    let mut files: Vec<_> = std::fs::read_dir(sessions)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut windows: Vec<Vec<Snapshot>> = Vec::new();
    for file in files {
        let snapshots: Vec<Snapshot> = std::fs::read_to_string(&file)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        windows.extend(snapshots.windows(window_size).map(<[Snapshot]>::to_vec));
    }
    anyhow::ensure!(!windows.is_empty(), "no session holds {window_size} snapshots");
    let heads = heads();
    let mut session = runtime::session(workspace, model, 1)?;
    // Every window's features, probabilities and decision (in batches).
    let mut scored = Vec::with_capacity(windows.len());
    for chunk in windows.chunks(1024) {
        let inputs: Vec<Vec<f32>> = chunk.iter().map(|w| features(w)).collect();
        let width = inputs[0].len();
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let rows = super::eval::head_probabilities(&mut session, &heads, flat, chunk.len(), width)?;
        for (input, probs) in inputs.into_iter().zip(rows) {
            let slices: Vec<&[f32]> = probs.iter().map(Vec::as_slice).collect();
            let decision = decode(&heads, &slices, &input);
            scored.push((input, probs, decision));
        }
    }
    // One window for each distinct decision first (so every decoding path
    // is exercised), then windows spread evenly over the rest.
    let mut chosen: Vec<usize> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (index, (_, _, decision)) in scored.iter().enumerate() {
        let key = (
            serde_json::to_string(&decision.command).expect("a command serializes"),
            decision.channel,
            decision.intensity,
        );
        if chosen.len() < count && seen.insert(key) {
            chosen.push(index);
        }
    }
    let step = (scored.len() / count).max(1);
    for index in (0..scored.len()).step_by(step) {
        if chosen.len() >= count {
            break;
        }
        if !chosen.contains(&index) {
            chosen.push(index);
        }
    }
    chosen.sort_unstable();
    let mut vectors = Vec::with_capacity(chosen.len());
    for index in chosen {
        let (input, probs, decision) = &scored[index];
        let command = json!(decision.command);
        let named: serde_json::Map<String, Value> = heads
            .iter()
            .zip(probs)
            .map(|(h, p)| (format!("{}_probs", h.name), json!(p)))
            .collect();
        // Without the pseudonymous ids: they are not features, and they
        // depend on the workspace's key (the vectors must not).
        let window: Vec<Value> = windows[index]
            .iter()
            .map(|snapshot| {
                let mut value = json!(snapshot);
                if let Some(object) = value.as_object_mut() {
                    object.remove("snapshotId");
                    object.remove("sessionId");
                }
                value
            })
            .collect();
        vectors.push(json!({
            "window": window,
            "features": input,
            "probs": named,
            "decision": {
                "command": command,
                "top3": decision.top3,
                "guidance": {
                    "channel": decision.channel.map(AlsChannel::name),
                    "intensity": decision.intensity.map(Intensity::name),
                    "text": decision.response,
                },
            },
        }));
    }
    Ok(json!({"input": INPUT, "windowSize": window_size, "vectors": vectors}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_carries_fabrics_constants_in_fabrics_order() {
        let module = typescript_module();
        assert!(!module.contains("/* CONSTANTS */"));
        assert!(module.contains(r#"export const MODES = ["passive","active","learning","optimizing"] as const;"#));
        let layout = serde_json::to_string(&feature_layout()).unwrap();
        assert!(module.contains(&format!("export const FEATURE_LAYOUT = {layout};")));
        assert!(module.contains(&format!("[batch, {}]", feature_layout().len())));
    }
}
