//! End-to-end tests: the real `fabric` binary in temporary workspaces.
//!
//! Stage commands append a line to a counter file outside the workspace, so
//! tests can assert exactly how many times each stage executed.
#![allow(unsafe_code)] // signals sent to child processes

mod corpus;
mod crash;
mod exp;
mod ingest;
mod matrix;
mod noop;
mod onnx;
mod prime;
mod release;
mod remote;
mod runner;
mod slurm;
mod studio;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where `scripts/setup` (run by `scripts/test`) installed ONNX Runtime.
fn ort_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".fabric/python/onnxruntime/capi")
}

/// Commands a passive or learning mode may not issue: the doctrine's table,
/// written out here rather than taken from the code under test.
const INTRUSIVE: [&str; 8] = [
    "transport.play",
    "transport.stop",
    "transport.toggleCycle",
    "transport.setTempo",
    "track.mute",
    "track.solo",
    "arrange.loopSection",
    "arrange.duplicateSection",
];

struct Workspace {
    dir: tempfile::TempDir,
    counters: tempfile::TempDir,
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn from(output: Output) -> Outcome {
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Workspace {
    fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
            counters: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    fn write(&self, relative: &str, text: &str) -> &Workspace {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }

    /// Every file under `dir` (`""`: the whole workspace) outside
    /// `.fabric/`, by workspace-relative path, with its bytes.
    fn files(&self, dir: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        walkdir::WalkDir::new(self.path(dir))
            .into_iter()
            .filter_entry(|e| e.file_name() != ".fabric")
            .map(Result::unwrap)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let name = e
                    .path()
                    .strip_prefix(self.root())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect()
    }

    /// A JSONL file of the workspace, one value per line.
    fn jsonl(&self, relative: &str) -> Vec<serde_json::Value> {
        self.read(relative)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A shell snippet that counts one execution of `name`.
    fn tick(&self, name: &str) -> String {
        format!("echo x >> {}/{name}", self.counters.path().display())
    }

    fn count(&self, name: &str) -> usize {
        std::fs::read_to_string(self.counters.path().join(name))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fabric"));
        command
            .args(args)
            .current_dir(self.root())
            .env("CI", "true")
            .env_remove("NO_COLOR")
            .env_remove("FABRIC_PSEUDONYM_KEY")
            .env("ORT_DYLIB_PATH", ort_dir());
        command
    }

    /// Starts `fabric` in the background, its output captured (not printed
    /// among the test harness's lines).
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn fabric(&self, args: &[&str]) -> Outcome {
        Outcome::from(self.command(args).output().unwrap())
    }

    fn ok(&self, args: &[&str]) -> Outcome {
        let outcome = self.fabric(args);
        assert_eq!(
            outcome.code, 0,
            "fabric {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            outcome.stdout, outcome.stderr
        );
        outcome
    }

    /// A three-stage chain a → b → c plus an independent stage d.
    fn chain(&self) -> &Workspace {
        self.write(
            "Fabric.toml",
            "[workspace]\nname = \"t\"\ninclude = [\"pipelines/*.toml\"]\n\n[params]\nfactor = 2\n",
        );
        self.write("data/in.txt", "1\n2\n3\n");
        self.write("data/other.txt", "x\n");
        self.write(
            "pipelines/chain.toml",
            &format!(
                r#"[pipeline]
name = "chain"

[stage.a]
cmd = "{} && sort -r data/in.txt > build/a.txt"
deps = ["data/in.txt"]
outs = ["build/a.txt"]

[stage.b]
cmd = "{} && awk '{{print $1 * ${{params.factor}}}}' build/a.txt > build/b.txt"
deps = ["build/a.txt"]
outs = ["build/b.txt"]

[stage.c]
cmd = "{} && mkdir -p build/c && cp build/b.txt build/c/copy.txt && echo '{{\"lines\": 3}}' > build/c.json"
deps = ["${{stage.b.outs[0]}}"]
outs = ["build/c"]
metrics = ["build/c.json"]

[stage.d]
cmd = "{} && cp data/other.txt build/d.txt"
deps = ["data/other.txt"]
outs = ["build/d.txt"]
"#,
                self.tick("a"),
                self.tick("b"),
                self.tick("c"),
                self.tick("d")
            ),
        )
    }

    /// `fabric simulate` of `users` × `sessions` sessions of `snapshots` into `dir`.
    fn simulate(&self, dir: &str, users: usize, sessions: usize, snapshots: usize) {
        let (users, sessions, snapshots) = (users.to_string(), sessions.to_string(), snapshots.to_string());
        self.ok(&[
            "simulate",
            "--output-dir",
            dir,
            "--users",
            &users,
            "--sessions-per-user",
            &sessions,
            "--snapshots-per-session",
            &snapshots,
        ]);
    }

    /// Runs git in the workspace (with a fixed identity) and asserts success.
    fn git(&self, args: &[&str]) {
        let output = Command::new("git")
            .args(args)
            .current_dir(self.root())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@localhost")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@localhost")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn counts(&self) -> [usize; 4] {
        [self.count("a"), self.count("b"), self.count("c"), self.count("d")]
    }
}

/// The DOM of `url` after headless Chromium ran its scripts for at most
/// `budget_ms` of virtual time (Chromium is installed by scripts/setup).
fn headless_chromium(url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium is installed by scripts/setup");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
