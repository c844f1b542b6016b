//! `fabric train` and `fabric evaluate`, with the brief's flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ArgMatches;
use clap::parser::ValueSource;
use fabric_core::manifest::find_root;
use fabric_onnx::eval::{self, Candidate, EvalOutputs, Gates};
use fabric_onnx::train::{self, TrainOptions, TrainOutputs};

/// Arguments of `fabric train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The train split (JSONL from `fabric dataset`).
    #[arg(long, value_name = "FILE")]
    dataset: PathBuf,
    /// Where to write model.onnx, training-log.json and model-card.json.
    #[arg(long, value_name = "DIR")]
    output_dir: PathBuf,
    #[command(flatten)]
    options: TrainOptions,
    /// For a hosted Gemini model: the multiplier of Vertex AI's recommended
    /// learning rate (Vertex takes no absolute rate).
    #[arg(long, default_value_t = 1.0)]
    learning_rate_multiplier: f64,
    /// Also write the train-step graph here (for other runtimes and benchmarks).
    #[arg(long, value_name = "FILE")]
    save_train_graph: Option<PathBuf>,
}

/// `fabric train`; `given` are its parsed flags, to tell a flag given from
/// its default (a hosted model has other defaults).
pub fn train(args: TrainArgs, given: &ArgMatches) -> anyhow::Result<ExitCode> {
    let given = |flag: &str| given.value_source(flag) == Some(ValueSource::CommandLine);
    if args.options.base_model.starts_with("gemini-") {
        return prepare_hosted_tuning(&args, given("epochs"), given("learning_rate"));
    }
    let options = args.options;
    options.check().map_err(super::UsageError::from)?;
    std::fs::create_dir_all(&args.output_dir)?;
    let outputs = TrainOutputs {
        model: args.output_dir.join("model.onnx"),
        log: args.output_dir.join("training-log.json"),
        card: args.output_dir.join("model-card.json"),
    };
    let workspace = find_root(&std::env::current_dir()?);
    if let Some(path) = &args.save_train_graph {
        std::fs::write(path, train::train_step_model(&options)?)?;
    }
    let log = train::train(
        workspace.as_deref(),
        &std::env::current_dir()?,
        &args.dataset,
        &options,
        &outputs,
        // Ctrl-C ends this process.
        &|| false,
    )?;
    let last = log.epochs.last().map_or(f64::NAN, |e| e.loss);
    eprintln!(
        "trained {} epochs on {} examples ({:.0} examples/s); final loss {last:.4}; wrote {}",
        log.epochs.len(),
        log.examples,
        log.examples_per_second,
        outputs.model.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Warns when the model's card names another dataset than the one the test
/// split belongs to (its card beside it: `NAME-test.jsonl` → `NAME.card.json`).
fn warn_if_trained_on_other_data(model_dir: &std::path::Path, test: &std::path::Path) {
    let hash = |path: &std::path::Path| -> Option<String> {
        let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        card.get("datasetHash")?.as_str().map(str::to_string)
    };
    let stem = test
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(name) = stem.strip_suffix("-test") else {
        return;
    };
    if let (Some(model), Some(data)) = (
        hash(&model_dir.join("model-card.json")),
        hash(&test.with_file_name(format!("{name}.card.json"))),
    ) && model != data
    {
        eprintln!(
            "warning: {} was trained on dataset {} but {} belongs to dataset {}: the scores compare a model with data it was not built for",
            model_dir.display(),
            &model[..12.min(model.len())],
            test.display(),
            &data[..12.min(data.len())]
        );
    }
}

/// `train --base-model gemini-…`: a hosted model cannot be tuned inside the
/// sealed Fabric, so the tuning job is prepared for Vertex AI instead.
fn prepare_hosted_tuning(args: &TrainArgs, epochs_given: bool, rate_given: bool) -> anyhow::Result<ExitCode> {
    let paths = prime_brain::dataset::DatasetPaths::beside(&args.dataset);
    let sft = prime_brain::dataset::InstructionPaths::beside(&paths.sft_default());
    for file in [&sft.data, &sft.test] {
        anyhow::ensure!(
            file.is_file(),
            "{} is missing: a hosted model is tuned on the instruction-tuning set, which `fabric dataset --output-file {}` writes beside the dataset",
            file.display(),
            args.dataset.display()
        );
    }
    anyhow::ensure!(
        args.learning_rate_multiplier > 0.0 && args.learning_rate_multiplier.is_finite(),
        "--learning-rate-multiplier must be a positive number"
    );
    let epochs = if epochs_given { args.options.epochs } else { 3 };
    let job = prime_brain::sft::gemini_tuning_job(
        &sft,
        &paths.test,
        &args.output_dir,
        &args.options.base_model,
        epochs,
        args.learning_rate_multiplier,
    )?;
    eprintln!(
        "{} is a hosted model: its tuning runs on Vertex AI, not in Fabric. Prepared the job in {}:\n  {} ({} conversations in Gemini's tuning format)\n  {} (tuningJobs.create: {epochs} epochs, learning-rate multiplier {})\n  {} (the held-out prompts, in the order of {})\n  {} (the commands that submit it and collect the tuned model's answers)\nAfterwards, score the answers: fabric evaluate --predictions answers.jsonl --test-dataset {} --output-report reports/tuned.md",
        args.options.base_model,
        args.output_dir.display(),
        job.data.display(),
        job.examples,
        job.request.display(),
        args.learning_rate_multiplier,
        job.prompts.display(),
        paths.test.display(),
        job.readme.display(),
        paths.test.display()
    );
    if rate_given {
        eprintln!(
            "note: --learning-rate {} is an absolute rate, which Vertex AI does not take; it sets the rate as a multiplier of its recommended one (--learning-rate-multiplier, now {})",
            args.options.learning_rate, args.learning_rate_multiplier
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `fabric evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// The directory holding model.onnx (and training-log.json for the loss chart).
    #[arg(long, value_name = "DIR", required_unless_present = "predictions")]
    model_dir: Option<PathBuf>,
    /// Score these predictions instead of a model: JSONL, one
    /// `{"response": "...", "command": {"type": "...", "target": "..."}}` per test example.
    #[arg(long, value_name = "FILE", conflicts_with = "model_dir")]
    predictions: Option<PathBuf>,
    /// The test split.
    #[arg(long, value_name = "FILE")]
    test_dataset: PathBuf,
    /// The Markdown report; metrics.json, loss.svg and confusion.svg are written beside it.
    #[arg(long, value_name = "FILE")]
    output_report: PathBuf,
    /// The regression gates: any that fails makes the command exit 1.
    #[command(flatten)]
    gates: Gates,
}

pub fn evaluate(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .output_report
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    std::fs::create_dir_all(&dir)?;
    let outputs = EvalOutputs {
        metrics: dir.join("metrics.json"),
        report: args.output_report.clone(),
        loss_chart: dir.join("loss.svg"),
        confusion_chart: dir.join("confusion.svg"),
        chart_links: ("loss.svg".into(), "confusion.svg".into()),
    };
    let (candidate, log) = match (&args.model_dir, &args.predictions) {
        (_, Some(predictions)) => (Candidate::Predictions(predictions.clone()), None),
        (Some(model_dir), None) => {
            let model = model_dir.join("model.onnx");
            anyhow::ensure!(
                model.exists() || !model_dir.join("tuning-job.json").exists(),
                "{} holds a tuning job for a hosted model (see its TUNING.md), not a model.onnx: score the tuned model's answers with `fabric evaluate --predictions ANSWERS.jsonl --test-dataset {} --output-report ...`",
                model_dir.display(),
                args.test_dataset.display()
            );
            warn_if_trained_on_other_data(model_dir, &args.test_dataset);
            let log = model_dir.join("training-log.json");
            (
                Candidate::Model(model_dir.join("model.onnx")),
                log.exists().then_some(log),
            )
        }
        (None, None) => anyhow::bail!("pass --model-dir or --predictions"),
    };
    let workspace = find_root(&std::env::current_dir()?);
    let (metrics, failed) = eval::evaluate(
        workspace.as_deref(),
        &candidate,
        &args.test_dataset,
        log.as_deref(),
        &args.gates,
        &outputs,
    )?;
    eprintln!(
        "command accuracy {:.1}% (seed rules {:.1}%, majority {:.1}%), mode compliance {:.1}%, tone audit {:.1}%; report: {}",
        metrics.model.command_accuracy * 100.0,
        metrics.seed_rules.command_accuracy * 100.0,
        metrics.majority.command_accuracy * 100.0,
        metrics.model.mode_compliance * 100.0,
        metrics.model.tone_audit * 100.0,
        args.output_report.display()
    );
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("regression gates failed: {}", failed.join(", "));
        Ok(ExitCode::from(1))
    }
}
