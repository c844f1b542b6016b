//! The Prime Brain policy model: a multi-head MLP over the dataset's feature
//! vector, as two ONNX graphs.
//!
//! - The **inference graph** maps `features [N, F]` to one probability output
//!   per head. The command and intensity heads are masked by the doctrine
//!   inside the graph: the mode one-hot and the critical-health flags are
//!   read from the features, and forbidden command types and intensities
//!   (a call without critical health, a nudge in passive mode) get
//!   probability 0, so a released model cannot break the doctrine whatever
//!   its weights.
//! - The **train-step graph** computes the weighted cross-entropy loss (the
//!   same doctrine penalty, every head's log-softmax at once), its gradients
//!   (explicit ops: MatMul/Transpose for weights, a product with a row of
//!   ones for biases, `Where(H > 0, dH, 0)` for ReLU, `(P − Y)·c·ΣY·w/Σ|w|`
//!   for softmax cross-entropy with head weight `c`, where a row without a
//!   label for a head — all zeros in `y.HEAD`, as argument heads have for
//!   commands without that argument — has `ΣY = 0` and adds nothing) and one
//!   Adam update.
//!
//! Naming convention of train-step graphs (what `onnx.train` relies on):
//! every input `param.NAME` has an output `param.NAME.out` and an initializer
//! holding its initial value; the Adam moments `adam.m` and `adam.v` are
//! flat vectors over all parameters in input order (→ `adam.m.out`,
//! `adam.v.out`); `adam.t` → `adam.t.out` (a float step count); batch inputs
//! `features` and `y.HEAD` (one-hot), `weight [N]` (signed) and the scalar `lr`;
//! output `loss`.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::builder::{Dim, GraphBuilder, int};
use super::proto::ModelProto;
use prime_brain::dataset::FeatureNames;
use prime_brain::labels::{allowed, intensity_allowed};
use prime_brain::schema::{AlsChannel, Intensity, Mode};
use prime_brain::vocabulary::{
    AMOUNT, ARCHETYPES, ArgSpec, ArgValues, BPM, COMMANDS, NONE, SIZE, TEMPO_STEPS, same_value,
};

/// The name of the model's input: a `[N, features]` float tensor.
pub const INPUT: &str = "features";

/// One output head: a name and its class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// `command`, `target`, `next_mode`, `channel`, `intensity`, and one
    /// per command argument ([`ARGUMENTS`]): `size`, `amount`, `bpm`.
    pub name: &'static str,
    /// Class labels, in output order.
    pub classes: Vec<String>,
}

/// The heads of the Prime Brain model.
pub fn heads() -> Vec<Head> {
    let with_none = |items: Vec<String>| std::iter::once(NONE.to_string()).chain(items).collect();
    vec![
        Head {
            name: "command",
            classes: with_none(COMMANDS.iter().map(|c| c.kind.to_string()).collect()),
        },
        Head {
            name: "target",
            classes: with_none(ARCHETYPES.iter().map(|a| a.to_string()).collect()),
        },
        Head {
            name: "next_mode",
            classes: Mode::ALL.iter().map(|m| m.name().to_string()).collect(),
        },
        Head {
            name: "channel",
            classes: AlsChannel::ALL.iter().map(|c| c.name().to_string()).collect(),
        },
        Head {
            name: "intensity",
            classes: Intensity::ALL.iter().map(|i| i.name().to_string()).collect(),
        },
    ]
    .into_iter()
    .chain(ARGUMENTS.iter().map(|spec| Head {
        name: spec.name,
        classes: argument_classes(spec),
    }))
    .collect()
}

/// The command arguments the model names, each by a head of its own name.
/// An argument head has no `none` class: it is trained only on the examples
/// whose command carries the argument (the others have no label for it)
/// and read only for a command that requires it.
pub const ARGUMENTS: [ArgSpec; 3] = [SIZE, AMOUNT, BPM];

/// The classes of an argument's head: a discrete argument's values (any
/// class is a valid value: valid by construction), and for a range (the
/// tempo) the changes [`TEMPO_STEPS`] from the window's value, whose result
/// [`argument_value`] checks.
fn argument_classes(spec: &ArgSpec) -> Vec<String> {
    match spec.values {
        ArgValues::Range { .. } => TEMPO_STEPS.iter().map(|step| format!("{step:+}")).collect(),
        _ => spec.classes(),
    }
}

/// The window's tempo, read back from its features.
fn window_tempo(features: &[f32]) -> f64 {
    let tempo = f64::from(FeatureNames::default().get(features, "transport.tempo")) * 200.0;
    (tempo * 10.0).round() / 10.0
}

/// The value an argument head's `class` stands for in the window with
/// `features`; none when a tempo change would leave the range.
pub fn argument_value(spec: &ArgSpec, class: &str, features: &[f32]) -> Option<serde_json::Value> {
    match spec.values {
        ArgValues::Range { .. } => {
            let bpm = window_tempo(features) + class.parse::<f64>().ok()?;
            Some(serde_json::json!(bpm)).filter(|value| spec.accepts(value))
        }
        _ => spec.value_of(class),
    }
}

/// The class of an argument head that stands for `value` in the window
/// with `features` (the inverse of [`argument_value`]), if there is one.
pub fn argument_class(spec: &ArgSpec, value: &serde_json::Value, features: &[f32]) -> Option<String> {
    argument_classes(spec)
        .into_iter()
        .find(|class| argument_value(spec, class, features).is_some_and(|v| same_value(&v, value)))
}

/// Layer sizes: the `with` table's architecture.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Architecture {
    /// Input width (the feature vector length).
    pub features: usize,
    /// Hidden layer widths (ReLU).
    pub hidden: Vec<usize>,
}

