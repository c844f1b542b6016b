//! `fabric dag`.

use std::process::ExitCode;

use super::{Globals, Session};

/// Output formats of `fabric dag`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// One line per stage, in run order, with what it waits for.
    Ascii,
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// Arguments of `fabric dag`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stages or pipelines to show, with what they need (default: all).
    targets: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "ascii")]
    format: Format,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let selection = session.select(&args.targets, false)?;
    let stages = &session.workspace.stages;
    let order = session.graph.order(&selection);
    let edges: Vec<(usize, usize)> = order
        .iter()
        .flat_map(|&to| session.graph.upstream(to).into_iter().map(move |from| (from, to)))
        .collect();
    match args.format {
        Format::Ascii => {
            for &index in &order {
                let stage = &stages[index];
                let upstream: Vec<&str> = session
                    .graph
                    .upstream(index)
                    .into_iter()
                    .map(|u| stages[u].name.as_str())
                    .collect();
                let kind = match &stage.action {
                    fabric_core::manifest::Action::Cmd(_) => "cmd".to_string(),
                    fabric_core::manifest::Action::Step { name, .. } => name.clone(),
                };
                if upstream.is_empty() {
                    println!("{} [{kind}]", stage.name);
                } else {
                    println!("{} [{kind}] <- {}", stage.name, upstream.join(", "));
                }
            }
        }
        Format::Dot => {
            println!("digraph fabric {{");
            println!("  rankdir=LR;");
            for &index in &order {
                println!("  \"{}\";", stages[index].name);
            }
            for (from, to) in &edges {
                println!("  \"{}\" -> \"{}\";", stages[*from].name, stages[*to].name);
            }
            println!("}}");
        }
        Format::Mermaid => {
            println!("flowchart LR");
            for &index in &order {
                println!("  {}[\"{}\"]", mermaid_id(&stages[index].name), stages[index].name);
            }
            for (from, to) in &edges {
                println!(
                    "  {} --> {}",
                    mermaid_id(&stages[*from].name),
                    mermaid_id(&stages[*to].name)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A Mermaid node id for stage `name`: letters, digits and `_` only
/// (Mermaid reads `-`, `@`, `=`, `,` and `.` as syntax; the label keeps the name).
fn mermaid_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
