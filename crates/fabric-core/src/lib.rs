//! The runner core of Prime Fabric: everything a pipeline needs that does
//! not know what the pipeline is about. It depends on no ONNX Runtime, HTTP
//! server or Prime Brain code; those crates plug their steps in through
//! [`steps::Registry`].
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
//!   `RunCache` traits; [`store::TieredStorage`] puts the workspace's store
//!   in front of a second (shared) tier.
//! - [`run`] carries a run out, along this path:
//!
//!   ```text
//!   Planner::decide ──► Runner (scheduler) ──► Executor::submit / next_event
//!   (run::plan: up to    (run: each stage when    (run::executor: local processes,
//!    date / restore /     its upstream is done;    or Slurm jobs; another cluster's
//!    run, and why)        restore, or run)          executor plugs in here)
//!                                                   └─ built-in steps in-process, or as
//!                                                      `fabric __step` jobs (run::step)
//!   ```
//!
//!   Commands are watched by a per-run [`run::supervisor`] process so none
//!   outlives a killed `fabric`; a new step plugs into the [`steps`]
//!   registry, a new storage tier behind [`store::ObjectStore`] and
//!   [`store::RunCache`] (as the far tier of a [`store::TieredStorage`]); [`memo`] keeps
//!   a step's per-input-file results between runs; [`run::noop`] keeps what
//!   an "all up to date" verdict rested on, so an unchanged workspace is
//!   answered without planning.
//! - [`release`] publishes immutable releases and the changelog; [`verify`]
//!   checks releases, changelog and lock for CI; [`review`] binds a person's
//!   verdicts to the file they are about.
//! - [`report`] turns run events into terminal bars, plain lines or JSON.

pub mod atomic;
pub mod diagnostic;
pub mod digest;
pub mod fingerprint;
pub mod graph;
pub mod hash;
pub mod jsonl;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod memo;
pub mod paths;
pub mod release;
pub mod report;
pub mod review;
pub mod run;
pub mod stat_cache;
pub mod steps;
pub mod store;
pub mod verify;