/// A named parameter tensor (row-major values).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// `hidden0.W`, `command.b` …
    pub name: String,
    /// Shape.
    pub dims: Vec<usize>,
    /// Values.
    pub values: Vec<f32>,
}

impl Architecture {
    /// Parameter names and shapes, in a fixed order.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut shapes = Vec::new();
        let mut width = self.features;
        for (k, size) in self.hidden.iter().enumerate() {
            shapes.push((format!("hidden{k}.W"), vec![width, *size]));
            shapes.push((format!("hidden{k}.b"), vec![*size]));
            width = *size;
        }
        for head in heads() {
            shapes.push((format!("{}.W", head.name), vec![width, head.classes.len()]));
            shapes.push((format!("{}.b", head.name), vec![head.classes.len()]));
        }
        shapes
    }

    /// Seeded He-uniform weights and zero biases.
    pub fn initial_params(&self, seed: u64) -> Vec<Param> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        self.shapes()
            .into_iter()
            .map(|(name, dims)| {
                let count: usize = dims.iter().product();
                let values = if dims.len() == 2 {
                    let limit = (6.0 / dims[0] as f64).sqrt();
                    (0..count).map(|_| rng.random_range(-limit..limit) as f32).collect()
                } else {
                    vec![0.0; count]
                };
                Param { name, dims, values }
            })
            .collect()
    }
}

/// Adam and loss settings baked into the train-step graph.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSettings {
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub epsilon: f64,
    /// Weight of each head's loss, in [`heads`] order.
    pub head_weights: Vec<f64>,
    /// Also output `grad.NAME` for every parameter (for gradient checks).
    pub expose_gradients: bool,
    /// Only these heads' weights move (their columns of the merged head
    /// weights); the hidden layers and the other heads stay as they are
    /// (their gradients are zero, so Adam never moves them). None: all move.
    pub train_only: Option<Vec<&'static str>>,
}

impl Default for StepSettings {
    fn default() -> Self {
        StepSettings {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            head_weights: vec![1.0, 0.5, 0.5, 0.25, 0.25, 1.0, 1.0, 1.0],
            expose_gradients: false,
            train_only: None,
        }
    }
}

const N: Dim = Dim::Named("N");

/// Whether the doctrine lets a row in `mode` (critical or not) have
/// `head`'s `class`: commands a mode forbids ([`allowed`]) and intensities
/// it forbids ([`intensity_allowed`]) are out; the other heads are free.
fn doctrine_allows(head: &Head, mode: Mode, class: usize, critical: bool) -> bool {
    match head.name {
        "command" => head.classes[class] == NONE || allowed(mode, &head.classes[class], critical),
        "intensity" => intensity_allowed(mode, Intensity::ALL[class], critical),
        _ => true,
    }
}

/// How far [`doctrine_penalty`] pushes a forbidden class's logit down.
const FORBIDDEN: f64 = 1e9;

/// The doctrine as one `[N, classes of all heads]` penalty on the heads'
/// concatenated logits: −[`FORBIDDEN`] where [`doctrine_allows`] forbids
/// the class to the row (read from its mode one-hot and critical flags), 0
/// elsewhere, so a softmax gives a forbidden class probability 0 whatever
/// the weights. One product: the row's mode one-hot, then the same one-hot
/// again if the row is critical, times the calm penalties and the critical
/// ones' differences from them (sums of 0 and ±1e9: exact).
fn doctrine_penalty(b: &mut GraphBuilder, features: &str) -> String {
    let (mode, critical) = doctrine_inputs(b, features);
    let critical_mode = b.mul(&mode, &critical);
    let situation = b.op("Concat", &[&mode, &critical_mode], vec![int("axis", 1)]);
    let heads = heads();
    let penalties = |mode: Mode, critical: bool| -> Vec<f64> {
        heads
            .iter()
            .flat_map(|head| {
                (0..head.classes.len()).map(move |class| match doctrine_allows(head, mode, class, critical) {
                    true => 0.0,
                    false => -FORBIDDEN,
                })
            })
            .collect()
    };
    let calm = Mode::ALL.iter().flat_map(|mode| penalties(*mode, false));
    let change = Mode::ALL.iter().flat_map(|mode| {
        let calm = penalties(*mode, false);
        penalties(*mode, true)
            .into_iter()
            .zip(calm)
            .map(|(critical, calm)| critical - calm)
    });
    let table: Vec<f64> = calm.chain(change).collect();
    let table = b.constant(&[2 * Mode::ALL.len(), table.len() / (2 * Mode::ALL.len())], &table);
    b.matmul(&situation, &table)
}

/// The mode one-hot `[N, 4]` and the critical flag `[N, 1]` (0 or 1) of
/// each row of `features`.
fn doctrine_inputs(b: &mut GraphBuilder, features: &str) -> (String, String) {
    let names = FeatureNames::default();
    let position = |name: &str| names.index(name).expect("feature in layout") as i64;
    let starts = b.int64s(&[position("mode.passive")]);
    let ends = b.int64s(&[position("mode.passive") + 4]);
    let axes = b.int64s(&[1]);
    let mode = b.op("Slice", &[features, &starts, &ends, &axes], vec![]);
    let flag_positions = b.int64s(&[
        position("flags.performance.critical"),
        position("flags.health.critical"),
    ]);
    let flags = b.op("Gather", &[features, &flag_positions], vec![int("axis", 1)]);
    let flag_sum = b.reduce_sum(&flags, &[1], true);
    let zero = b.scalar(0.0);
    let is_critical = b.op("Greater", &[&flag_sum, &zero], vec![]);
    let critical = b.op("Cast", &[&is_critical], vec![int("to", i64::from(b.elem()))]);
    (mode, critical)
}

