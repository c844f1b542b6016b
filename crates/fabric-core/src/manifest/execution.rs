//! Where stages run: the workspace's executor (`executor = "slurm"` in
//! `[workspace]`, with `[workspace.slurm]`), and a stage's own choice
//! (`executor = "local"` keeps a cheap stage out of the queue). Neither
//! enters a fingerprint: where a stage ran does not change what it made.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::resources::Invalid;

/// An executor a workspace or a stage can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Local processes.
    #[default]
    Local,
    /// Jobs of a Slurm cluster.
    Slurm,
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "local" => Ok(ExecutorKind::Local),
            "slurm" => Ok(ExecutorKind::Slurm),
            _ => Err(format!("`{text}` is not an executor; use `local` or `slurm`")),
        }
    }
}

/// `[workspace.slurm]`: what every Slurm job is submitted with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlurmSettings {
    /// The partition jobs go to, unless a stage's resources name one.
    pub partition: Option<String>,
    /// The account jobs are charged to.
    pub account: Option<String>,
    /// Further `sbatch` options, passed as written (`"--qos=high"`).
    pub sbatch: Vec<String>,
}

/// `sbatch` options Fabric sets itself on every job: the job's name,
/// comment, directory, log and command are how it finds and tracks it.
pub const SET_BY_FABRIC: [&str; 14] = [
    "--job-name",
    "-J",
    "--comment",
    "--chdir",
    "-D",
    "--output",
    "-o",
    "--error",
    "-e",
    "--open-mode",
    "--parsable",
    "--wrap",
    "--wait",
    "-W",
];

/// `[workspace.slurm]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlurm {
    partition: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    #[serde(default)]
    sbatch: Vec<Spanned<String>>,
}

impl RawSlurm {
    /// The checked settings, or every value that is wrong.
    pub fn check(&self) -> Result<SlurmSettings, Vec<Invalid>> {
        let mut invalid = Vec::new();
        let mut name = |value: &Option<Spanned<String>>, key: &str| {
            let value = value.as_ref()?;
            let text = value.get_ref();
            if text.is_empty() || text.chars().any(char::is_whitespace) {
                invalid.push(Invalid {
                    span: value.span(),
                    message: format!("`{key} = {text:?}` is not a Slurm {key} name"),
                    hint: "write the name as `sinfo` or `sacctmgr` shows it, without spaces",
                });
                return None;
            }
            Some(text.clone())
        };
        let partition = name(&self.partition, "partition");
        let account = name(&self.account, "account");
        for option in &self.sbatch {
            let text = option.get_ref();
            let flag = text.split('=').next().unwrap_or_default();
            if !text.starts_with('-') {
                invalid.push(Invalid {
                    span: option.span(),
                    message: format!("`{text}` is not an sbatch option"),
                    hint: "write each option as sbatch takes it, e.g. `sbatch = [\"--qos=high\", \"--constraint=avx2\"]`",
                });
            } else if SET_BY_FABRIC.contains(&flag) {
                invalid.push(Invalid {
                    span: option.span(),
                    message: format!("`{flag}` is set by fabric on every job"),
                    hint: "fabric names each job, sets its directory, log and command, and tracks it by them; remove this option",
                });
            }
        }
        let settings = SlurmSettings {
            partition,
            account,
            sbatch: self.sbatch.iter().map(|o| o.get_ref().clone()).collect(),
        };
        if invalid.is_empty() { Ok(settings) } else { Err(invalid) }
    }
}
