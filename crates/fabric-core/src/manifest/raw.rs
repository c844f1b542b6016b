//! The manifest files exactly as written: serde structs over the TOML, with
//! spans kept so that later validation can point at the offending text.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `Fabric.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkspaceFile {
    pub workspace: Option<RawWorkspace>,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub stage: BTreeMap<String, Spanned<RawStage>>,
}

/// The `[workspace]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkspace {
    pub name: Option<String>,
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    pub store: Option<String>,
    pub jobs: Option<usize>,
    pub executor: Option<super::execution::ExecutorKind>,
    pub slurm: Option<super::execution::RawSlurm>,
    pub remote: Option<super::remote::RawRemote>,
}

/// A pipeline file (`pipelines/*.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipelineFile {
    pub pipeline: Spanned<RawPipeline>,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub stage: BTreeMap<String, Spanned<RawStage>>,
}

/// The `[pipeline]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub name: Spanned<String>,
    pub description: Option<String>,
}

/// One `[stage.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub cmd: Option<Spanned<String>>,
    pub step: Option<Spanned<String>>,
    pub with: Option<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
    #[serde(default)]
    pub deps: Vec<Spanned<String>>,
    #[serde(default)]
    pub outs: Vec<Spanned<String>>,
    #[serde(default)]
    pub metrics: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: Vec<Spanned<String>>,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    pub wdir: Option<Spanned<String>>,
    pub resources: Option<super::resources::RawResources>,
    pub executor: Option<super::execution::ExecutorKind>,
    pub matrix: Option<super::matrix::RawMatrix>,
    #[serde(default)]
    pub always_run: bool,
    #[serde(default)]
    pub frozen: bool,
    pub description: Option<String>,
}
