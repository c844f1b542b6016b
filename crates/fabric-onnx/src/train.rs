//! `onnx.train`: trains the Prime Brain policy model in ONNX Runtime.
//!
//! The train-step graph ([`super::mlp`]) runs once per mini-batch in a
//! [`Stepper`]. Batches are shuffled with a seeded generator, so the same
//! inputs, seed and thread count give a byte-identical `model.onnx`.
//!
//! Labels follow the doctrine: a command the example's mode forbids is
//! trained as `none` (the mask in the graph could never emit it anyway).
//! Mode-aware loss weights make examples count more where the doctrine is at
//! stake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use prost::Message;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::mlp::{
    ARGUMENTS, Architecture, Param, StepSettings, argument_class, heads, inference_graph, merge_heads, split_heads,
    train_step_graph,
};
use super::proto::{ModelProto, data_type};
use super::stepper::{StepRow, Stepper};
use fabric_core::steps::BadOption;
use prime_brain::dataset::{Example, feature_layout};
use prime_brain::labels::allowed;
use prime_brain::schema::Mode;

/// The built-in architecture's name for `--base-model`.
pub const BUILTIN: &str = "prime-mlp";

/// Training parameters: the `with` table of `onnx.train` and the flags of
/// `fabric train`, declared once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// `prime-mlp` (built in) or a released model.onnx to warm-start from.
    /// `fabric train` also takes a hosted Gemini model (`gemini-2.5-flash`):
    /// its tuning job is prepared in --output-dir from the instruction-tuning
    /// export beside --dataset, to run on Vertex AI.
    #[serde(default = "builtin")]
    #[arg(long, default_value = BUILTIN)]
    pub base_model: String,
    /// Hidden layer widths (comma-separated on the command line).
    #[serde(default = "hidden")]
    #[arg(long, value_delimiter = ',', default_values_t = hidden())]
    pub hidden: Vec<usize>,
    /// Passes over the training set (3 for a hosted model unless given).
    #[serde(default = "epochs")]
    #[arg(long, default_value_t = epochs())]
    pub epochs: usize,
    /// Examples per step.
    #[serde(default = "batch_size")]
    #[arg(long, default_value_t = batch_size())]
    pub batch_size: usize,
    /// Adam learning rate.
    #[serde(default = "learning_rate")]
    #[arg(long, default_value_t = learning_rate())]
    pub learning_rate: f64,
    /// Seed of the initial weights and the shuffling.
    #[serde(default = "seed")]
    #[arg(long, default_value_t = seed())]
    pub seed: u64,
    /// ONNX Runtime intra-op threads (part of the reproducibility contract).
    #[serde(default = "threads")]
    #[arg(long, default_value_t = threads())]
    pub threads: usize,
    /// Loss weight of examples by mode: the doctrine matters most in passive
    /// and learning modes.
    #[serde(default = "mode_weights")]
    #[arg(skip = mode_weights())]
    pub mode_weights: BTreeMap<String, f64>,
    /// Train this train-step graph instead of the built-in architecture
    /// (following the README's naming convention); needs the inference graph
    /// too. In a pipeline, declare both files as deps so their content enters
    /// the fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "FILE", requires = "inference_graph")]
    pub train_graph: Option<String>,
    /// The inference graph whose `param.*` initializers receive the trained
    /// values of the train-step graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "FILE", requires = "train_graph")]
    pub inference_graph: Option<String>,
}

fn builtin() -> String {
    BUILTIN.into()
}
fn hidden() -> Vec<usize> {
    vec![64, 32]
}
fn epochs() -> usize {
    40
}
fn batch_size() -> usize {
    256
}
fn learning_rate() -> f64 {
    3e-3
}
fn seed() -> u64 {
    57
}
fn threads() -> usize {
    1
}
fn mode_weights() -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("passive".into(), 3.0),
        ("learning".into(), 2.0),
        ("active".into(), 1.0),
        ("optimizing".into(), 1.0),
    ])
}

impl Default for TrainOptions {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults parse")
    }
}

impl TrainOptions {
    /// Checks the values serde and clap cannot.
    pub fn check(&self) -> Result<(), BadOption> {
        for (name, value) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("threads", self.threads),
        ] {
            if value == 0 {
                return Err(BadOption::new(name, "must be at least 1"));
            }
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return Err(BadOption::new("learning_rate", "must be within (0, 1)"));
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Err(BadOption::new("hidden", "needs at least one layer, each wider than 0"));
        }
        if let Some(name) = self
            .mode_weights
            .keys()
            .find(|name| !Mode::ALL.iter().any(|m| m.name() == *name))
        {
            return Err(BadOption::new(
                "mode_weights",
                format!("names `{name}`, which is not a mode"),
            ));
        }
        match (&self.train_graph, &self.inference_graph) {
            (None, None) => {}
            (Some(step), Some(inference)) if step.ends_with(".onnx") && inference.ends_with(".onnx") => {}
            _ => {
                return Err(BadOption::new(
                    "train_graph",
                    "and inference_graph go together, both .onnx files",
                ));
            }
        }
        base_model_kind(&self.base_model).map(|_| ())
    }
}

