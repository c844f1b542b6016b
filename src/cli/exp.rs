//! `fabric exp`: variants of the pipeline run side by side, compared.
//!
//! An experiment is a copy of the workspace's inputs under
//! `.fabric/exp/NAME/` (manifests, lock, keys and every stage's deps, as
//! `verify --reproduce` copies them) in which `fabric run -P …` runs as a
//! process of its own. The copy's store is the workspace's (a symlink when
//! the store lies inside the workspace), so stages the overrides do not
//! touch are restored, not rerun, and what an experiment makes is cached
//! for the workspace too. The workspace's files, outs and `Fabric.lock` are
//! never written; a failed or killed experiment leaves only its own
//! directory behind.
//!
//! Two file locks keep concurrent commands apart. `fabric exp run` holds
//! `NAME/running.lock` while it runs that experiment: a record that says
//! `running` without the lock held was interrupted (its `exp run` was
//! killed), and a second `exp run` or an `exp remove` of the same name is
//! refused rather than pulling the copy from under it. And every `exp run`
//! holds `.fabric/exp/.lock` shared while `fabric gc` holds it exclusive,
//! so gc never prunes what an experiment is storing.

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Globals, Session, UsageError, metrics, scratch};
use fabric_core::diagnostic::Diagnostic;
use fabric_core::digest::Digest;
use fabric_core::layout::Layout;
use fabric_core::lock::Lock;
use fabric_core::manifest;

/// Arguments of `fabric exp`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ExpCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ExpCommand {
    /// Run the pipeline with overrides in isolated copies, in parallel.
    Run(RunArgs),
    /// Print every experiment's params and metrics, best first.
    Show(ShowArgs),
    /// Name every param, dep hash and metric that differs between two experiments.
    Diff(DiffArgs),
    /// Bring an experiment's params and lock into the workspace, its outs restored from the store.
    Apply(ApplyArgs),
    /// Delete experiments (their copies; what they made stays in the store until `exp gc`).
    Remove(RemoveArgs),
    /// Drop from the store what neither Fabric.lock nor any experiment's lock names.
    Gc(GcArgs),
}

/// Arguments of `fabric exp run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Stages or pipelines to bring up to date in each experiment (default: all).
    targets: Vec<String>,
    /// Override a parameter in every experiment: `-P seed=7`.
    #[arg(short = 'P', value_name = "NAME=VALUE")]
    param: Vec<String>,
    /// One experiment per value: `--grid lr=0.01,0.1` (repeatable; every
    /// combination of the grids runs; `--grid hidden=[64,32],[128]` splits
    /// at the commas outside brackets).
    #[arg(long, value_name = "NAME=V1,V2,…")]
    grid: Vec<String>,
    /// The experiment's name (with a grid: NAME-1, NAME-2, …); default: `exp-`
    /// and a hash of its params.
    #[arg(long)]
    name: Option<String>,
    /// Experiments to run at once (they share the cores: each runs
    /// cores / N stages at a time).
    #[arg(short, long, value_name = "N", default_value_t = 1)]
    jobs: usize,
}

/// Arguments of `fabric exp show`.
#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// Order by this metric, highest first.
    #[arg(long, value_name = "METRIC")]
    sort: Option<String>,
    /// Show only this metric (repeatable; default: every metric).
    #[arg(long = "metric", value_name = "METRIC")]
    metrics: Vec<String>,
    /// With `--sort`: lowest first.
    #[arg(long, requires = "sort")]
    ascending: bool,
    /// Print JSON (a list of experiments).
    #[arg(long, conflicts_with = "md")]
    json: bool,
    /// Print a Markdown table.
    #[arg(long)]
    md: bool,
}

/// Arguments of `fabric exp diff`.
#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// The first experiment.
    a: String,
    /// The second experiment.
    b: String,
}

/// Arguments of `fabric exp apply`.
#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// The experiment.
    name: String,
}

/// Arguments of `fabric exp remove`.
#[derive(Debug, clap::Args)]
struct RemoveArgs {
    /// The experiments to delete.
    #[arg(required_unless_present = "all")]
    names: Vec<String>,
    /// Delete every experiment.
    #[arg(long, conflicts_with = "names")]
    all: bool,
}

/// Arguments of `fabric exp gc`.
#[derive(Debug, clap::Args)]
struct GcArgs {
    /// Count what would be removed; remove nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    #[command(flatten)]
    shared: super::gc::SharedStore,
}