/// The forward pass: hidden activations and head logits.
struct Forward {
    inputs: Vec<String>,
    /// Each hidden layer's output (after its ReLU).
    post: Vec<String>,
    top: String,
    /// All heads' weights, concatenated along the class axis.
    head_weights: String,
    /// All heads' logits, concatenated along the class axis ([`split`] by
    /// [`head_sizes`]), with the [`doctrine_penalty`] added.
    logits: String,
}

/// The number of classes of each head, in [`heads`] order.
fn head_sizes() -> Vec<usize> {
    heads().iter().map(|h| h.classes.len()).collect()
}

/// The head of each class of all heads' classes concatenated.
fn head_of_class() -> Vec<usize> {
    head_sizes()
        .iter()
        .enumerate()
        .flat_map(|(h, n)| std::iter::repeat_n(h, *n))
        .collect()
}

/// The `[classes of all heads, heads]` one-hot of each class's head: a
/// product with it sums each head's classes.
fn class_to_head(b: &mut GraphBuilder) -> String {
    let head_of = head_of_class();
    let heads = head_sizes().len();
    let table: Vec<f64> = head_of
        .iter()
        .flat_map(|of| (0..heads).map(move |h| f64::from(u8::from(h == *of))))
        .collect();
    b.constant(&[head_of.len(), heads], &table)
}

/// A `[heads, classes of all heads]` constant spreading one value per head
/// over the head's classes: `values[h]` on head h's classes, 0 elsewhere.
fn over_head_classes(b: &mut GraphBuilder, values: &[f64]) -> String {
    let head_of = head_of_class();
    let table: Vec<f64> = (0..values.len())
        .flat_map(|h| head_of.iter().map(move |of| if h == *of { values[h] } else { 0.0 }))
        .collect();
    b.constant(&[values.len(), head_of.len()], &table)
}

/// The log of the smallest sum of exponentials [`head_log_softmax`]
/// takes: e^−80 is still a normal f32.
const LOG_FLOOR: f64 = -80.0;

/// Every head's log-softmax of `logits` (all heads' logits concatenated) in
/// a few whole-tensor nodes rather than one LogSoftmax per head, whose cost
/// is per row (at batch 256 eight of them were a tenth of the step). Each
/// row is shifted by its largest logit (of any head); each head's
/// exponentials are summed through `membership` ([`class_to_head`]) and
/// the log of the sum spread back over its classes by `spread`
/// ([`over_head_classes`]). Exact up to rounding while a head's best logit
/// is within 80 of the row's best; the sum is floored at e^−80 so that a
/// head further down gets a finite loss (too large, pushing its label up)
/// rather than an infinite one. Forbidden classes ([`doctrine_penalty`])
/// count as exactly 0.
fn head_log_softmax(b: &mut GraphBuilder, logits: &str, membership: &str, spread: &str) -> String {
    let axis = b.int64s(&[1]);
    let best = b.op("ReduceMax", &[logits, &axis], vec![int("keepdims", 1)]);
    let shifted = b.sub(logits, &best);
    let exps = b.op("Exp", &[&shifted], vec![]);
    let sums = b.matmul(&exps, membership);
    let floor = b.scalar(LOG_FLOOR.exp());
    let floored = b.op("Max", &[&sums, &floor], vec![]);
    let log_sums = b.op("Log", &[&floored], vec![]);
    let per_class = b.matmul(&log_sums, spread);
    b.sub(&shifted, &per_class)
}

/// The forward pass; `merged`: the heads' parameters come as [`MERGED`]
/// (the train-step graph) rather than one pair per head (the inference graph).
fn forward(
    b: &mut GraphBuilder,
    arch: &Architecture,
    features: &str,
    param: &dyn Fn(&str) -> String,
    merged: bool,
) -> Forward {
    let mut h = features.to_string();
    let mut inputs = Vec::new();
    let mut post = Vec::new();
    for k in 0..arch.hidden.len() {
        inputs.push(h.clone());
        let product = b.matmul(&h, &param(&format!("hidden{k}.W")));
        let z = b.add(&product, &param(&format!("hidden{k}.b")));
        h = b.op("Relu", &[&z], vec![]);
        post.push(h.clone());
    }
    // All heads in one product: concatenated weights, then split logits.
    let heads = heads();
    let (head_weights, head_biases) = if merged {
        (param(MERGED[0]), param(MERGED[1]))
    } else {
        let weights: Vec<String> = heads.iter().map(|head| param(&format!("{}.W", head.name))).collect();
        let biases: Vec<String> = heads.iter().map(|head| param(&format!("{}.b", head.name))).collect();
        let weights: Vec<&str> = weights.iter().map(String::as_str).collect();
        let biases: Vec<&str> = biases.iter().map(String::as_str).collect();
        (
            b.op("Concat", &weights, vec![int("axis", 1)]),
            b.op("Concat", &biases, vec![int("axis", 0)]),
        )
    };
    let product = b.matmul(&h, &head_weights);
    let logits = b.add(&product, &head_biases);
    let penalty = doctrine_penalty(b, features);
    let logits = b.add(&logits, &penalty);
    Forward {
        inputs,
        post,
        top: h,
        head_weights,
        logits,
    }
}

/// Splits `value` along `axis` into pieces of `sizes`.
fn split(b: &mut GraphBuilder, value: &str, sizes: &[usize], axis: i64) -> Vec<String> {
    let sizes_i64: Vec<i64> = sizes.iter().map(|s| *s as i64).collect();
    let sizes_name = b.int64s(&sizes_i64);
    let pieces: Vec<String> = (0..sizes.len()).map(|_| b.fresh("split")).collect();
    b.multi("Split", &[value, &sizes_name], vec![int("axis", axis)], &pieces);
    pieces
}

