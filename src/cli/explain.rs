//! `fabric explain STAGE`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use super::{Globals, Session, UsageError};
use fabric_core::diagnostic::{Diagnostic, did_you_mean};
use fabric_core::fingerprint::{ActionKey, Inputs};
use fabric_core::run::{Decision, Force, freshness};

/// Arguments of `fabric explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stage to explain.
    stage: String,
    /// Override a parameter: `-P seed=7`.
    #[arg(short = 'P', value_name = "NAME=VALUE")]
    param: Vec<String>,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &args.param)?;
    let Some(stage) = session.workspace.stage(&args.stage) else {
        let names = session.workspace.stages.iter().map(|s| s.name.as_str());
        let mut diagnostic = Diagnostic::new(format!("no stage is called `{}`", args.stage));
        if let Some(close) = did_you_mean(&args.stage, names) {
            diagnostic = diagnostic.hint(format!("did you mean `{close}`?"));
        }
        return Err(UsageError::from(diagnostic).into());
    };
    let planner = session.planner()?;
    let hasher = planner.hasher();
    let index = session.index(&stage.name).expect("the stage was just found");
    let verdict = planner.decide(index, &Force::Nothing, Vec::new(), &hasher)?;
    // A frozen stage is not decided; its components are shown all the same.
    let current = match verdict.inputs {
        Some(inputs) => inputs,
        None => freshness::inputs(&session.workspace.root, &session.registry, &hasher, stage)?,
    };
    let entry = planner.lock_entry(&stage.name);
    let entry = entry.as_deref();
    session.cache.save()?;

    println!("stage `{}`", stage.name);
    println!(
        "  fingerprint  recorded {}",
        entry.map_or("(never ran)".into(), |e| e.fingerprint.to_string())
    );
    println!("               current  {}", current.fingerprint());
    println!();
    let recorded = entry.map(|e| rows(&e.inputs)).unwrap_or_default();
    let now = rows(&current);
    let mut names: Vec<&String> = recorded.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    println!("  {:<width$}  {:<COLUMN$}  current", "component", "recorded");
    for name in names {
        let old = recorded.get(name).map_or("-", String::as_str);
        let new = now.get(name).map_or("-", String::as_str);
        let mark = if old == new { ' ' } else { '*' };
        if fits(old) && fits(new) {
            println!("{mark} {name:<width$}  {old:<COLUMN$}  {new}");
        } else {
            // A long or multi-line value gets lines of its own rather than
            // pushing the current column off the screen.
            println!("{mark} {name}");
            println!("      recorded  {}", indent(old));
            let new = if old == new { "(same)" } else { new };
            println!("      current   {}", indent(new));
        }
    }
    println!();
    match verdict.decision {
        Decision::Frozen => println!("Frozen: `fabric run` never runs it (`frozen = true`)."),
        Decision::UpToDate => {
            println!("Up to date: every component matches Fabric.lock and the outs are as recorded.")
        }
        Decision::Restore | Decision::Run => {
            println!("Stale because:");
            for reason in verdict.reasons {
                println!("  - {reason}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The fingerprint components as named rows.
fn rows(inputs: &Inputs) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    match &inputs.action {
        ActionKey::Cmd { cmd, wdir } => {
            rows.insert("cmd".into(), cmd.clone());
            rows.insert("wdir".into(), if wdir.is_empty() { ".".into() } else { wdir.clone() });
        }
        ActionKey::Step { step, version } => {
            rows.insert("step".into(), format!("{step} v{version}"));
        }
    }
    if !inputs.with.is_empty() {
        rows.insert("with".into(), inputs.with.clone());
    }
    for (name, value) in &inputs.params {
        rows.insert(format!("param {name}"), value.clone());
    }
    for (path, hash) in &inputs.deps {
        rows.insert(format!("dep {path}"), short(hash));
    }
    for (name, value) in &inputs.env {
        rows.insert(format!("env {name}"), value.clone());
    }
    rows.insert("outs".into(), inputs.outs.join(", "));
    if !inputs.platform.is_empty() {
        rows.insert("platform".into(), inputs.platform.clone());
    }
    for (name, value) in &inputs.facts {
        rows.insert(format!("fact {name}"), value.clone());
    }
    rows
}

/// The width of the recorded column.
const COLUMN: usize = 40;

/// Whether a value fits the recorded column on one line.
fn fits(value: &str) -> bool {
    value.chars().count() <= COLUMN && !value.contains('\n')
}

/// A multi-line value with its continuation lines under its first.
fn indent(value: &str) -> String {
    value.trim_end().replace('\n', "\n                ")
}

fn short(hash: &str) -> String {
    hash.chars().take(16).collect()
}
