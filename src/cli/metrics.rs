//! `fabric metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};

use serde_json::Value;

use super::{Globals, Session};
use fabric_core::lock::Lock;
use fabric_core::manifest::Stage;
use fabric_core::paths::RelPath;

/// Arguments of `fabric metrics`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the metrics as one JSON object (file → values).
    #[arg(long)]
    json: bool,
    /// Compare with the metrics at this git revision: the metrics file as
    /// committed there, or else the one Fabric.lock committed there records
    /// (read from the store, which holds it if this clone ran that version).
    #[arg(long, value_name = "REV")]
    diff: Option<String>,
}

/// One row: file, metric, value.
type Row = (String, String, String);

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let root = &session.workspace.root;
    let mut all = BTreeMap::new();
    let mut before = BTreeMap::new();
    let old_lock = args.diff.as_deref().and_then(|revision| committed_lock(root, revision));
    for stage in &session.workspace.stages {
        for path in &stage.metrics {
            all.insert(path.to_string(), read(root, stage, path)?);
            if let Some(revision) = &args.diff {
                let recorded = || {
                    let record = old_lock.as_ref()?.stage.get(&stage.name)?.outs.get(path.as_str())?;
                    session.store.read_file(record)
                };
                let old = committed(root, revision, path.as_str())
                    .or_else(recorded)
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .unwrap_or(Value::String(format!(
                        "(not in {revision}: commit it, or run that version here)"
                    )));
                before.insert(path.to_string(), old);
            }
        }
    }
    if args.json {
        let output = match &args.diff {
            None => serde_json::to_value(&all)?,
            Some(revision) => serde_json::json!({ "current": all, revision.as_str(): before }),
        };
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("No stage declares `metrics`.");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = rows(&all);
    let width_path = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
    let width_key = rows.iter().map(|r| r.1.len()).max().unwrap_or(6).max(6);
    match &args.diff {
        None => {
            println!("{:<width_path$}  {:<width_key$}  value", "path", "metric");
            for (path, key, value) in rows {
                println!("{path:<width_path$}  {key:<width_key$}  {value}");
            }
        }
        Some(revision) => {
            let old: BTreeMap<(String, String), String> =
                self::rows(&before).into_iter().map(|(p, k, v)| ((p, k), v)).collect();
            let width_old = old.values().map(String::len).max().unwrap_or(0).max(revision.len());
            println!(
                "{:<width_path$}  {:<width_key$}  {revision:<width_old$}  current  change",
                "path", "metric"
            );
            for (path, key, value) in rows {
                // A file missing at the revision has one note for all its metrics.
                let was = old
                    .get(&(path.clone(), key.clone()))
                    .or_else(|| old.get(&(path.clone(), String::new())))
                    .cloned()
                    .unwrap_or_else(|| "-".into());
                let change = match (was.parse::<f64>(), value.parse::<f64>()) {
                    (Ok(a), Ok(b)) if a != b => {
                        let change = rounded(b - a);
                        if change.starts_with('-') {
                            change
                        } else {
                            format!("+{change}")
                        }
                    }
                    _ => String::new(),
                };
                println!("{path:<width_path$}  {key:<width_key$}  {was:<width_old$}  {value}  {change}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Metrics file `path` of `stage` in the workspace at `root`, parsed (a
/// note in its place when it is missing).
pub(super) fn read(root: &Path, stage: &Stage, path: &RelPath) -> anyhow::Result<Value> {
    match std::fs::read_to_string(path.under(root)) {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .map_err(|e| anyhow::anyhow!("metrics file {path} of stage `{}` is not JSON: {e}", stage.name)),
        Err(_) => Ok(Value::String("(missing: run the stage)".into())),
    }
}

/// A workspace file as committed at `revision` (None when git has no such file).
fn committed(root: &Path, revision: &str, path: &str) -> Option<Vec<u8>> {
    let output = Command::new("git")
        .args(["show", &format!("{revision}:./{path}")])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    output.status.success().then_some(output.stdout)
}

/// Fabric.lock as committed at `revision`, if it is there and readable.
fn committed_lock(root: &Path, revision: &str) -> Option<Lock> {
    let text = String::from_utf8(committed(root, revision, "Fabric.lock")?).ok()?;
    Lock::parse(Path::new("Fabric.lock"), &text).ok()
}

/// One row (file, metric, value) per leaf of each metrics file.
pub(super) fn rows(files: &BTreeMap<String, Value>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (path, value) in files {
        flatten(path, "", value, &mut rows);
    }
    rows
}

/// One row per leaf value, keys joined with `.`.
fn flatten(path: &str, prefix: &str, value: &Value, rows: &mut Vec<Row>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(path, &key, inner, rows);
            }
        }
        Value::String(text) => rows.push((path.into(), prefix.into(), text.clone())),
        Value::Number(number) if number.is_f64() => {
            rows.push((path.into(), prefix.into(), rounded(number.as_f64().unwrap_or(0.0))))
        }
        other => rows.push((path.into(), prefix.into(), other.to_string())),
    }
}

/// A float for reading: four decimals at most, trailing zeros dropped.
fn rounded(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.into() }
}
