//! ONNX: graphs built in Rust, run in ONNX Runtime through `ort`.
//!
//! - [`proto`]: the ONNX protobuf subset (prost);
//! - [`builder`]: a graph builder;
//! - [`mlp`]: the Prime Brain policy model's inference and train-step graphs;
//! - [`runtime`]: finding and loading the ONNX Runtime library, sessions;
//! - [`stepper`]: running a train-step graph, one mini-batch per step;
//! - [`tensors`]: values in and out of ONNX Runtime;
//! - [`headlines`]: what a Prime Brain release headlines;
//! - [`steps`]: the `onnx.*` steps, added to a registry by [`register`];
//! - [`train`]: the `onnx.train` node; [`reinforce`]: the `onnx.reinforce`
//!   node (the closed-loop fine-tune); [`eval`]: the `onnx.eval` node, with
//!   its [`report`] and [`charts`]; [`studio`]: the model as the Studio runs
//!   it (a TypeScript module and test vectors).

pub mod builder;
pub mod charts;
pub mod eval;
pub mod flow;
pub mod headlines;
pub mod mlp;
pub mod proto;
pub mod reinforce;
pub mod report;
pub mod review;
pub mod runtime;
pub mod stepper;
pub mod steps;
pub mod studio;
pub mod tensors;
pub mod train;

/// Adds the `onnx.*` steps to `registry`.
pub fn register(registry: &mut fabric_core::steps::Registry) {
    registry.register(Box::new(steps::Train));
    registry.register(Box::new(steps::Reinforce));
    registry.register(Box::new(steps::Eval));
    registry.register(Box::new(steps::Studio));
}
