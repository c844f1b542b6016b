//! Is a stage up to date? Computes a stage's current [`Inputs`] from the
//! workspace and compares them (and its outs) with the lock.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use litemap::LiteMap;

use crate::digest::Digest;
use crate::fingerprint::{ActionKey, DirtyReason, Inputs, MISSING, canonical_json, platform};
use crate::hash::{Content, Hasher, TreeEntry};
use crate::lock::LockEntry;
use crate::manifest::{Action, Dep, Stage};
use crate::steps::Registry;

/// The current inputs of `stage`, hashing its deps.
pub fn inputs(root: &Path, registry: &Registry, hasher: &Hasher, stage: &Stage) -> io::Result<Inputs> {
    hash_inputs(root, registry, hasher, stage).map(|(inputs, _)| inputs)
}

/// The current inputs of `stage` and what each dep holds (in declaration
/// order), for steps that look at their deps file by file.
pub fn hash_inputs(
    root: &Path,
    registry: &Registry,
    hasher: &Hasher,
    stage: &Stage,
) -> io::Result<(Inputs, Vec<Content>)> {
    let (action, with, platform, facts) = match &stage.action {
        Action::Cmd(cmd) => (
            ActionKey::Cmd {
                cmd: cmd.clone(),
                wdir: stage.wdir.as_ref().map(|w| w.to_string()).unwrap_or_default(),
            },
            String::new(),
            platform(),
            BTreeMap::new(),
        ),
        Action::Step { name, with } => {
            let step = registry
                .get(name)
                .ok_or_else(|| io::Error::other(format!("unknown step `{name}`")))?;
            (
                ActionKey::Step {
                    step: name.clone(),
                    version: step.version(),
                },
                canonical_json(with),
                String::new(),
                step.facts(root),
            )
        }
    };
    let mut deps = LiteMap::new();
    let mut contents = Vec::with_capacity(stage.deps.len());
    for dep in &stage.deps {
        let content = match &dep.value {
            Dep::Path(path) => hasher.hash(path)?,
            Dep::Glob { pattern, matcher } => hasher.hash_glob(pattern, matcher)?,
        };
        let value = content.digest().map_or_else(|| MISSING.to_string(), |d| d.to_string());
        deps.insert(dep.value.key().to_string(), value);
        contents.push(content);
    }
    let env = stage
        .env
        .iter()
        .map(|name| {
            let value = std::env::var_os(name)
                .map_or_else(|| "unset".to_string(), |v| Digest::of(v.as_encoded_bytes()).short());
            (name.clone(), value)
        })
        .collect();
    let inputs = Inputs {
        action,
        with,
        params: stage
            .params
            .iter()
            .map(|(name, value)| (name.clone(), canonical_json(value)))
            .collect(),
        deps,
        env,
        outs: stage.out_paths().map(|p| p.to_string()).collect(),
        platform,
        facts: facts.into_iter().collect(),
    };
    Ok((inputs, contents))
}

/// The content hash of every file in a stage's deps, by absolute path, from
/// what [`hash_inputs`] found.
pub fn dep_files(root: &Path, stage: &Stage, contents: &[Content]) -> HashMap<PathBuf, Digest> {
    let mut files = HashMap::new();
    for (dep, content) in stage.deps.iter().zip(contents) {
        // A glob's tree is relative to the workspace, a directory's to itself.
        let base = match &dep.value {
            Dep::Path(path) => path.under(root),
            Dep::Glob { .. } => root.to_path_buf(),
        };
        match content {
            Content::Missing => {}
            Content::File { hash, .. } => {
                files.insert(base, *hash);
            }
            Content::Dir { tree, .. } => {
                for entry in &tree.entries {
                    if let TreeEntry::File { path, hash, .. } = entry {
                        files.insert(base.join(path), *hash);
                    }
                }
            }
        }
    }
    files
}

/// Why `stage` runs whatever its inputs: `--force` names it, or it is
/// marked `always_run`.
pub fn unconditional(stage: &Stage, force: &super::Force) -> Option<DirtyReason> {
    if force.covers(&stage.name) {
        Some(DirtyReason::Forced)
    } else if stage.always_run {
        Some(DirtyReason::AlwaysRun)
    } else {
        None
    }
}

/// Whether a stale stage with these reasons may take its outs from the run
/// cache instead of running: not when it runs unconditionally, nor while a
/// stage upstream is still to change (its inputs are not known yet).
pub fn restorable(reasons: &[DirtyReason]) -> bool {
    !reasons.iter().any(|reason| {
        matches!(
            reason,
            DirtyReason::Forced | DirtyReason::AlwaysRun | DirtyReason::UpstreamStale { .. }
        )
    })
}

/// Why the stage differs from its lock entry: changed inputs first, then outs
/// that were edited or deleted since they were recorded. Empty means up to date.
pub fn dirty_reasons(
    hasher: &Hasher,
    stage: &Stage,
    entry: Option<&LockEntry>,
    inputs: &Inputs,
) -> io::Result<Vec<DirtyReason>> {
    let Some(entry) = entry else {
        return Ok(vec![DirtyReason::NeverRan]);
    };
    let fingerprint = inputs.fingerprint();
    if entry.fingerprint != fingerprint {
        let mut reasons = crate::fingerprint::diff(&entry.inputs, inputs);
        if reasons.is_empty() {
            // Same components but another encoding: a fabric upgrade.
            reasons.push(DirtyReason::FactChanged {
                name: "fingerprint format".into(),
                old: Some(entry.fingerprint.short()),
                new: Some(fingerprint.short()),
            });
        }
        return Ok(reasons);
    }
    let mut reasons = Vec::new();
    for out in stage.out_paths() {
        let recorded = entry.outs.get(out.as_str());
        match hasher.hash(out)? {
            Content::Missing => reasons.push(DirtyReason::OutMissing { path: out.to_string() }),
            content => {
                if recorded.map(|r| r.hash) != content.digest() {
                    reasons.push(DirtyReason::OutModified { path: out.to_string() });
                }
            }
        }
    }
    Ok(reasons)
}