/// What `.fabric/exp/NAME/experiment.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    /// The overrides, as given (`NAME=VALUE`).
    params: Vec<String>,
    targets: Vec<String>,
    /// `running`, `succeeded` or `failed` as written; `interrupted` when
    /// read as `running` while no `exp run` holds the experiment.
    state: String,
}

/// The file an experiment's record is kept in, inside its directory.
const RECORD: &str = "experiment.json";

/// The file `fabric exp run` holds locked, inside the experiment's
/// directory, while it runs the experiment.
const RUNNING: &str = "running.lock";

/// Locks the file at `path` (made if missing) for this process; `None`
/// when another process holds it.
fn try_hold(path: &Path) -> anyhow::Result<Option<File>> {
    let file = super::lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(error)) => Err(error.into()),
    }
}

/// Holds `.fabric/exp/.lock`: shared for `exp run` (experiments may store
/// objects), exclusive for `fabric gc`; waits, saying so, while the other
/// kind holds it.
pub(super) fn hold_experiments(layout: &Layout, exclusive: bool) -> anyhow::Result<File> {
    let dir = layout.experiments();
    std::fs::create_dir_all(&dir)?;
    let file = super::lock_file(&dir.join(".lock"))?;
    let taken = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match taken {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            match exclusive {
                true => eprintln!("waiting for running experiments (`fabric exp run`) to finish…"),
                false => eprintln!("waiting for `fabric gc` to finish…"),
            }
            if exclusive { file.lock()? } else { file.lock_shared()? }
        }
        Err(TryLockError::Error(error)) => return Err(error.into()),
    }
    Ok(file)
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        ExpCommand::Run(args) => run(globals, args),
        ExpCommand::Show(args) => show(globals, args),
        ExpCommand::Diff(args) => diff(globals, args),
        ExpCommand::Apply(args) => apply(globals, args),
        ExpCommand::Remove(args) => remove(globals, args),
        ExpCommand::Gc(args) => super::gc::execute(globals, super::gc::Args::locked_only(args.dry_run, args.shared)),
    }
}

