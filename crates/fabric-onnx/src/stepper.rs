//! Running a train-step graph ([`super::mlp::train_step_graph`], or one
//! given with `--train-graph`) in ONNX Runtime, one mini-batch per step.
//!
//! The updated parameters and Adam state are taken out of the outputs
//! (owned values, no copies) and fed back as the next step's inputs. The
//! batch inputs are tensors kept per batch size and overwritten in place: at
//! batch 256 a step takes half a millisecond, so what happens around
//! `Session::run` counts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use ort::session::SessionInputValue;
use ort::value::DynValue;

use super::mlp::{Head, INPUT, Param, parameter_count};
use super::runtime;
use super::tensors::{f32_value, f32s};

/// One example of a [`Stepper::step`] batch.
pub struct StepRow<'a> {
    /// The feature vector.
    pub features: &'a [f32],
    /// The label class per head of the stepper (none: no label there).
    pub labels: &'a [Option<usize>],
    /// Its weight in the loss (a negative one pushes away from the label).
    pub weight: f32,
}

/// A value fed back from one step to the next.
struct State {
    input: String,
    output: String,
    value: DynValue,
}

/// A head's label input.
struct LabelInput {
    /// `y.<head>`.
    name: String,
    /// The head's class count (the input's width).
    classes: usize,
}

/// The batch inputs for one batch size, overwritten by each step.
struct BatchInputs {
    features: DynValue,
    labels: Vec<DynValue>,
    weights: DynValue,
}

/// A train-step graph running in ONNX Runtime with its parameters and Adam
/// moments.
pub struct Stepper {
    session: ort::session::Session,
    /// The label input of each head.
    heads: Vec<LabelInput>,
    state: Vec<State>,
    lr: DynValue,
    width: usize,
    batches: HashMap<usize, BatchInputs>,
}

impl Stepper {
    /// A session of the train-step graph `step` for `heads`, on feature
    /// vectors `width` long, starting from `initial`.
    pub fn new(
        workspace: Option<&Path>,
        step: &[u8],
        heads: &[Head],
        width: usize,
        initial: &[Param],
        learning_rate: f64,
        threads: usize,
    ) -> anyhow::Result<Stepper> {
        let session = runtime::session(workspace, step, threads)?;
        let total = parameter_count(initial);
        let mut values = Vec::new();
        for param in initial {
            values.push((
                format!("param.{}", param.name),
                f32_value(&param.dims, param.values.clone())?,
            ));
        }
        for moment in ["adam.m", "adam.v"] {
            values.push((moment.to_string(), f32_value(&[total], vec![0.0; total])?));
        }
        values.push(("adam.t".to_string(), f32_value(&[], vec![0.0])?));
        let state = values
            .into_iter()
            .map(|(input, value)| State {
                output: format!("{input}.out"),
                input,
                value,
            })
            .collect();
        Ok(Stepper {
            session,
            heads: heads
                .iter()
                .map(|h| LabelInput {
                    name: format!("y.{}", h.name),
                    classes: h.classes.len(),
                })
                .collect(),
            state,
            lr: f32_value(&[], vec![learning_rate as f32])?,
            width,
            batches: HashMap::new(),
        })
    }

    /// One step on a batch of `rows`. Returns the batch's loss.
    pub fn step(&mut self, rows: &[StepRow]) -> anyhow::Result<f64> {
        let n = rows.len();
        for row in rows {
            anyhow::ensure!(
                row.features.len() == self.width,
                "a feature vector is {} long where the model takes {}",
                row.features.len(),
                self.width
            );
            anyhow::ensure!(
                row.labels.len() == self.heads.len()
                    && row
                        .labels
                        .iter()
                        .zip(&self.heads)
                        .all(|(label, head)| label.is_none_or(|c| c < head.classes)),
                "a row's labels do not fit the heads of the train-step graph"
            );
        }
        if !self.batches.contains_key(&n) {
            let inputs = BatchInputs {
                features: f32_value(&[n, self.width], vec![0.0; n * self.width])?,
                labels: self
                    .heads
                    .iter()
                    .map(|head| f32_value(&[n, head.classes], vec![0.0; n * head.classes]))
                    .collect::<anyhow::Result<_>>()?,
                weights: f32_value(&[n], vec![0.0; n])?,
            };
            self.batches.insert(n, inputs);
        }
        let batch = self.batches.get_mut(&n).expect("inserted above");
        let features = batch.features.try_extract_tensor_mut::<f32>()?.1;
        for (slot, row) in features.chunks_exact_mut(self.width).zip(rows) {
            slot.copy_from_slice(row.features);
        }
        for (h, (head, labels)) in self.heads.iter().zip(&mut batch.labels).enumerate() {
            let labels = labels.try_extract_tensor_mut::<f32>()?.1;
            labels.fill(0.0);
            for (r, row) in rows.iter().enumerate() {
                if let Some(class) = row.labels[h] {
                    labels[r * head.classes + class] = 1.0;
                }
            }
        }
        let weights = batch.weights.try_extract_tensor_mut::<f32>()?.1;
        for (slot, row) in weights.iter_mut().zip(rows) {
            *slot = row.weight;
        }

        let mut inputs: Vec<(Cow<str>, SessionInputValue)> =
            Vec::with_capacity(self.state.len() + self.heads.len() + 3);
        inputs.push((INPUT.into(), (&batch.features).into()));
        for (head, labels) in self.heads.iter().zip(&batch.labels) {
            inputs.push((head.name.as_str().into(), labels.into()));
        }
        inputs.push(("weight".into(), (&batch.weights).into()));
        inputs.push(("lr".into(), (&self.lr).into()));
        for state in &self.state {
            inputs.push((state.input.as_str().into(), (&state.value).into()));
        }
        let mut outputs = self.session.run(inputs)?;
        let loss = f64::from(outputs["loss"].try_extract_scalar::<f32>()?);
        let mut next = Vec::with_capacity(self.state.len());
        for state in &self.state {
            let value = outputs
                .remove(state.output.as_str())
                .ok_or_else(|| anyhow::anyhow!("the train-step graph has no output `{}`", state.output))?;
            next.push(value);
        }
        drop(outputs);
        for (state, value) in self.state.iter_mut().zip(next) {
            state.value = value;
        }
        Ok(loss)
    }

    /// The current values of the parameters named like `initial`.
    pub fn params(&self, initial: &[Param]) -> anyhow::Result<Vec<Param>> {
        initial
            .iter()
            .map(|p| {
                let input = format!("param.{}", p.name);
                let state = self
                    .state
                    .iter()
                    .find(|s| s.input == input)
                    .ok_or_else(|| anyhow::anyhow!("the stepper has no parameter `{}`", p.name))?;
                Ok(Param {
                    name: p.name.clone(),
                    dims: p.dims.clone(),
                    values: f32s(&state.value)?,
                })
            })
            .collect()
    }
}
