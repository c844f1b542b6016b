//! Prime Fabric: a make-like DAG runner for the Prime Brain training pipeline.
//!
//! How the pieces fit, from input to output:
//!
//! - [`manifest`] loads `Fabric.toml` and `pipelines/*.toml` (raw TOML with
//!   spans → a validated [`manifest::Workspace`]); errors are
//!   [`diagnostic::Diagnostic`]s with file, line, column and a hint.
//! - [`graph`] builds and validates the stage DAG (petgraph).
//! - [`hash`] hashes files and directories with BLAKE3, helped by the
//!   [`stat_cache`]; [`fingerprint`] turns a stage's inputs into its cache key
//!   and explains changes; [`digest`] holds the hash type and canonical encoder.
//! - [`layout`] names every file Fabric keeps in a workspace (`.fabric/`).
//! - [`lock`] reads and writes `Fabric.lock`; [`store`] is the
//!   content-addressed store and run cache, behind the `ObjectStore` and
//!   `RunCache` traits.
//! - [`run`] carries a run out, along this path:
//!
//!   ```text
//!   Planner::decide ──► Runner (scheduler) ──► Executor::submit / next_event
//!   (run::plan: up to    (run: each stage when    (run::executor: local processes;
//!    date / restore /     its upstream is done;    a cluster executor plugs in here)
//!    run, and why)        restore, or run)          └─ built-in steps in-process, or as
//!                                                      `fabric __step` jobs (run::step)
//!   ```
//!
//!   Commands are watched by a per-run [`run::supervisor`] process so none
//!   outlives a killed `fabric`; a new step plugs into the [`steps`]
//!   registry, a new storage tier behind
//!   [`store::ObjectStore`] and [`store::RunCache`]; [`memo`] keeps
//!   a step's per-input-file results between runs; [`run::noop`] keeps what
//!   an "all up to date" verdict rested on, so an unchanged workspace is
//!   answered without planning.
//! - [`prime`] is the Prime Brain data domain (schema and the Studio
//!   contract, simulate, sanitize, dataset) behind the `prime.*` steps;
//!   [`onnx`] trains, evaluates and bundles the model for the Studio.
//! - [`release`] publishes immutable releases and the changelog; [`verify`]
//!   checks releases, changelog and lock for CI.
//! - [`ingest`] is the HTTP endpoint (`fabric serve`) the Studio posts snapshots to.
//! - [`report`] turns run events into terminal bars, plain lines or JSON.
//! - [`cli`] is the command line; the only place that prints results and
//!   chooses exit codes (0 ok, 1 failure, 2 usage or manifest error).

pub mod atomic;
pub mod cli;
pub mod diagnostic;
pub mod digest;
pub mod fingerprint;
pub mod graph;
pub mod hash;
pub mod ingest;
pub mod jsonl;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod memo;
pub mod onnx;
pub mod paths;
pub mod prime;
pub mod release;
pub mod report;
pub mod review;
pub mod run;
pub mod stat_cache;
pub mod steps;
pub mod store;
pub mod verify;

pub use cli::main;
