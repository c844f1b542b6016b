//! `fabric verify`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use super::{Globals, Session, UsageError};
use fabric_core::diagnostic::Diagnostic;
use fabric_core::graph::StageGraph;
use fabric_core::hash::Hasher;
use fabric_core::layout::Layout;
use fabric_core::manifest;
use fabric_core::report::plain::PlainReporter;
use fabric_core::run::executor::LocalExecutor;
use fabric_core::run::{Decision, Force, Planner, Runner};
use fabric_core::stat_cache::StatCache;
use fabric_core::store::Store;
use fabric_core::verify::{self, Failure};

/// Arguments of `fabric verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also check that each out Fabric.lock records is in the workspace or the store.
    #[arg(long)]
    outs: bool,
    /// Also fail if any stage is stale (`fabric status --check`).
    #[arg(long)]
    fresh: bool,
    /// Re-run these stages in a scratch copy, ignoring every cache, and
    /// require byte-identical outs.
    #[arg(long, value_name = "STAGE", num_args = 1..)]
    reproduce: Vec<String>,
    /// Also fail unless the newest release of each name records a person's
    /// approval of its outputs (for production CI).
    #[arg(long)]
    require_review: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let root = session.workspace.root.clone();
    let mut failures: Vec<Failure> = Vec::new();
    let (release_count, release_failures) = verify::releases(&root);
    failures.extend(release_failures);
    failures.extend(verify::changelog(&root, super::headlines().as_ref()));
    failures.extend(verify::reviews(&root, args.require_review));
    let lock = match session.workspace.load_lock() {
        Ok(lock) => Some(lock),
        Err(diagnostic) => {
            failures.push(Failure {
                check: "lock",
                subject: "Fabric.lock".into(),
                message: diagnostic.to_string(),
            });
            None
        }
    };
    if let Some(lock) = &lock {
        let hasher = Hasher::new(&root, &session.cache);
        if args.outs {
            failures.extend(verify::lock_outs(lock, &session.store, &hasher));
        }
        if args.fresh {
            let all = (0..session.workspace.stages.len()).collect();
            for planned in session.planner()?.plan(&all, &Force::Nothing)? {
                if matches!(planned.decision, Decision::Run | Decision::Restore) {
                    let reasons: Vec<String> = planned.reasons.iter().map(ToString::to_string).collect();
                    failures.push(Failure {
                        check: "fresh",
                        subject: session.workspace.stages[planned.stage].name.clone(),
                        message: format!("stale: {}", reasons.join("; ")),
                    });
                }
            }
        }
    }
    for name in &args.reproduce {
        if session.workspace.stage(name).is_none() {
            return Err(UsageError::from(Diagnostic::new(format!("--reproduce {name}: no such stage"))).into());
        }
    }
    if !args.reproduce.is_empty() {
        failures.extend(reproduce(&session, &args.reproduce)?);
    }
    session.cache.save()?;

    if args.json {
        let result = serde_json::json!({"ok": failures.is_empty(), "releases": release_count, "failures": failures});
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        for f in &failures {
            println!("FAIL {}: {}: {}", f.check, f.subject, f.message);
        }
        if failures.is_empty() {
            println!(
                "verify: all checks passed ({release_count} release{}, changelog, lock{}{}{})",
                if release_count == 1 { "" } else { "s" },
                if args.outs { ", outs" } else { "" },
                if args.fresh { ", fresh" } else { "" },
                if args.reproduce.is_empty() {
                    String::new()
                } else {
                    format!(", reproduced {}", args.reproduce.join(" "))
                }
            );
        } else {
            println!(
                "verify: {} check{} failed",
                failures.len(),
                if failures.len() == 1 { "" } else { "s" }
            );
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Copies what the workspace's stages read (manifests, the lock, every dep)
/// into a scratch directory, re-runs `stages` there with an empty store, and
/// compares their outs with the workspace's.
fn reproduce(session: &Session, stages: &[String]) -> anyhow::Result<Vec<Failure>> {
    let root = &session.workspace.root;
    let scratch = tempfile::Builder::new().prefix("fabric-reproduce-").tempdir()?;
    super::scratch::copy_inputs(&session.workspace, scratch.path())?;
    let registry = super::registry();
    registry.prepare(root);
    let workspace = manifest::load(scratch.path(), &[], &registry).map_err(UsageError)?;
    let graph = StageGraph::build(&workspace).map_err(UsageError)?;
    let scratch_layout = Layout::new(scratch.path());
    let store = Store::local(&scratch_layout.store(None));
    let cache = StatCache::load(&scratch_layout.stat_cache());
    let reporter = PlainReporter {
        stream: false,
        verbose: false,
        quiet: true,
    };
    let planner = Planner::new(
        &workspace,
        &graph,
        &registry,
        &store,
        &cache,
        workspace.load_lock().unwrap_or_default(),
    );
    let executor = LocalExecutor::new()?;
    let runner = Runner::new(planner, &executor, &reporter);
    let selection: BTreeSet<usize> = stages
        .iter()
        .filter_map(|name| workspace.stages.iter().position(|s| &s.name == name))
        .collect();
    let summary = runner.run(&selection, &Force::Stages(stages.iter().cloned().collect()), 1, true);
    let mut failures = Vec::new();
    for name in &summary.failures {
        failures.push(Failure {
            check: "reproduce",
            subject: name.clone(),
            message: "the stage failed in the scratch copy (see the output above)".into(),
        });
    }
    let original = Hasher::new(root, &session.cache);
    let copy = Hasher::new(scratch.path(), &cache);
    for name in stages {
        let stage = session.workspace.stage(name).expect("checked by the caller");
        for out in stage.out_paths() {
            let ours = original.hash(out)?;
            let theirs = copy.hash(out)?;
            let differing = verify::differing_files(&ours, &theirs);
            if !differing.is_empty() {
                let files: Vec<String> = differing
                    .iter()
                    .map(|f| {
                        if f.is_empty() {
                            out.to_string()
                        } else {
                            format!("{out}/{f}")
                        }
                    })
                    .collect();
                failures.push(Failure {
                    check: "reproduce",
                    subject: name.clone(),
                    message: format!("not byte-identical when re-run: {}", files.join(", ")),
                });
            }
        }
    }
    Ok(failures)
}
