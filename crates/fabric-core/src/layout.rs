//! Where Fabric keeps its own files in a workspace: `Fabric.lock` beside the
//! manifest, everything else under `.fabric/` (git-ignored). Every such path
//! is named here and nowhere else.
//!
//! ```text
//! Fabric.lock              the lock (committed)
//! .fabric/lock.journal     the lock's journal of a run in progress or killed
//! .fabric/lock.parsed      the lock as parsed, keyed by its bytes
//! .fabric/manifest.parsed  the validated manifest, keyed by its files
//! .fabric/run.lock         held by the run in progress (and its supervisor)
//! .fabric/state            the stat cache
//! .fabric/noop             the no-op memo
//! .fabric/memo/STAGE[.K]   step memos
//! .fabric/logs/STAGE.log   what each command printed
//! .fabric/tmp/             scratch directories of built-in steps
//! .fabric/store/           the content-addressed store (unless configured)
//! .fabric/keys/            secret keys (sanitize's pseudonym key)
//! .fabric/python/, lib/    ONNX Runtime installed into the workspace
//! .fabric/exp/NAME/        an experiment: its record, log and workspace copy
//! ```

use std::path::{Path, PathBuf};

/// The paths of Fabric's own files in the workspace at `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The directory of Fabric's state, relative to the workspace root.
    pub const STATE_DIR: &'static str = ".fabric";
    /// The lock, relative to the workspace root.
    pub const LOCK: &'static str = "Fabric.lock";
    /// The lock's journal, relative to the workspace root.
    pub const JOURNAL: &'static str = ".fabric/lock.journal";
    /// The store when `[workspace] store` does not name one, relative to the root.
    pub const DEFAULT_STORE: &'static str = ".fabric/store";
    /// The workspace's secret keys (a reproduction copies them), relative to the root.
    pub const KEYS: &'static str = ".fabric/keys";
    /// Where tools are installed into the workspace (ONNX Runtime), relative
    /// to the root: a copy of the workspace links them.
    pub const INSTALLED: [&'static str; 2] = [".fabric/python", ".fabric/lib"];

    /// The layout of the workspace at `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// `.fabric`, holding state, logs and locks.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(Self::STATE_DIR)
    }

    /// `Fabric.lock`, the journal of a run in progress (or interrupted) and
    /// the lock's parsed copy.
    pub fn lock_files(&self) -> crate::lock::LockFiles {
        crate::lock::LockFiles {
            lock: self.root.join(Self::LOCK),
            journal: self.root.join(Self::JOURNAL),
            parsed: self.state_dir().join("lock.parsed"),
        }
    }

    /// The validated manifest's cache.
    pub fn manifest_cache(&self) -> PathBuf {
        self.state_dir().join("manifest.parsed")
    }

    /// The file the run in progress holds locked.
    pub fn run_lock(&self) -> PathBuf {
        self.state_dir().join("run.lock")
    }

    /// The stat cache.
    pub fn stat_cache(&self) -> PathBuf {
        self.state_dir().join("state")
    }

    /// The no-op memo.
    pub fn noop_memo(&self) -> PathBuf {
        self.state_dir().join("noop")
    }

    /// The directory of step memos.
    pub fn step_memos(&self) -> PathBuf {
        self.state_dir().join("memo")
    }

    /// The step memo of stage `stage`.
    pub fn step_memo(&self, stage: &str) -> PathBuf {
        self.step_memos().join(stage)
    }

    /// The experiments of `fabric exp`, one directory each.
    pub fn experiments(&self) -> PathBuf {
        self.state_dir().join("exp")
    }

    /// The directory of command logs.
    pub fn logs(&self) -> PathBuf {
        self.state_dir().join("logs")
    }

    /// Where built-in steps get their scratch directories.
    pub fn scratch(&self) -> PathBuf {
        self.state_dir().join("tmp")
    }

    /// The store: `configured` (relative to the root) or the default.
    pub fn store(&self, configured: Option<&str>) -> PathBuf {
        self.root.join(configured.unwrap_or(Self::DEFAULT_STORE))
    }

    /// The workspace's key called `name`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.root.join(Self::KEYS).join(name)
    }

    /// Where an ONNX Runtime installed into the workspace is looked for: a
    /// pip `--target .fabric/python` install, and a bare library in
    /// `.fabric/lib`.
    pub fn onnx_runtime_dirs(&self) -> [PathBuf; 2] {
        let state = self.state_dir();
        [state.join("python/onnxruntime/capi"), state.join("lib")]
    }
}