/// Where `--base-model` points.
enum BaseModel {
    Builtin,
    Released(PathBuf),
}

fn base_model_kind(name: &str) -> Result<BaseModel, BadOption> {
    if name == BUILTIN {
        return Ok(BaseModel::Builtin);
    }
    if name.ends_with(".onnx") {
        return Ok(BaseModel::Released(PathBuf::from(name)));
    }
    Err(BadOption::new(
        "base_model",
        format!(
            "`{name}` is not a built-in architecture or a model.onnx path; hosted models (such as gemini-2.5-flash) cannot be tuned inside the sealed Fabric. Use `{BUILTIN}` or a released model.onnx, and tune hosted models elsewhere on the instruction-tuning export (`fabric dataset --sft-output FILE`, or a 4th out of `prime.dataset`)"
        ),
    ))
}

/// Where training writes.
pub struct TrainOutputs {
    /// The inference graph.
    pub model: PathBuf,
    /// Loss per epoch.
    pub log: PathBuf,
    /// The model card.
    pub card: PathBuf,
}

/// One epoch in the training log.
#[derive(Debug, Clone, Serialize)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    /// Mean weighted loss over the epoch's steps.
    pub loss: f64,
    /// Wall-clock seconds (printed, never written: outs must be reproducible).
    #[serde(skip)]
    pub seconds: f64,
}

/// `training-log.json`. It holds no wall-clock times, so that the same inputs
/// give byte-identical outs (`fabric verify --reproduce` compares them);
/// times go to the terminal.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingLog {
    /// Per epoch.
    pub epochs: Vec<EpochLog>,
    /// Learning rate.
    pub learning_rate: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Training examples.
    pub examples: usize,
    /// Examples per second over the whole run (printed, never written).
    #[serde(skip)]
    pub examples_per_second: f64,
}

/// Reads dataset examples from a JSONL file.
pub fn read_examples(path: &Path) -> anyhow::Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    fabric_core::jsonl::parse(&text, path, "not a dataset example", None)
}

/// The label class of one example per head (doctrine applied to the
/// command); none for an argument head when the command does not carry
/// that argument (an all-zero label row: the head learns nothing there).
pub fn label_indices(example: &Example) -> Vec<Option<usize>> {
    let heads = heads();
    let index = |head: usize, class: &str| heads[head].classes.iter().position(|c| c == class).unwrap_or(0);
    let permitted = allowed(example.mode, &example.command.kind, example.critical);
    let (command, target) = if permitted {
        (
            index(0, &example.command.kind),
            example.command.target.as_deref().map_or(0, |t| index(1, t)),
        )
    } else {
        (0, 0)
    };
    let mut labels = vec![
        Some(command),
        Some(target),
        Some(index(2, example.next_mode.name())),
        Some(index(3, example.guidance.channel.name())),
        Some(index(4, example.guidance.intensity.name())),
    ];
    // Each argument head: the class of the argument the (permitted) command carries.
    for spec in &ARGUMENTS {
        let head = labels.len();
        debug_assert_eq!(heads[head].name, spec.name, "argument heads follow the others");
        let class = example
            .command
            .args
            .as_ref()
            .filter(|_| permitted)
            .and_then(|args| args.get(spec.name))
            .and_then(|value| argument_class(spec, value, &example.features));
        labels.push(class.map(|class| index(head, &class)));
    }
    labels
}

/// The dataset hash from the card beside a dataset file, if there is one.
pub fn dataset_hash(dataset: &Path) -> Option<String> {
    let paths = prime_brain::dataset::DatasetPaths::beside(dataset);
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(paths.card).ok()?).ok()?;
    card["datasetHash"].as_str().map(str::to_string)
}

/// Initial parameters: seeded, or the weights of a released model.
fn starting_params(options: &TrainOptions, arch: &Architecture) -> anyhow::Result<Vec<Param>> {
    match base_model_kind(&options.base_model)? {
        BaseModel::Builtin => Ok(arch.initial_params(options.seed)),
        BaseModel::Released(path) => {
            let model = read_model(&path).map_err(|e| anyhow::anyhow!("--base-model {e}"))?;
            released_params(&model, arch)
                .map_err(|e| anyhow::anyhow!("--base-model {}: {e}; use the same `hidden` sizes", path.display()))
        }
    }
}

