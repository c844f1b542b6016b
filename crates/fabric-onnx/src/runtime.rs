//! Finding and loading ONNX Runtime, and making sessions.
//!
//! `ort` is built with `load-dynamic`: the official shared library from the
//! PyPI wheel `onnxruntime` is opened at run time. The library is looked for,
//! in order:
//! 1. `ORT_DYLIB_PATH` (a file, or a directory holding it; set but wrong is an error);
//! 2. beside the `fabric` executable, or in its `lib/`;
//! 3. under the workspace's `.fabric/` (`.fabric/python/onnxruntime/capi/`,
//!    where the README's set-up installs the wheel, or `.fabric/lib/`);
//! 4. the `onnxruntime` package of `$VIRTUAL_ENV/bin/python`, then of `python3`.
//!
//! Only the ONNX nodes need it; everything else in `fabric` runs without.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

/// How to install the library, for error messages.
pub const INSTALL_HINT: &str = "install it into the workspace with `python3 -m pip install --target .fabric/python onnxruntime==1.31.1` \
(scripts/setup does this), or `pip install onnxruntime==1.31.1`, or point ORT_DYLIB_PATH at libonnxruntime.so";

/// The library file in `dir`, preferring the highest version.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
                .unwrap_or(false)
        })
        .collect();
    found.sort();
    found.pop()
}

fn python_package_dir(python: &str) -> Option<PathBuf> {
    let output = Command::new(python)
        .args([
            "-c",
            "import importlib.util, os; s = importlib.util.find_spec('onnxruntime'); print(os.path.dirname(s.origin) if s and s.origin else '')",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let dir = text.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir).join("capi"))
}

/// Finds the library, or explains where it looked and what to do.
pub fn find_library(workspace: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(value) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(&value);
        let found = if path.is_dir() {
            library_in(&path)
        } else {
            Some(path.clone()).filter(|p| p.is_file())
        };
        return found.ok_or_else(|| {
            format!(
                "ORT_DYLIB_PATH is set to {} but no libonnxruntime.so is there; fix or unset it",
                path.display()
            )
        });
    }
    let mut searched = Vec::new();
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.to_path_buf());
        candidates.push(dir.join("lib"));
    }
    if let Some(root) = workspace {
        candidates.extend(fabric_core::layout::Layout::new(root).onnx_runtime_dirs());
    }
    for dir in candidates {
        if let Some(found) = library_in(&dir) {
            return Ok(found);
        }
        searched.push(dir.display().to_string());
    }
    let mut pythons = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        pythons.push(PathBuf::from(venv).join("bin/python").display().to_string());
    }
    pythons.push("python3".into());
    for python in pythons {
        if let Some(dir) = python_package_dir(&python)
            && let Some(found) = library_in(&dir)
        {
            return Ok(found);
        }
        searched.push(format!("the onnxruntime package of {python}"));
    }
    Err(format!(
        "ONNX Runtime was not found (searched {}); {INSTALL_HINT}",
        searched.join(", ")
    ))
}

/// The version in the library's file name (`libonnxruntime.so.1.31.1` → `1.31.1`).
pub fn library_version(library: &Path) -> String {
    library
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("libonnxruntime.so")
                .trim_start_matches('.')
                .to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment (loaded once, on first use).
pub fn environment(workspace: Option<&Path>) -> Result<&'static Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            let library = find_library(workspace)?;
            let builder = ort::init_from(&library)
                .map_err(|e| format!("cannot load {}: {e}; {INSTALL_HINT}", library.display()))?;
            builder
                .with_name("fabric")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A session over `model` with `threads` intra-op threads and no spinning
/// (stages share the machine; spinning would burn cores other stages need).
pub fn session(workspace: Option<&Path>, model: &[u8], threads: usize) -> anyhow::Result<Session> {
    let environment = environment(workspace).map_err(anyhow::Error::msg)?;
    let session = Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_intra_op_spinning(false)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_memory(model)?;
    Ok(session)
}