fn run(globals: &Globals, args: RunArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let variants = variants(&args.param, &args.grid)?;
    let dir = session.workspace.layout().experiments();
    let mut experiments = Vec::new();
    for (number, params) in variants.iter().enumerate() {
        // Every variant is checked before any runs: a bad override or
        // target fails all.
        let variant = Session::open(globals, params)?;
        variant.select(&args.targets, false)?;
        let name = match &args.name {
            Some(name) if variants.len() == 1 => name.clone(),
            Some(name) => format!("{name}-{}", number + 1),
            None => {
                let what = [params.join("\n"), args.targets.join("\n")].join("\n\n");
                format!("exp-{}", &Digest::of(what.as_bytes()).short()[..8])
            }
        };
        if !manifest::interpolate::is_name(&name) {
            return Err(UsageError::from(
                Diagnostic::new(format!("`{name}` is not a valid experiment name"))
                    .hint("use letters, digits, `_` and `-`"),
            )
            .into());
        }
        if experiments.iter().any(|(e, _): &(Record, _)| e.name == name) {
            return Err(UsageError::from(
                Diagnostic::new(format!("the grid makes `{}` twice", params.join(" "))).hint("list each value once"),
            )
            .into());
        }
        let record = Record {
            name,
            params: params.clone(),
            targets: args.targets.clone(),
            state: "running".into(),
        };
        experiments.push((record, variant.workspace));
    }
    let _no_gc = hold_experiments(&session.workspace.layout(), false)?;
    let mut held = Vec::new();
    for (record, _) in &experiments {
        let home = dir.join(&record.name);
        std::fs::create_dir_all(&home)?;
        match try_hold(&home.join(RUNNING))? {
            Some(lock) => held.push(lock),
            None => {
                return Err(UsageError::from(
                    Diagnostic::new(format!(
                        "experiment `{}` is being run by another `fabric exp run`",
                        record.name
                    ))
                    .hint("wait for it to finish, or give this one another --name"),
                )
                .into());
            }
        }
    }
    // The cores are shared among the experiments running at once.
    let jobs = args.jobs.max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let stages_each = (cores / jobs).max(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;
    let outcomes: Vec<anyhow::Result<bool>> = pool.install(|| {
        use rayon::prelude::*;
        experiments
            .into_par_iter()
            .map(|(record, workspace)| run_one(&workspace, &dir, record, stages_each))
            .collect()
    });
    let mut failed = false;
    for outcome in outcomes {
        failed |= !outcome?;
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Every combination of the grids, each with the fixed overrides first.
fn variants(fixed: &[String], grids: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut variants = vec![fixed.to_vec()];
    for grid in grids {
        let Some((name, values)) = grid.split_once('=').filter(|(_, v)| !v.is_empty()) else {
            return Err(UsageError::from(
                Diagnostic::new(format!("`--grid {grid}` is not NAME=V1,V2,…")).hint("e.g. `--grid lr=0.01,0.1`"),
            )
            .into());
        };
        let values = split_values(values);
        variants = variants
            .into_iter()
            .flat_map(|chosen| {
                values.iter().map(move |value| {
                    let mut chosen = chosen.clone();
                    chosen.push(format!("{name}={value}"));
                    chosen
                })
            })
            .collect();
    }
    Ok(variants)
}

/// `V1,V2,…` split at the commas outside brackets (`[64,32],[128]` is two).
fn split_values(values: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (at, c) in values.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&values[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&values[start..]);
    parts
}

/// Makes the experiment's copy of `workspace` (loaded with its overrides,
/// so the deps they name are copied) and runs `fabric run -j JOBS` in it;
/// whether it succeeded (its output is in `run.log` beside its record).
fn run_one(workspace: &manifest::Workspace, dir: &Path, mut record: Record, jobs: usize) -> anyhow::Result<bool> {
    let home = dir.join(&record.name);
    // An earlier experiment of this name is replaced; the lock this run
    // holds stays.
    for entry in std::fs::read_dir(&home)? {
        let entry = entry?;
        if entry.file_name() == RUNNING {
            continue;
        }
        match entry.file_type()?.is_dir() {
            true => std::fs::remove_dir_all(entry.path())?,
            false => std::fs::remove_file(entry.path())?,
        }
    }
    let copy = home.join("workspace");
    std::fs::create_dir_all(&copy)?;
    write_record(&home, &record)?;
    scratch::copy_inputs(workspace, &copy)?;
    std::fs::create_dir_all(&workspace.store)?;
    let mut shared = vec![workspace.store.clone()];
    shared.extend(Layout::INSTALLED.iter().map(|dir| workspace.root.join(dir)));
    for dir in shared {
        // Only what lies inside the workspace needs a link; a store named
        // with `..` or absolute is reached by the same path from the copy.
        if let Ok(inside) = dir.strip_prefix(&workspace.root)
            && inside
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            && dir.exists()
        {
            let link = copy.join(inside);
            std::fs::create_dir_all(link.parent().unwrap_or(&copy))?;
            std::os::unix::fs::symlink(&dir, &link)?;
        }
    }
    let log = std::fs::File::create(home.join("run.log"))?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("-C")
        .arg(&copy)
        .args(["run", "--no-stream", "-j", &jobs.to_string()]);
    for param in &record.params {
        command.arg("-P").arg(param);
    }
    let status = command
        .args(&record.targets)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()?;
    record.state = if status.success() { "succeeded" } else { "failed" }.into();
    write_record(&home, &record)?;
    let params = if record.params.is_empty() {
        "no overrides".to_string()
    } else {
        record.params.join(" ")
    };
    match status.success() {
        true => eprintln!("{}: succeeded ({params})", record.name),
        false => eprintln!(
            "{}: failed ({params}); see {}",
            record.name,
            home.join("run.log").display()
        ),
    }
    Ok(status.success())
}

fn write_record(home: &Path, record: &Record) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(record)?;
    fabric_core::atomic::replace(&home.join(RECORD), |file| {
        std::io::Write::write_all(file, text.as_bytes())
    })?;
    Ok(())
}

/// One experiment as found: its record, the copy, its metrics flattened.
struct Found {
    record: Record,
    copy: PathBuf,
    metrics: BTreeMap<String, String>,
}

/// Every experiment under `.fabric/exp/`, by name.
fn found(globals: &Globals) -> anyhow::Result<Vec<Found>> {
    let dir = Layout::new(&globals.root()?).experiments();
    let mut all = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(all);
    };
    for entry in entries {
        let home = entry?.path();
        let Ok(text) = std::fs::read_to_string(home.join(RECORD)) else {
            continue;
        };
        let mut record: Record = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not an experiment record: {e}", home.join(RECORD).display()))?;
        if record.state == "running" && try_hold(&home.join(RUNNING))?.is_some() {
            record.state = "interrupted".into();
        }
        let copy = home.join("workspace");
        // Only a run that succeeded made its metrics: the copy of a failed
        // one may hold the workspace's.
        let metrics = if record.state == "succeeded" {
            experiment_metrics(&copy, &record.params)?
        } else {
            BTreeMap::new()
        };
        all.push(Found { record, copy, metrics });
    }
    all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    Ok(all)
}

/// The metrics an experiment's copy holds, flattened (`key` or, where two
/// metrics files share a key, `path:key`).
fn experiment_metrics(copy: &Path, params: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let overrides = super::parse_overrides(params, &[])?;
    let Ok(workspace) = manifest::load(copy, &overrides, &super::registry()) else {
        return Ok(BTreeMap::new());
    };
    let mut files = BTreeMap::new();
    for stage in &workspace.stages {
        for path in &stage.metrics {
            files.insert(path.to_string(), metrics::read(copy, stage, path)?);
        }
    }
    let rows = metrics::rows(&files);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, key, _) in &rows {
        *seen.entry(key).or_default() += 1;
    }
    let shared = |key: &str| seen[key] > 1;
    Ok(rows
        .iter()
        .map(|(path, key, value)| {
            let column = if shared(key) {
                format!("{path}:{key}")
            } else {
                key.clone()
            };
            (column, value.clone())
        })
        .collect())
}

