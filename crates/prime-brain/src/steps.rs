//! The Prime Brain data steps: `prime.simulate`, `prime.sanitize`, `prime.dataset`.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::dataset::{self, DatasetOptions, DatasetPaths, InstructionPaths};
use crate::pseudonym::PseudonymKey;
use crate::sanitize;
use crate::simulate::{self, SimulateOptions};
use fabric_core::steps::{Step, StepContext, parse_with};

fn expect_outs(context: &StepContext, n: usize, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(context.outs.len() == n, "declare exactly {n} outs: {what}");
    Ok(())
}

/// Generates simulated raw snapshots (one directory out).
pub struct Simulate;

impl Step for Simulate {
    fn name(&self) -> &'static str {
        "prime.simulate"
    }
    fn version(&self) -> u32 {
        7
    }
    fn summary(&self) -> &'static str {
        "simulated Studio sessions as raw snapshots; with: seed, users, group, sessions_per_user, snapshots_per_session, bad_fraction"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse_with::<SimulateOptions>(with)?.check().map_err(|e| e.to_string())
    }
    fn run(&self, context: &StepContext) -> anyhow::Result<()> {
        expect_outs(context, 1, "the raw snapshot directory")?;
        let options: SimulateOptions = parse_with(context.with).map_err(anyhow::Error::msg)?;
        simulate::simulate(&options, &context.outs[0])?;
        Ok(())
    }
}

/// `with` of `prime.sanitize`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SanitizeWith {
    #[serde(default = "schema_v1")]
    schema: String,
}

fn schema_v1() -> String {
    crate::schema::SCHEMA_VERSION.into()
}

/// Validates, normalizes and redacts raw snapshots.
pub struct Sanitize;

impl Step for Sanitize {
    fn name(&self) -> &'static str {
        "prime.sanitize"
    }
    fn version(&self) -> u32 {
        6
    }
    fn summary(&self) -> &'static str {
        "raw snapshots (dep 1) → per-session JSONL (out 1) and a report (out 2); with: schema = \"v1\""
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        let parsed: SanitizeWith = parse_with(with)?;
        if parsed.schema != crate::schema::SCHEMA_VERSION {
            return Err(format!("unknown schema `{}`; this fabric knows `v1`", parsed.schema));
        }
        Ok(())
    }
    /// The vocabulary the free text is rebuilt from, and the pseudonym key
    /// (by its one-way id): changing either reruns sanitize.
    fn facts(&self, root: &std::path::Path) -> std::collections::BTreeMap<String, String> {
        let key = PseudonymKey::for_workspace(root).map_or_else(|e| format!("unavailable: {e}"), |k| k.id());
        std::collections::BTreeMap::from([
            ("lexicon".to_string(), crate::lexicon::fingerprint()),
            ("pseudonym key".to_string(), key),
        ])
    }
    fn run(&self, context: &StepContext) -> anyhow::Result<()> {
        expect_outs(context, 2, "the sanitized directory and the report file")?;
        anyhow::ensure!(
            context.deps.len() == 1,
            "declare exactly one dep: the raw snapshot directory"
        );
        let key = PseudonymKey::for_workspace(context.root)?;
        let report = sanitize::sanitize(&context.deps[0], &context.outs[0], Some(&context.memo(self)), &key)?;
        std::fs::write(&context.outs[1], serde_json::to_string_pretty(&report)? + "\n")?;
        Ok(())
    }
}

/// Builds windowed training examples and the dataset card.
pub struct Dataset;

impl Step for Dataset {
    fn name(&self) -> &'static str {
        "prime.dataset"
    }
    fn version(&self) -> u32 {
        11
    }
    fn summary(&self) -> &'static str {
        "sanitized sessions (dep 1) [and held-out users' sanitized sessions, all in the test split (dep 2)] → train JSONL, test JSONL, card, [instruction-tuning train and test JSONL, its card] (outs 1–3 or 1–6); with: window_size, test_fraction, seed, augment_mode"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse_with::<DatasetOptions>(with)?.check().map_err(|e| e.to_string())
    }
    fn run(&self, context: &StepContext) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(context.outs.len(), 3 | 6),
            "declare 3 outs (the train file, the test file, the card) and optionally 3 more: the instruction-tuning set's train and test conversations and its card"
        );
        anyhow::ensure!(
            matches!(context.deps.len(), 1 | 2),
            "declare one dep, the sanitized directory, and optionally a second: the held-out users' sanitized directory"
        );
        let options: DatasetOptions = parse_with(context.with).map_err(anyhow::Error::msg)?;
        let name = |i: usize| {
            std::path::Path::new(&context.declared[i])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let paths = DatasetPaths {
            train: context.outs[0].clone(),
            test: context.outs[1].clone(),
            card: context.outs[2].clone(),
            names: (name(0), name(1)),
            sft: (context.outs.len() == 6).then(|| InstructionPaths {
                data: context.outs[3].clone(),
                test: context.outs[4].clone(),
                card: context.outs[5].clone(),
            }),
        };
        dataset::build(
            &context.deps[0],
            context.deps.get(1).map(PathBuf::as_path),
            &options,
            &paths,
            Some(&context.memo(self)),
        )?;
        Ok(())
    }
}