/// The parameters of a model built by [`inference_graph`] for `arch`, in
/// [`Architecture::shapes`] order.
pub fn released_params(model: &ModelProto, arch: &Architecture) -> anyhow::Result<Vec<Param>> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    arch.shapes()
        .into_iter()
        .map(|(name, dims)| {
            let tensor = graph
                .initializer
                .iter()
                .find(|t| t.name == format!("param.{name}"))
                .ok_or_else(|| anyhow::anyhow!("no parameter `{name}`"))?;
            let found: Vec<usize> = tensor.dims.iter().map(|d| *d as usize).collect();
            anyhow::ensure!(found == dims, "`{name}` is {found:?}, this architecture needs {dims:?}");
            Ok(Param {
                name,
                dims,
                values: tensor.float_data.clone(),
            })
        })
        .collect()
}

/// The encoded train-step graph training would run (initial parameters as
/// initializers).
pub fn train_step_model(options: &TrainOptions) -> anyhow::Result<Vec<u8>> {
    options.check()?;
    let arch = Architecture {
        features: feature_layout().len(),
        hidden: options.hidden.clone(),
    };
    let initial = merge_heads(&starting_params(options, &arch)?);
    Ok(train_step_graph(&arch, &initial, &StepSettings::default(), data_type::FLOAT).encode_to_vec())
}

/// A train-step graph given as a file: its bytes, its parameters' initial
/// values, and the heads it has labels for.
struct ExternalGraph {
    bytes: Vec<u8>,
    initial: Vec<Param>,
    heads: Vec<super::mlp::Head>,
    inference: ModelProto,
}

fn read_model(path: &Path) -> anyhow::Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    ModelProto::decode(bytes.as_slice()).map_err(|e| anyhow::anyhow!("{}: not an ONNX model ({e})", path.display()))
}

/// Loads `train_graph` and `inference_graph` (relative to `base`).
fn external_graph(base: &Path, step: &str, inference: &str) -> anyhow::Result<ExternalGraph> {
    let model = read_model(&base.join(step))?;
    let graph = model.graph.clone().unwrap_or_default();
    let mut initial = Vec::new();
    let mut label_heads = Vec::new();
    for input in &graph.input {
        if let Some(name) = input.name.strip_prefix("param.") {
            let tensor = graph.initializer.iter().find(|t| t.name == input.name).ok_or_else(|| {
                anyhow::anyhow!("{step}: input `{}` has no initializer (its initial value)", input.name)
            })?;
            initial.push(Param {
                name: name.to_string(),
                dims: tensor.dims.iter().map(|d| *d as usize).collect(),
                values: tensor.float_data.clone(),
            });
        } else if let Some(head) = input.name.strip_prefix("y.") {
            let known = heads()
                .into_iter()
                .find(|h| h.name == head)
                .ok_or_else(|| anyhow::anyhow!("{step}: label input `{}` names no head of the dataset", input.name))?;
            label_heads.push(known);
        }
    }
    anyhow::ensure!(
        !initial.is_empty(),
        "{step}: no `param.*` inputs; see the naming convention in the README"
    );
    Ok(ExternalGraph {
        bytes: model.encode_to_vec(),
        initial,
        heads: label_heads,
        inference: read_model(&base.join(inference))?,
    })
}

/// `inference` with its `param.*` initializers replaced by `trained`.
fn with_trained(
    mut inference: ModelProto,
    trained: &[Param],
    metadata: Vec<(String, String)>,
) -> anyhow::Result<ModelProto> {
    let graph = inference
        .graph
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("the inference graph is empty"))?;
    for param in trained {
        let tensor = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == format!("param.{}", param.name))
            .ok_or_else(|| anyhow::anyhow!("the inference graph has no initializer `param.{}`", param.name))?;
        let dims: Vec<usize> = tensor.dims.iter().map(|d| *d as usize).collect();
        anyhow::ensure!(
            dims == param.dims,
            "`param.{}` is {dims:?} in the inference graph, {:?} in training",
            param.name,
            param.dims
        );
        tensor.float_data = param.values.clone();
    }
    inference.metadata_props.extend(
        metadata
            .into_iter()
            .map(|(key, value)| super::proto::StringStringEntryProto { key, value }),
    );
    Ok(inference)
}