fn show(globals: &Globals, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let mut all = found(globals)?;
    for metric in args.sort.iter().chain(&args.metrics) {
        if !all.iter().any(|e| e.metrics.contains_key(metric)) && !all.is_empty() {
            let columns: Vec<&str> = all.iter().flat_map(|e| e.metrics.keys().map(String::as_str)).collect();
            let mut diagnostic = Diagnostic::new(format!("no experiment has a metric `{metric}`"));
            if let Some(close) = fabric_core::diagnostic::did_you_mean(metric, columns.iter().copied()) {
                diagnostic = diagnostic.hint(format!("did you mean `{close}`?"));
            }
            return Err(UsageError::from(diagnostic).into());
        }
    }
    if !args.metrics.is_empty() {
        for e in &mut all {
            e.metrics
                .retain(|key, _| args.metrics.contains(key) || args.sort.as_ref() == Some(key));
        }
    }
    if let Some(metric) = &args.sort {
        let value = |e: &Found| e.metrics.get(metric).and_then(|v| v.parse::<f64>().ok());
        // Experiments without the metric go last, whichever the order.
        all.sort_by(|a, b| match (value(a), value(b)) {
            (Some(x), Some(y)) if args.ascending => x.total_cmp(&y),
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }
    if args.json {
        let list: Vec<Value> = all
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.record.name,
                    "state": e.record.state,
                    "params": e.record.params,
                    "metrics": e.metrics,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("No experiments: `fabric exp run -P NAME=VALUE` makes one.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut columns: Vec<String> = Vec::new();
    for e in &all {
        for key in e.metrics.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let mut table = vec![
        ["name", "state", "params"]
            .into_iter()
            .map(String::from)
            .chain(columns.iter().cloned())
            .collect::<Vec<_>>(),
    ];
    for e in &all {
        let mut row = vec![e.record.name.clone(), e.record.state.clone(), e.record.params.join(" ")];
        row.extend(
            columns
                .iter()
                .map(|c| e.metrics.get(c).cloned().unwrap_or_else(|| "-".into())),
        );
        table.push(row);
    }
    if args.md {
        for (i, row) in table.iter().enumerate() {
            println!("| {} |", row.join(" | "));
            if i == 0 {
                println!("|{}", " --- |".repeat(row.len()));
            }
        }
    } else {
        let widths: Vec<usize> = (0..table[0].len())
            .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
            .collect();
        for row in &table {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            println!("{}", cells.join("  ").trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The workspace copies of the experiments under `layout`'s workspace.
pub(super) fn copies(layout: &Layout) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(layout.experiments()) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| Some(entry.ok()?.path().join("workspace")))
        .filter(|copy| copy.is_dir())
        .collect()
}

/// The locks of the experiments under `layout`'s workspace (those that can
/// be read).
pub(super) fn locks(layout: &Layout) -> Vec<Lock> {
    copies(layout)
        .iter()
        .filter_map(|copy| Lock::load(&Layout::new(copy).lock_files()).ok())
        .collect()
}

fn remove(globals: &Globals, args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let all = found(globals)?;
    let doomed: Vec<&Found> = if args.all {
        all.iter().collect()
    } else {
        args.names
            .iter()
            .map(|name| pick(&all, name))
            .collect::<Result<_, _>>()?
    };
    let mut running = Vec::new();
    for experiment in doomed {
        let home = experiment.copy.parent().unwrap_or(&experiment.copy);
        // Held while deleting: no `exp run` of this name starts meanwhile.
        let Some(_held) = try_hold(&home.join(RUNNING))? else {
            running.push(experiment.record.name.as_str());
            continue;
        };
        std::fs::remove_dir_all(home)?;
        eprintln!("removed {}", experiment.record.name);
    }
    if !running.is_empty() {
        return Err(UsageError::from(
            Diagnostic::new(format!("kept {}: still running", running.join(", ")))
                .hint("remove an experiment after its `fabric exp run` ends"),
        )
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

/// The experiment called `name` among `all`.
fn pick<'a>(all: &'a [Found], name: &str) -> Result<&'a Found, UsageError> {
    all.iter().find(|e| e.record.name == name).ok_or_else(|| {
        let names = all.iter().map(|e| e.record.name.as_str());
        let mut diagnostic = Diagnostic::new(format!("no experiment is called `{name}`"));
        diagnostic = match fabric_core::diagnostic::did_you_mean(name, names) {
            Some(close) => diagnostic.hint(format!("did you mean `{close}`?")),
            None => diagnostic.hint("`fabric exp show` lists the experiments"),
        };
        UsageError::from(diagnostic)
    })
}

/// Writes the experiment's overrides into the manifests that declare the
/// params, makes its lock the workspace's, and checks the outs out.
fn apply(globals: &Globals, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let all = found(globals)?;
    let experiment = pick(&all, &args.name)?;
    if experiment.record.state != "succeeded" {
        return Err(UsageError::from(
            Diagnostic::new(format!(
                "experiment `{}` {}; only one that succeeded can be applied",
                args.name, experiment.record.state
            ))
            .hint("its run.log (beside its copy) says why"),
        )
        .into());
    }
    let lock = Layout::new(&experiment.copy).lock_files();
    let lock = Lock::load(&lock).map_err(UsageError::from)?;
    {
        let session = Session::open(globals, &[])?;
        let _guard = super::lock_workspace(&session.workspace.root, true)?;
        let params = &experiment.record.params;
        for file in manifest::edit::set_params(&session.workspace, params).map_err(UsageError::from)? {
            eprintln!("set {} in {}", params.join(" "), file.display());
        }
        lock.compact(&session.workspace.layout().lock_files())?;
    }
    eprintln!("Fabric.lock is {}'s; checking its outs out", args.name);
    super::checkout::execute(globals, super::checkout::Args::of(Vec::new()))
}

fn diff(globals: &Globals, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let all = found(globals)?;
    let (a, b) = (pick(&all, &args.a)?, pick(&all, &args.b)?);
    let mut lines = Vec::new();
    let params = |e: &Found| -> BTreeMap<String, String> {
        e.record
            .params
            .iter()
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    differing("param", &params(a), &params(b), &mut lines);
    let deps = |e: &Found| -> anyhow::Result<BTreeMap<String, String>> {
        let lock = Lock::load(&Layout::new(&e.copy).lock_files()).map_err(UsageError::from)?;
        Ok(lock
            .stage
            .iter()
            .flat_map(|(stage, entry)| {
                entry
                    .inputs
                    .deps
                    .iter()
                    .map(move |(path, hash)| (format!("{stage}: {path}"), hash.clone()))
            })
            .collect())
    };
    differing("dep", &deps(a)?, &deps(b)?, &mut lines);
    differing("metric", &a.metrics, &b.metrics, &mut lines);
    if lines.is_empty() {
        println!("{} and {} do not differ", a.record.name, b.record.name);
    } else {
        println!("{:<8}{:<40}{:<24}{}", "", "", a.record.name, b.record.name);
        for line in lines {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A line for every key whose value differs between `a` and `b` (`-` where
/// one has none).
fn differing(kind: &str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, lines: &mut Vec<String>) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        if x != y {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "-".into());
            lines.push(format!("{kind:<8}{key:<40}{:<24}{}", show(x), show(y)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_is_every_combination_of_its_values() {
        let grid = variants(
            &["seed=1".into()],
            &["lr=0.1,0.2".into(), "hidden=[64,32],[128]".into()],
        )
        .unwrap();
        assert_eq!(
            grid,
            [
                ["seed=1", "lr=0.1", "hidden=[64,32]"],
                ["seed=1", "lr=0.1", "hidden=[128]"],
                ["seed=1", "lr=0.2", "hidden=[64,32]"],
                ["seed=1", "lr=0.2", "hidden=[128]"],
            ]
        );
        assert!(variants(&[], &["lr".into()]).is_err());
        assert!(variants(&[], &["lr=".into()]).is_err());
    }
}
