//! Copies of a workspace's inputs to run stages in apart from it: the
//! scratch copy of `verify --reproduce` and the experiments of `fabric exp`.

use std::collections::BTreeSet;
use std::path::Path;

use fabric_core::layout::Layout;

/// Copies the manifests, the lock, the workspace's keys and every stage's deps into `to`.
pub fn copy_inputs(workspace: &fabric_core::manifest::Workspace, to: &Path) -> anyhow::Result<()> {
    let root = &workspace.root;
    let mut paths: BTreeSet<std::path::PathBuf> = workspace.sources.iter().cloned().collect();
    paths.insert(Layout::LOCK.into());
    // Steps rerun with the same keys (sanitize's pseudonym key; they stay on
    // this machine, in a directory of its own).
    paths.insert(Layout::KEYS.into());
    for stage in &workspace.stages {
        for dep in &stage.deps {
            match &dep.value {
                fabric_core::manifest::Dep::Path(path) => {
                    paths.insert(path.as_str().into());
                }
                fabric_core::manifest::Dep::Glob { pattern, matcher } => {
                    for file in fabric_core::hash::glob_files(root, pattern, matcher, None)? {
                        paths.insert(file.entry.into());
                    }
                }
            }
        }
    }
    for path in paths {
        let source = root.join(&path);
        if !source.exists() {
            continue;
        }
        for entry in walkdir::WalkDir::new(&source) {
            let entry = entry?;
            let target = to.join(entry.path().strip_prefix(root)?);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let kind = entry.file_type();
            if kind.is_dir() {
                std::fs::create_dir_all(&target)?;
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
            }
        }
    }
    Ok(())
}