/// Trains on `dataset` and writes the model, the log and the card. Paths in
/// the options are relative to `base`. Between batches it asks `interrupted`
/// and gives up, writing nothing, when told so.
pub fn train(
    workspace: Option<&Path>,
    base: &Path,
    dataset: &Path,
    options: &TrainOptions,
    outputs: &TrainOutputs,
    interrupted: &dyn Fn() -> bool,
) -> anyhow::Result<TrainingLog> {
    options.check()?;
    let examples = read_examples(dataset)?;
    anyhow::ensure!(!examples.is_empty(), "{} holds no examples", dataset.display());
    let width = feature_layout().len();
    anyhow::ensure!(
        examples.iter().all(|e| e.features.len() == width),
        "{}: feature vectors are not {width} long; rebuild the dataset with this fabric",
        dataset.display()
    );
    let arch = Architecture {
        features: width,
        hidden: options.hidden.clone(),
    };
    let external = match (&options.train_graph, &options.inference_graph) {
        (Some(step), Some(inference)) => Some(external_graph(base, step, inference)?),
        _ => None,
    };
    let all_heads = heads();
    let heads = external.as_ref().map_or_else(heads, |e| e.heads.clone());
    let head_index: Vec<usize> = heads
        .iter()
        .map(|h| all_heads.iter().position(|a| a.name == h.name).expect("a known head"))
        .collect();
    // Each example's label class per head of the graph, once for all epochs.
    let labels: Vec<Vec<Option<usize>>> = examples
        .iter()
        .map(|e| {
            let all = label_indices(e);
            head_index.iter().map(|&h| all[h]).collect()
        })
        .collect();
    let weights: Vec<f32> = examples
        .iter()
        .map(|e| *options.mode_weights.get(e.mode.name()).unwrap_or(&1.0) as f32)
        .collect();

    let (initial, step_bytes) = match &external {
        Some(graph) => (graph.initial.clone(), graph.bytes.clone()),
        None => {
            let initial = merge_heads(&starting_params(options, &arch)?);
            let step = train_step_graph(&arch, &initial, &StepSettings::default(), data_type::FLOAT);
            (initial, step.encode_to_vec())
        }
    };
    let mut stepper = Stepper::new(
        workspace,
        &step_bytes,
        &heads,
        width,
        &initial,
        options.learning_rate,
        options.threads,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut log = Vec::new();
    let started = Instant::now();
    for epoch in 1..=options.epochs {
        let epoch_start = Instant::now();
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut steps = 0;
        for batch in order.chunks(options.batch_size) {
            anyhow::ensure!(!interrupted(), fabric_core::steps::INTERRUPTED);
            let rows: Vec<StepRow> = batch
                .iter()
                .map(|&i| StepRow {
                    features: &examples[i].features,
                    labels: &labels[i],
                    weight: weights[i],
                })
                .collect();
            loss_sum += stepper.step(&rows)?;
            steps += 1;
        }
        log.push(EpochLog {
            epoch,
            loss: loss_sum / steps as f64,
            seconds: epoch_start.elapsed().as_secs_f64(),
        });
    }
    let elapsed = started.elapsed().as_secs_f64();

    let trained = split_heads(&stepper.params(&initial)?);
    let hash = dataset_hash(dataset).unwrap_or_else(|| "unknown".into());
    let vocabulary: BTreeMap<&str, &Vec<String>> = heads.iter().map(|h| (h.name, &h.classes)).collect();
    let metadata = vec![
        ("dataset_hash".to_string(), hash.clone()),
        ("params".to_string(), serde_json::to_string(options)?),
        ("fabric_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("vocabulary".to_string(), serde_json::to_string(&vocabulary)?),
        ("feature_layout".to_string(), serde_json::to_string(&feature_layout())?),
    ];
    let model = match external {
        Some(graph) => with_trained(graph.inference, &trained, metadata)?,
        None => inference_graph(&arch, &trained, metadata),
    };
    std::fs::write(&outputs.model, model.encode_to_vec())?;

    let training_log = TrainingLog {
        epochs: log,
        learning_rate: options.learning_rate,
        batch_size: options.batch_size,
        examples: examples.len(),
        examples_per_second: (examples.len() * options.epochs) as f64 / elapsed,
    };
    std::fs::write(&outputs.log, serde_json::to_string_pretty(&training_log)? + "\n")?;
    let card = serde_json::json!({
        "model": "Prime Brain policy (multi-head MLP)",
        "architecture": {"features": arch.features, "hidden": arch.hidden, "activation": "relu",
                         "heads": heads.iter().map(|h| serde_json::json!({"name": h.name, "classes": h.classes})).collect::<Vec<_>>()},
        "doctrine": "the command head is masked inside the graph: passive mode issues no command unless a critical health flag is up (then only non-intrusive fixes); learning mode issues no intrusive command",
        "inputs": {"features": format!("[N, {}] float, layout in metadata `feature_layout`", arch.features)},
        "outputs": heads.iter().map(|h| format!("{}_probs", h.name)).collect::<Vec<_>>(),
        "datasetHash": hash,
        "training": {"examples": examples.len(), "epochs": options.epochs, "finalLoss": training_log.epochs.last().map(|e| e.loss)},
        "params": options,
    });
    std::fs::write(&outputs.card, serde_json::to_string_pretty(&card)? + "\n")?;
    Ok(training_log)
}
