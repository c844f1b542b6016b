//! The Prime Brain data steps as direct commands, with the brief's flags:
//! `fabric simulate`, `fabric sanitize`, `fabric dataset`, `fabric schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fabric_core::diagnostic::Diagnostic;
use fabric_core::store::remove_path;
use prime_brain::dataset::{self, DatasetOptions, DatasetPaths};
use prime_brain::pseudonym::PseudonymKey;
use prime_brain::simulate::{self, SimulateOptions};
use prime_brain::{contract, sanitize, schema};

/// Arguments of `fabric simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Where to write raw snapshots (one JSONL file per session).
    #[arg(long, value_name = "DIR")]
    output_dir: PathBuf,
    #[command(flatten)]
    options: SimulateOptions,
}

/// Arguments of `fabric sanitize`.
#[derive(Debug, clap::Args)]
pub struct SanitizeArgs {
    /// Raw snapshots (`*.json`, `*.jsonl`).
    #[arg(long, value_name = "DIR")]
    input_dir: PathBuf,
    /// Where to write one JSONL file per session (replaced as a whole).
    #[arg(long, value_name = "DIR")]
    output_dir: PathBuf,
    /// The snapshot schema: a version (`v1`), or the Studio's schema file
    /// (`.ts` or `.json` JSON Schema), which must match Fabric's own: any
    /// drift is reported and nothing is sanitized.
    #[arg(long, default_value = schema::SCHEMA_VERSION, value_name = "VERSION|FILE")]
    schema: String,
    /// Where to write the report.
    #[arg(long, value_name = "FILE", default_value = "reports/sanitize.json")]
    report: PathBuf,
}

/// The pseudonym key for direct commands: `FABRIC_PSEUDONYM_KEY`, else the
/// key file of the workspace around the current directory (or of the current
/// directory when it is in none).
fn pseudonym_key() -> anyhow::Result<PseudonymKey> {
    let here = std::env::current_dir()?;
    let root = fabric_core::manifest::find_root(&here).unwrap_or(here);
    Ok(PseudonymKey::for_workspace(&root)?)
}

/// Arguments of `fabric dataset`.
#[derive(Debug, clap::Args)]
pub struct DatasetArgs {
    /// Sanitized sessions.
    #[arg(long, value_name = "DIR")]
    input_dir: PathBuf,
    /// Sanitized sessions of users never seen in training (e.g. simulated
    /// with `fabric simulate --group test`): all of them go to the test split.
    #[arg(long, value_name = "DIR")]
    held_out_users: Option<PathBuf>,
    /// The train split; the test split and the card are written beside it.
    #[arg(long, value_name = "FILE")]
    output_file: PathBuf,
    #[command(flatten)]
    options: DatasetOptions,
    /// Where to write the train split as chat-style JSONL for tuning a
    /// hosted LLM (default: NAME.sft.jsonl beside --output-file); its card
    /// (the audit's counts and the set's hash) goes beside it as STEM.card.json.
    #[arg(long, value_name = "FILE")]
    sft_output: Option<PathBuf>,
}

pub fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    args.options.check().map_err(super::UsageError::from)?;
    let summary = replace_dir(&args.output_dir, |dir| Ok(simulate::simulate(&args.options, dir)?))?;
    eprintln!(
        "wrote {} records ({} deliberately bad) in {} sessions to {}",
        summary.records,
        summary.bad,
        summary.sessions,
        args.output_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn sanitize(args: SanitizeArgs) -> anyhow::Result<ExitCode> {
    let as_file = Path::new(&args.schema);
    if args.schema.ends_with(".ts") || args.schema.ends_with(".json") || as_file.is_file() {
        let report =
            contract::drift_of_file(as_file).map_err(|problem| super::UsageError::from(Diagnostic::new(problem)))?;
        if !report.is_empty() {
            eprintln!(
                "error: {} differs from Fabric's snapshot schema {}:",
                as_file.display(),
                schema::SCHEMA_VERSION
            );
            for line in &report {
                eprintln!("  - {line}");
            }
            eprintln!(
                "help: regenerate it with `fabric schema --format {}`, or change Fabric's schema and bump its version",
                if args.schema.ends_with(".ts") {
                    "typescript"
                } else {
                    "json-schema"
                }
            );
            return Ok(ExitCode::from(1));
        }
    } else {
        anyhow::ensure!(
            args.schema == schema::SCHEMA_VERSION,
            "unknown schema `{}`; this fabric knows `{}`, or pass the Studio's schema file (.ts or .json)",
            args.schema,
            schema::SCHEMA_VERSION
        );
    }
    let key = pseudonym_key()?;
    let report = replace_dir(&args.output_dir, |dir| {
        Ok(sanitize::sanitize(&args.input_dir, dir, None, &key)?)
    })?;
    if let Some(parent) = args.report.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!(
        "kept {} of {} records in {} sessions; report: {}",
        report.records_out,
        report.records_in,
        report.sessions,
        args.report.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn dataset(args: DatasetArgs) -> anyhow::Result<ExitCode> {
    args.options.check().map_err(super::UsageError::from)?;
    if let Some(parent) = args.output_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut paths = DatasetPaths::beside(&args.output_file);
    let sft = args.sft_output.clone().unwrap_or_else(|| paths.sft_default());
    paths.sft = Some(prime_brain::dataset::InstructionPaths::beside(&sft));
    let card = dataset::build(
        &args.input_dir,
        args.held_out_users.as_deref(),
        &args.options,
        &paths,
        None,
    )?;
    eprintln!(
        "{} train and {} test examples; dataset hash {}",
        card.examples["train"], card.examples["test"], card.dataset_hash
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `fabric schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// `json-schema` (every rule sanitize enforces that JSON Schema can
    /// express) or `typescript` (the `PrimeBrainRawSnapshot` interface, its
    /// limits and the DAWCommand vocabulary, for the Studio).
    #[arg(long, value_enum, default_value_t = SchemaFormat::JsonSchema)]
    format: SchemaFormat,
}

/// The renderings of the snapshot contract.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemaFormat {
    /// JSON Schema (draft 2020-12).
    JsonSchema,
    /// A TypeScript module.
    Typescript,
}

pub fn print_schema(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    match args.format {
        SchemaFormat::JsonSchema => println!("{}", serde_json::to_string_pretty(&contract::json_schema())?),
        SchemaFormat::Typescript => print!("{}", contract::typescript()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds a directory beside `target` and swaps it in only when `build`
/// succeeds, so a failure never leaves a half-written result.
fn replace_dir<T>(target: &Path, build: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = tempfile::Builder::new().prefix(".fabric-staging-").tempdir_in(parent)?;
    let built = staging.path().join("out");
    let result = build(&built)?;
    remove_path(target)?;
    std::fs::rename(&built, target)?;
    Ok(result)
}
