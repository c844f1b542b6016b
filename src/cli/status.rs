//! `fabric status`.

use std::process::ExitCode;

use super::{Globals, Session};
use fabric_core::run::{Decision, Force};

/// Arguments of `fabric status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stages or pipelines to check (default: all).
    targets: Vec<String>,
    /// Exit 1 if any stage is stale (for CI).
    #[arg(long)]
    check: bool,
    /// Override a parameter: `-P seed=7`.
    #[arg(short = 'P', value_name = "NAME=VALUE")]
    param: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// List the up-to-date and frozen stages too.
    #[arg(short, long)]
    verbose: bool,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &args.param)?;
    let selection = session.select(&args.targets, false)?;
    let plan = session.planner()?.plan(&selection, &Force::Nothing)?;
    let stale: Vec<_> = plan
        .iter()
        .filter(|p| matches!(p.decision, Decision::Run | Decision::Restore))
        .collect();
    session.cache.save()?;
    if args.json {
        let entries: Vec<serde_json::Value> = plan
            .iter()
            .map(|p| {
                serde_json::json!({
                    "stage": session.workspace.stages[p.stage].name,
                    "state": match p.decision {
                        Decision::UpToDate => "up_to_date",
                        Decision::Restore => "restorable",
                        Decision::Run => "stale",
                        Decision::Frozen => "frozen",
                    },
                    "reasons": p.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        if args.verbose {
            for planned in plan
                .iter()
                .filter(|p| matches!(p.decision, Decision::UpToDate | Decision::Frozen))
            {
                let state = if planned.decision == Decision::Frozen {
                    "frozen"
                } else {
                    "up to date"
                };
                println!("{}: {state}", session.workspace.stages[planned.stage].name);
            }
        }
        if stale.is_empty() {
            println!("Everything is up to date.");
        }
        for planned in &stale {
            let stage = &session.workspace.stages[planned.stage];
            let note = if planned.decision == Decision::Restore {
                " (restorable from the cache)"
            } else {
                ""
            };
            println!("{}{note}:", stage.name);
            for reason in &planned.reasons {
                println!("  - {reason}");
            }
        }
    }
    Ok(if args.check && !stale.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
