//! `fabric metrics`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::Value;

use super::{Globals, Session};

/// Arguments of `fabric metrics`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the metrics as one JSON object (file → values).
    #[arg(long)]
    json: bool,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let mut all = BTreeMap::new();
    for stage in &session.workspace.stages {
        for path in &stage.metrics {
            let file = path.under(&session.workspace.root);
            let value = match std::fs::read_to_string(&file) {
                Ok(text) => serde_json::from_str::<Value>(&text)
                    .map_err(|e| anyhow::anyhow!("metrics file {path} of stage `{}` is not JSON: {e}", stage.name))?,
                Err(_) => Value::String("(missing: run the stage)".into()),
            };
            all.insert(path.to_string(), value);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("No stage declares `metrics`.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for (path, value) in &all {
        flatten(path, "", value, &mut rows);
    }
    let width_path = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
    let width_key = rows.iter().map(|r| r.1.len()).max().unwrap_or(6).max(6);
    println!("{:<width_path$}  {:<width_key$}  value", "path", "metric");
    for (path, key, value) in rows {
        println!("{path:<width_path$}  {key:<width_key$}  {value}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per leaf value, keys joined with `.`.
fn flatten(path: &str, prefix: &str, value: &Value, rows: &mut Vec<(String, String, String)>) {
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
        other => rows.push((path.into(), prefix.into(), other.to_string())),
    }
}
