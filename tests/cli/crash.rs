//! R1: `kill -9` of `fabric run` at random moments. After every kill the lock
//! parses and vouches only for outs that match it, every store object holds
//! the content its name says, and the next run completes.
//!
//! `FABRIC_CRASH_TRIALS` sets the number of trials (default 12; the script
//! `scripts/crash-trials` runs 100) and `FABRIC_CRASH_SEED` the kill moments.

use std::process::Stdio;
use std::time::Duration;

use fabric_core::hash::Hasher;
use fabric_core::lock::{Lock, LockFiles};
use fabric_core::paths::RelPath;
use fabric_core::stat_cache::StatCache;
use rand::{RngExt, SeedableRng};

use super::Workspace;

/// Six stages in two chains, each writing a directory of files and leaving
/// a background writer behind that would change an out after the stage
/// ended (it must be killed, with the stage or with a killed fabric).
fn crashing_workspace(ws: &Workspace) {
    let mut manifest = String::from("[params]\nv = 0\n\n");
    for chain in ["a", "b"] {
        for step in 0..3 {
            let name = format!("{chain}{step}");
            let dep = if step == 0 {
                String::new()
            } else {
                format!("deps = [\"out/{chain}{}\"]\n", step - 1)
            };
            manifest.push_str(&format!(
                "[stage.{name}]\ncmd = \"mkdir -p out/{name}; (sleep 0.3; echo late >> out/{name}/f1) & for i in $(seq 1 40); do seq 1 $((i * 50 + ${{params.v}})) > out/{name}/f$i; done\"\n{dep}outs = [\"out/{name}\"]\n\n"
            ));
        }
    }
    ws.write("Fabric.toml", &manifest);
}

fn check_invariants(ws: &Workspace, trial: usize) {
    Lock::read(&ws.path("Fabric.lock")).unwrap_or_else(|e| panic!("trial {trial}: Fabric.lock corrupt: {e}"));
    let files = LockFiles {
        lock: ws.path("Fabric.lock"),
        journal: ws.path(".fabric/lock.journal"),
        parsed: ws.path(".fabric/lock.parsed"),
    };
    let lock = Lock::load(&files).unwrap_or_else(|e| panic!("trial {trial}: lock corrupt: {e}"));
    let cache = StatCache::load(&ws.path(".fabric/state-check"));
    let hasher = Hasher::new(ws.root(), &cache);
    for (stage, entry) in &lock.stage {
        for (path, record) in &entry.outs {
            let content = hasher.hash(&RelPath::new(path).unwrap()).unwrap();
            assert_eq!(
                content.digest(),
                Some(record.hash),
                "trial {trial}: the lock vouches for a changed out {path} of {stage}"
            );
        }
    }
    let objects = ws.path(".fabric/store/objects");
    if objects.exists() {
        for entry in walkdir::WalkDir::new(&objects).min_depth(2).max_depth(2) {
            let entry = entry.unwrap();
            let name = format!(
                "{}{}",
                entry.path().parent().unwrap().file_name().unwrap().to_string_lossy(),
                entry.file_name().to_string_lossy()
            );
            if name.len() != 64 {
                continue; // an object being written (temporary name)
            }
            let hash = blake3::hash(&std::fs::read(entry.path()).unwrap()).to_hex().to_string();
            assert_eq!(hash, name, "trial {trial}: store object corrupt");
        }
    }
}

#[test]
fn kill_9_at_random_moments_never_corrupts_lock_or_store() {
    let trials: usize = std::env::var("FABRIC_CRASH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(12);
    let ws = Workspace::new();
    crashing_workspace(&ws);
    let seed: u64 = std::env::var("FABRIC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for trial in 0..trials {
        // Revisit earlier values so that restores get interrupted too.
        let v = format!("v={}", rng.random_range(0..4));
        let mut child = ws
            .command(&["run", "-P", &v, "-j", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The random moment: anywhere in the first ~150 ms of the run.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..150_000)));
        let _ = child.kill();
        let _ = child.wait();
        check_invariants(&ws, trial);
        let again = ws.fabric(&["run", "-P", &v]);
        assert_eq!(again.code, 0, "trial {trial}: the next run failed: {}", again.stderr);
        check_invariants(&ws, trial);
        let status = ws.fabric(&["status", "--check", "-P", &v]);
        assert_eq!(
            status.code, 0,
            "trial {trial}: not up to date after recovery: {}",
            status.stdout
        );
    }
}
