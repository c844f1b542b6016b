//! The `fabric` command line, built from the workspace's crates:
//!
//! ```text
//! crates/fabric-core    manifest, graph, hashing, fingerprints, lock, store,
//!                       planner → scheduler → executor, releases, verify
//! crates/prime-brain    the Prime Brain data domain and its prime.* steps
//! crates/fabric-onnx    the model (ONNX graphs) and its onnx.* steps
//! crates/fabric-ingest  the snapshot endpoint behind `fabric serve`
//! src/cli               this binary: commands, and the registry of steps it ships
//! ```
//!
//! Only the core is generic: the domain crates depend on it, never the
//! reverse (the compiler enforces it). A new step implements
//! [`fabric_core::steps::Step`] and is added in [`cli::registry`]; a new
//! executor implements [`fabric_core::run::executor::Executor`]; a new
//! storage tier implements [`fabric_core::store::ObjectStore`] and
//! [`fabric_core::store::RunCache`].
//!
//! [`cli`] is the only place that prints results and chooses exit codes
//! (0 ok, 1 failure, 2 usage or manifest error).

pub mod cli;

pub use cli::main;