/// The inference graph with `params` baked in as initializers.
pub fn inference_graph(arch: &Architecture, params: &[Param], metadata: Vec<(String, String)>) -> ModelProto {
    let mut b = GraphBuilder::new(super::proto::data_type::FLOAT);
    let features = b.input(INPUT, &[N, Dim::Fixed(arch.features)]);
    for param in params {
        let values: Vec<f64> = param.values.iter().map(|v| f64::from(*v)).collect();
        b.initializer(&format!("param.{}", param.name), &param.dims, &values);
    }
    let forward = forward(&mut b, arch, &features, &|name| format!("param.{name}"), false);
    let logits = split(&mut b, &forward.logits, &head_sizes(), 1);
    for (head, logits) in heads().iter().zip(&logits) {
        let probs = b.op("Softmax", &[logits], vec![int("axis", 1)]);
        b.output(
            &format!("{}_probs", head.name),
            &probs,
            &[N, Dim::Fixed(head.classes.len())],
        );
    }
    b.finish("prime_brain_policy", metadata)
}

/// The number of scalars in all parameters (the length of the Adam moments).
pub fn parameter_count(params: &[Param]) -> usize {
    params.iter().map(|p| p.values.len()).sum()
}

/// The train-step graph's name of every head's weights in one matrix
/// `[width, classes of all heads]`, and of their biases.
const MERGED: [&str; 2] = ["heads.W", "heads.b"];

/// The parameters as the train-step graph takes them: the heads' weights
/// and biases merged into [`MERGED`] (two parameters instead of two per
/// head: at batch 256 the step is bound by its node count). The inverse of
/// [`split_heads`].
pub fn merge_heads(params: &[Param]) -> Vec<Param> {
    let heads = heads();
    let is_head = |p: &&Param| {
        heads
            .iter()
            .any(|h| p.name == format!("{}.W", h.name) || p.name == format!("{}.b", h.name))
    };
    let mut merged: Vec<Param> = params.iter().filter(|p| !is_head(p)).cloned().collect();
    let part = |name: String| params.iter().find(|p| p.name == name).expect("every head's parameters");
    let weights: Vec<&Param> = heads.iter().map(|h| part(format!("{}.W", h.name))).collect();
    let biases: Vec<&Param> = heads.iter().map(|h| part(format!("{}.b", h.name))).collect();
    let width = weights[0].dims[0];
    let classes: usize = biases.iter().map(|b| b.values.len()).sum();
    let rows = (0..width).flat_map(|row| {
        weights
            .iter()
            .flat_map(move |w| w.values[row * w.dims[1]..(row + 1) * w.dims[1]].iter().copied())
    });
    merged.push(Param {
        name: MERGED[0].into(),
        dims: vec![width, classes],
        values: rows.collect(),
    });
    merged.push(Param {
        name: MERGED[1].into(),
        dims: vec![classes],
        values: biases.iter().flat_map(|b| b.values.iter().copied()).collect(),
    });
    merged
}

/// Per-head parameters (`command.W`, `command.b`, …), as the inference
/// graph and releases name them, from [`merge_heads`]' form; parameters
/// without merged heads come back as they are.
pub fn split_heads(params: &[Param]) -> Vec<Param> {
    let (Some(weights), Some(biases)) = (
        params.iter().find(|p| p.name == MERGED[0]),
        params.iter().find(|p| p.name == MERGED[1]),
    ) else {
        return params.to_vec();
    };
    let mut split: Vec<Param> = params
        .iter()
        .filter(|p| !MERGED.contains(&p.name.as_str()))
        .cloned()
        .collect();
    let (width, classes) = (weights.dims[0], weights.dims[1]);
    let mut offset = 0;
    for head in heads() {
        let n = head.classes.len();
        let values = (0..width)
            .flat_map(|row| {
                weights.values[row * classes + offset..row * classes + offset + n]
                    .iter()
                    .copied()
            })
            .collect();
        split.push(Param {
            name: format!("{}.W", head.name),
            dims: vec![width, n],
            values,
        });
        split.push(Param {
            name: format!("{}.b", head.name),
            dims: vec![n],
            values: biases.values[offset..offset + n].to_vec(),
        });
        offset += n;
    }
    split
}

/// The train-step graph in element type `elem`, with `initial` values as the
/// param inputs' initializers.
pub fn train_step_graph(arch: &Architecture, initial: &[Param], settings: &StepSettings, elem: i32) -> ModelProto {
    let mut b = GraphBuilder::new(elem);
    let features = b.input(INPUT, &[N, Dim::Fixed(arch.features)]);
    let heads = heads();
    let labels: Vec<String> = heads
        .iter()
        .map(|h| b.input(&format!("y.{}", h.name), &[N, Dim::Fixed(h.classes.len())]))
        .collect();
    let weight = b.input("weight", &[N]);
    let lr = b.input("lr", &[]);
    let t = b.input("adam.t", &[]);
    for param in initial {
        let dims: Vec<Dim> = param.dims.iter().map(|d| Dim::Fixed(*d)).collect();
        b.input(&format!("param.{}", param.name), &dims);
        let values: Vec<f64> = param.values.iter().map(|v| f64::from(*v)).collect();
        b.initializer(&format!("param.{}", param.name), &param.dims, &values);
    }
    let total = parameter_count(initial);
    b.input("adam.m", &[Dim::Fixed(total)]);
    b.input("adam.v", &[Dim::Fixed(total)]);

    let forward = forward(&mut b, arch, &features, &|name| format!("param.{name}"), true);
    // Weights may be negative (a policy-gradient step pushes away from a
    // label whose advantage is negative): normalized by their magnitudes.
    let magnitudes = b.op("Abs", &[&weight], vec![]);
    let magnitude_sum = b.reduce_sum(&magnitudes, &[0], false);
    // A batch whose weights are all zero (every advantage zero) steps by
    // nothing rather than by 0/0.
    let tiny = b.scalar(1e-12);
    let weight_sum = b.op("Max", &[&magnitude_sum, &tiny], vec![]);
    let axis1 = b.int64s(&[1]);
    let weight_column = b.op("Unsqueeze", &[&weight, &axis1], vec![]);
    let scale = b.div(&weight_column, &weight_sum);

    let mut grads: Vec<(String, String)> = Vec::new();
    let top_t = b.transpose(&forward.top);
    // Weighted cross-entropy over all heads at once, each class scaled by
    // its head's weight.
    let membership = class_to_head(&mut b);
    let spread = over_head_classes(&mut b, &vec![1.0; heads.len()]);
    let log_probs = head_log_softmax(&mut b, &forward.logits, &membership, &spread);
    let probs = b.op("Exp", &[&log_probs], vec![]);
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let labels = b.op("Concat", &labels, vec![int("axis", 1)]);
    let class_weights: Vec<f64> = heads
        .iter()
        .zip(&settings.head_weights)
        .flat_map(|(head, weight)| std::iter::repeat_n(*weight, head.classes.len()))
        .collect();
    let class_weights = b.constant(&[1, class_weights.len()], &class_weights);
    let picked = b.mul(&labels, &log_probs);
    let weighted_classes = b.mul(&picked, &class_weights);
    let per_example = b.reduce_sum(&weighted_classes, &[1], false);
    let weighted = b.mul(&per_example, &weight);
    let total = b.reduce_sum(&weighted, &[0], false);
    let mean = b.div(&total, &weight_sum);
    let loss = b.op("Neg", &[&mean], vec![]);
    // d loss / d logits = (P − Y) · head weight · ΣY · w / Σ|w|, where ΣY
    // (per row and head) is 1 for a labelled row and 0 for an unlabelled one.
    // Two thin products sum each head's labels and spread the sums, times
    // the head weights, over the heads' classes: a few nodes, not three per
    // head (the step is bound by its node count).
    let weighted_heads = over_head_classes(&mut b, &settings.head_weights);
    let labelled = b.matmul(&labels, &membership);
    let present = b.matmul(&labelled, &weighted_heads);
    let row_scale = b.mul(&present, &scale);
    let difference = b.sub(&probs, &labels);
    let d_logits = b.mul(&difference, &row_scale);
    // A bias's gradient sums the batch's rows: as a product with a row of
    // ones (ONNX Runtime's ReduceSum over the first axis takes ten times
    // longer at these sizes).
    let axis0 = b.int64s(&[0]);
    // The weights as a row, for its shape [1, N].
    let batch_row = b.op("Unsqueeze", &[&weight, &axis0], vec![]);
    let row_shape = b.op("Shape", &[&batch_row], vec![]);
    let one = b.scalar(1.0);
    let ones_row = b.op("Expand", &[&one, &row_shape], vec![]);
    let flat_shape = b.int64s(&[-1]);
    let batch_sum = |b: &mut GraphBuilder, rows: &str| {
        let sum = b.matmul(&ones_row, rows);
        b.op("Reshape", &[&sum, &flat_shape], vec![])
    };
    let d_head_weights = b.matmul(&top_t, &d_logits);
    let d_head_biases = batch_sum(&mut b, &d_logits);
    grads.push((MERGED[0].to_string(), d_head_weights));
    grads.push((MERGED[1].to_string(), d_head_biases));
    let head_weights_t = b.transpose(&forward.head_weights);
    let d_top = b.matmul(&d_logits, &head_weights_t);
    let mut d_h = d_top;
    let zero = b.scalar(0.0);
    for k in (0..arch.hidden.len()).rev() {
        // Where the ReLU's output is positive (its input being needed by
        // nothing else, ONNX Runtime fuses the ReLU into the product).
        let positive = b.op("Greater", &[&forward.post[k], &zero], vec![]);
        let d_z = b.op("Where", &[&positive, &d_h, &zero], vec![]);
        let input_t = b.transpose(&forward.inputs[k]);
        grads.push((format!("hidden{k}.W"), b.matmul(&input_t, &d_z)));
        grads.push((format!("hidden{k}.b"), batch_sum(&mut b, &d_z)));
        if k > 0 {
            let w_t = b.transpose(&format!("param.hidden{k}.W"));
            d_h = b.matmul(&d_z, &w_t);
        }
    }
    b.output("loss", &loss, &[]);

    // Adam.
    // The moments and the step count are written straight to their outputs
    // (an output under another name would cost an Identity node each).
    let next_t = "adam.t.out";
    b.named("Add", &[&t, &one], vec![], next_t);
    let beta1 = b.scalar(settings.beta1);
    let beta2 = b.scalar(settings.beta2);
    let keep1 = b.scalar(1.0 - settings.beta1);
    let keep2 = b.scalar(1.0 - settings.beta2);
    let epsilon = b.scalar(settings.epsilon);
    let power1 = b.op("Pow", &[&beta1, next_t], vec![]);
    let power2 = b.op("Pow", &[&beta2, next_t], vec![]);
    let correction1 = b.sub(&one, &power1);
    let correction2 = b.sub(&one, &power2);
    // One Adam update over all parameters flattened into a single vector:
    // a handful of element-wise ops instead of a dozen per parameter (a
    // vector is flat already: no Reshape node for it, here or below).
    let flat_grads: Vec<String> = initial
        .iter()
        .map(|param| {
            let grad = &grads
                .iter()
                .find(|(n, _)| *n == param.name)
                .expect("a gradient per param")
                .1;
            match param.dims.len() {
                1 => grad.clone(),
                _ => b.op("Reshape", &[grad, &flat_shape], vec![]),
            }
        })
        .collect();
    let refs: Vec<&str> = flat_grads.iter().map(String::as_str).collect();
    let mut grad = b.op("Concat", &refs, vec![int("axis", 0)]);
    if let Some(heads_moving) = &settings.train_only {
        // 1 for each scalar of a moving head's columns, 0 elsewhere.
        let moving: Vec<bool> = heads
            .iter()
            .flat_map(|h| std::iter::repeat_n(heads_moving.contains(&h.name), h.classes.len()))
            .collect();
        let mask: Vec<f64> = initial
            .iter()
            .flat_map(|param| {
                let columns = if MERGED.contains(&param.name.as_str()) {
                    moving.clone()
                } else {
                    vec![false; *param.dims.last().unwrap_or(&1)]
                };
                (0..param.values.len()).map(move |i| f64::from(u8::from(columns[i % columns.len()])))
            })
            .collect();
        let mask = b.constant(&[mask.len()], &mask);
        grad = b.mul(&grad, &mask);
    }
    let m_old = b.mul("adam.m", &beta1);
    let g_part = b.mul(&grad, &keep1);
    let m = "adam.m.out";
    b.named("Add", &[&m_old, &g_part], vec![], m);
    let v_old = b.mul("adam.v", &beta2);
    let g2 = b.mul(&grad, &grad);
    let g2_part = b.mul(&g2, &keep2);
    let v = "adam.v.out";
    b.named("Add", &[&v_old, &g2_part], vec![], v);
    let m_hat = b.div(m, &correction1);
    let v_hat = b.div(v, &correction2);
    let root = b.op("Sqrt", &[&v_hat], vec![]);
    let denominator = b.add(&root, &epsilon);
    let direction = b.div(&m_hat, &denominator);
    let step = b.mul(&direction, &lr);
    let total = parameter_count(initial);
    b.output(m, m, &[Dim::Fixed(total)]);
    b.output(v, v, &[Dim::Fixed(total)]);
    let sizes: Vec<usize> = initial.iter().map(|p| p.values.len()).collect();
    let pieces = split(&mut b, &step, &sizes, 0);
    for (param, piece) in initial.iter().zip(&pieces) {
        let name = &param.name;
        let dims: Vec<Dim> = param.dims.iter().map(|d| Dim::Fixed(*d)).collect();
        let shaped = match param.dims.len() {
            1 => piece.clone(),
            _ => {
                let shape: Vec<i64> = param.dims.iter().map(|d| *d as i64).collect();
                let shape = b.int64s(&shape);
                b.op("Reshape", &[piece, &shape], vec![])
            }
        };
        let updated = b.sub(&format!("param.{name}"), &shaped);
        b.output(&format!("param.{name}.out"), &updated, &dims);
        if settings.expose_gradients {
            let grad = &grads.iter().find(|(n, _)| n == name).expect("a gradient per param").1;
            b.output(&format!("grad.{name}"), grad, &dims);
        }
    }
    b.output(next_t, next_t, &[]);
    b.finish("prime_brain_train_step", Vec::new())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::path::Path;

    use ort::session::SessionInputValue;
    use prost::Message;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::proto::data_type;
    use crate::runtime;
    use crate::tensors::f64_value;
    use prime_brain::dataset::feature_layout;

    /// The parameters' values in f64.
    fn values_of(params: &[Param]) -> Vec<Vec<f64>> {
        params
            .iter()
            .map(|p| p.values.iter().map(|v| f64::from(*v)).collect())
            .collect()
    }

    /// Runs the f64 train-step graph's first step (learning rate 0.01) on
    /// `batch` with `params` and returns (loss, gradients).
    fn loss_and_gradients(
        session: &mut ort::session::Session,
        batch: &[(String, Vec<usize>, Vec<f64>)],
        params: &[Param],
        values: &[Vec<f64>],
    ) -> (f64, Vec<Vec<f64>>) {
        let mut inputs: Vec<(Cow<str>, SessionInputValue)> = Vec::new();
        for (name, dims, data) in batch {
            inputs.push((Cow::Owned(name.clone()), f64_value(dims, data.clone()).unwrap().into()));
        }
        for (param, data) in params.iter().zip(values) {
            inputs.push((
                Cow::Owned(format!("param.{}", param.name)),
                f64_value(&param.dims, data.clone()).unwrap().into(),
            ));
        }
        inputs.push((Cow::Borrowed("lr"), f64_value(&[], vec![0.01]).unwrap().into()));
        inputs.push((Cow::Borrowed("adam.t"), f64_value(&[], vec![0.0]).unwrap().into()));
        let total = parameter_count(params);
        for moment in ["adam.m", "adam.v"] {
            inputs.push((
                Cow::Borrowed(moment),
                f64_value(&[total], vec![0.0; total]).unwrap().into(),
            ));
        }
        let outputs = session.run(inputs).unwrap();
        let loss = outputs["loss"].try_extract_scalar::<f64>().unwrap();
        let grads = params
            .iter()
            .map(|p| {
                outputs[format!("grad.{}", p.name).as_str()]
                    .try_extract_tensor::<f64>()
                    .unwrap()
                    .1
                    .to_vec()
            })
            .collect();
        (loss, grads)
    }

    /// One hidden layer of 16 with initial weights from `seed` times `factor`.
    fn large_weights(seed: u64, factor: f32) -> (Architecture, Vec<Param>) {
        let arch = Architecture {
            features: feature_layout().len(),
            hidden: vec![16],
        };
        let mut params = arch.initial_params(seed);
        for param in &mut params {
            param.values.iter_mut().for_each(|v| *v *= factor);
        }
        (arch, params)
    }

    /// Appends to `features` a random feature row `width` long in the mode
    /// and critical state row number `row` stands for (every mode in turn,
    /// critical in every other four rows); returns those.
    fn random_row(rng: &mut ChaCha8Rng, row: usize, width: usize, features: &mut Vec<f32>) -> (Mode, bool) {
        let names = FeatureNames::default();
        let at = |name: &str| names.index(name).unwrap();
        let mut v: Vec<f32> = (0..width).map(|_| rng.random_range(0.0..1.0)).collect();
        let mode = Mode::ALL[row % 4];
        for (m, slot) in Mode::ALL.iter().zip(&mut v[at("mode.passive")..]) {
            *slot = f32::from(u8::from(*m == mode));
        }
        let critical = row % 8 >= 4;
        v[at("flags.performance.critical")] = f32::from(u8::from(critical));
        v[at("flags.health.critical")] = 0.0;
        features.extend(v);
        (mode, critical)
    }

    /// Whatever the weights, no row gets a command or an intensity its mode
    /// forbids: 20,000 random inputs through a model with large random
    /// weights, every mode, with and without critical health.
    #[test]
    fn the_doctrine_holds_whatever_the_weights() {
        let (arch, params) = large_weights(11, 20.0);
        let model = inference_graph(&arch, &params, Vec::new());
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let mut session = runtime::session(Some(root), &model.encode_to_vec(), 1).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let rows = 20_000;
        let mut features = Vec::with_capacity(rows * arch.features);
        let mut moments = Vec::with_capacity(rows);
        for row in 0..rows {
            let (mode, critical) = random_row(&mut rng, row, arch.features, &mut features);
            moments.push((mode, critical));
        }
        let heads = heads();
        let probs = crate::eval::head_probabilities(&mut session, &heads, features, rows, arch.features).unwrap();
        let (mut commands, mut intensities) = (0, 0);
        for (row, (mode, critical)) in probs.iter().zip(&moments) {
            for (class, p) in row[0].iter().enumerate() {
                let kind = &heads[0].classes[class];
                if *p > 1e-6 && kind != NONE && !allowed(*mode, kind, *critical) {
                    commands += 1;
                }
            }
            for (intensity, p) in Intensity::ALL.iter().zip(&row[4]) {
                if *p > 1e-6 && !intensity_allowed(*mode, *intensity, *critical) {
                    intensities += 1;
                }
            }
        }
        assert_eq!((commands, intensities), (0, 0), "forbidden commands, intensities");
        // Not vacuous: where the mode allows it, these weights do speak up
        // (a nudge wins in active mode, a call with critical health), and
        // the same weights meet passive rows.
        let wins = |critical: bool, intensity: Intensity| {
            probs
                .iter()
                .zip(&moments)
                .filter(|(row, (mode, c))| *mode != Mode::Passive && *c == critical && row[4][intensity as usize] > 0.5)
                .count()
        };
        let (nudges, calls) = (wins(false, Intensity::Nudge), wins(true, Intensity::Call));
        assert!(nudges > 100 && calls > 10, "{nudges} nudges, {calls} calls");
    }

    /// The train step's loss is the weighted cross-entropy of the inference
    /// graph's probabilities. Two methods: the train step takes every
    /// head's log-softmax at once ([`head_log_softmax`]); the inference
    /// graph has one Softmax per head (both after the same
    /// [`doctrine_penalty`], which the test above checks on its own). Large
    /// weights, every mode, with and without critical health, a negative
    /// weight, unlabelled rows.
    #[test]
    fn the_train_step_loss_is_the_inference_graphs_cross_entropy() {
        let (arch, params) = large_weights(5, 4.0);
        let heads = heads();
        let settings = StepSettings {
            expose_gradients: true,
            ..StepSettings::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let n = 64;
        let mut features = Vec::with_capacity(n * arch.features);
        let mut labels: Vec<Vec<Option<usize>>> = Vec::with_capacity(n);
        for row in 0..n {
            let (mode, critical) = random_row(&mut rng, row, arch.features, &mut features);
            let row_labels = heads
                .iter()
                .map(|head| {
                    let unlabelled = ARGUMENTS.iter().any(|a| a.name == head.name) && row % 3 == 0;
                    let candidates: Vec<usize> = (0..head.classes.len())
                        .filter(|c| doctrine_allows(head, mode, *c, critical))
                        .collect();
                    (!unlabelled).then(|| candidates[rng.random_range(0..candidates.len())])
                })
                .collect();
            labels.push(row_labels);
        }
        let weights: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..2.0)).collect();

        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let model = inference_graph(&arch, &params, Vec::new());
        let mut inference = runtime::session(Some(root), &model.encode_to_vec(), 1).unwrap();
        let probs =
            crate::eval::head_probabilities(&mut inference, &heads, features.clone(), n, arch.features).unwrap();
        let mut expected = 0.0;
        for ((row, row_labels), weight) in probs.iter().zip(&labels).zip(&weights) {
            for (h, label) in row_labels.iter().enumerate() {
                if let Some(class) = label {
                    expected -= weight * settings.head_weights[h] * f64::from(row[h][*class]).ln();
                }
            }
        }
        expected /= weights.iter().map(|w| w.abs()).sum::<f64>();

        let merged = merge_heads(&params);
        let step = train_step_graph(&arch, &merged, &settings, data_type::DOUBLE);
        let mut train = runtime::session(Some(root), &step.encode_to_vec(), 1).unwrap();
        let mut batch = vec![(
            INPUT.to_string(),
            vec![n, arch.features],
            features.iter().map(|v| f64::from(*v)).collect(),
        )];
        for (h, head) in heads.iter().enumerate() {
            let classes = head.classes.len();
            let mut y = vec![0.0; n * classes];
            for (row, row_labels) in labels.iter().enumerate() {
                if let Some(class) = row_labels[h] {
                    y[row * classes + class] = 1.0;
                }
            }
            batch.push((format!("y.{}", head.name), vec![n, classes], y));
        }
        batch.push(("weight".into(), vec![n], weights));
        let (loss, _) = loss_and_gradients(&mut train, &batch, &merged, &values_of(&merged));
        assert!(
            (loss - expected).abs() <= 1e-4 * expected.abs().max(1.0),
            "train step's loss {loss}, inference graph's cross-entropy {expected}"
        );
    }

    /// [`head_log_softmax`] against each head's log-softmax computed here
    /// (shifted by the head's own best): exact where a head's best logit is
    /// 70 below the row's best, forbidden classes (1e9 down) at probability
    /// 0, and the heads 1,000 below (where even f64 exponentials vanish)
    /// finite.
    #[test]
    fn every_heads_log_softmax_at_once() {
        let sizes = head_sizes();
        let classes: usize = sizes.iter().sum();
        let mut b = GraphBuilder::new(data_type::DOUBLE);
        let logits = b.input("logits", &[N, Dim::Fixed(classes)]);
        let membership = class_to_head(&mut b);
        let spread = over_head_classes(&mut b, &vec![1.0; sizes.len()]);
        let log_probs = head_log_softmax(&mut b, &logits, &membership, &spread);
        b.output("log_probs", &log_probs, &[N, Dim::Fixed(classes)]);
        let model = b.finish("head_log_softmax", Vec::new());
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let mut session = runtime::session(Some(root), &model.encode_to_vec(), 1).unwrap();

        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let mut rows: Vec<Vec<f64>> = (0..4)
            .map(|_| (0..classes).map(|_| rng.random_range(-5.0..5.0)).collect())
            .collect();
        rows[1][..sizes[0]].iter_mut().for_each(|v| *v += 70.0);
        rows[2][1] -= FORBIDDEN;
        rows[2][sizes[0] + 2] -= FORBIDDEN;
        rows[3][..sizes[0]].iter_mut().for_each(|v| *v += 1000.0);
        let input = f64_value(&[rows.len(), classes], rows.concat()).unwrap();
        let outputs = session.run(ort::inputs!["logits" => input]).unwrap();
        let got = outputs["log_probs"].try_extract_tensor::<f64>().unwrap().1.to_vec();
        for (r, row) in rows.iter().enumerate() {
            let mut start = 0;
            for size in &sizes {
                let head = &row[start..start + size];
                let best = head.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let log_sum = head.iter().map(|v| (v - best).exp()).sum::<f64>().ln() + best;
                for (c, value) in head.iter().enumerate() {
                    let (want, have) = (value - log_sum, got[r * classes + start + c]);
                    if r == 3 {
                        assert!(have.is_finite(), "row 3, class {}: {have}", start + c);
                    } else if *value < -1e8 {
                        assert_eq!(have.exp(), 0.0, "a forbidden class");
                    } else {
                        assert!(
                            (want - have).abs() < 1e-9,
                            "row {r}, class {}: {want} vs {have}",
                            start + c
                        );
                    }
                }
                start += size;
            }
        }
    }

    #[test]
    fn every_gradient_matches_finite_differences() {
        let arch = Architecture {
            features: feature_layout().len(),
            hidden: vec![6, 5],
        };
        let params = merge_heads(&arch.initial_params(3));
        let settings = StepSettings {
            expose_gradients: true,
            ..StepSettings::default()
        };
        let model = train_step_graph(&arch, &params, &settings, data_type::DOUBLE);
        let mut session = runtime::session(
            Some(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))),
            &model.encode_to_vec(),
            1,
        )
        .unwrap();

        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let n = 5;
        let mut features: Vec<f64> = (0..n * arch.features).map(|_| rng.random_range(0.0..1.0)).collect();
        for row in 0..n {
            for m in 0..4 {
                features[row * arch.features + m] = f64::from(u8::from(m == row % 4));
            }
        }
        let mut batch = vec![(INPUT.to_string(), vec![n, arch.features], features)];
        for head in heads() {
            let classes = head.classes.len();
            let mut y = vec![0.0; n * classes];
            for row in 0..n {
                // Argument heads leave some rows unlabelled: those must add
                // nothing (the gradients fail the check if they do).
                if ARGUMENTS.iter().any(|a| a.name == head.name) && row % 2 == 0 {
                    continue;
                }
                // `none` and `whisper` (class 0) are always allowed, so
                // masked classes never carry a label.
                let class = if matches!(head.name, "command" | "intensity") {
                    0
                } else {
                    rng.random_range(0..classes)
                };
                y[row * classes + class] = 1.0;
            }
            batch.push((format!("y.{}", head.name), vec![n, classes], y));
        }
        // One negative weight, as a policy-gradient step has.
        let weights = (0..n).map(|i| if i == 1 { -2.0 } else { 1.0 + i as f64 }).collect();
        batch.push(("weight".into(), vec![n], weights));

        let values = values_of(&params);
        let (_, grads) = loss_and_gradients(&mut session, &batch, &params, &values);
        let epsilon = 1e-6;
        for (index, param) in params.iter().enumerate() {
            for _ in 0..3 {
                let at = rng.random_range(0..param.values.len());
                let mut plus = values.clone();
                plus[index][at] += epsilon;
                let mut minus = values.clone();
                minus[index][at] -= epsilon;
                let (up, _) = loss_and_gradients(&mut session, &batch, &params, &plus);
                let (down, _) = loss_and_gradients(&mut session, &batch, &params, &minus);
                let numeric = (up - down) / (2.0 * epsilon);
                let analytic = grads[index][at];
                let error = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-8);
                assert!(
                    error < 1e-5 || (numeric - analytic).abs() < 1e-9,
                    "{}[{at}]: analytic {analytic}, numeric {numeric}",
                    param.name
                );
            }
        }
    }
}
