//! The Slurm executor against a real single-node cluster (Debian's
//! slurmctld, slurmd and munge), started on loopback by
//! `scripts/slurm-cluster` for each test and stopped after it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Outcome, Workspace};

/// One cluster at a time: they share the machine's munge daemon.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running cluster, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    _alone: MutexGuard<'static, ()>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// A cluster whose node sees an empty directory at `path`.
    fn start_hiding(path: &Path) -> Cluster {
        Cluster::start_with(&["--hide".as_ref(), path.as_os_str()])
    }

    fn start_with(options: &[&std::ffi::OsStr]) -> Cluster {
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(script())
            .arg("start")
            .arg(dir.path().join("cluster"))
            .args(options)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "the cluster did not start:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let conf = dir.path().join("cluster/slurm.conf");
        assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("SLURM_CONF={}", conf.display())));
        Cluster {
            dir,
            conf,
            _alone: alone,
        }
    }

    /// A Slurm client command talking to this cluster.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// `NAME STATE` of every job the cluster knows, finished ones included.
    fn jobs(&self) -> Vec<(String, String)> {
        let output = self
            .client("squeue")
            .args(["--noheader", "--states=all", "--format=%j %T"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.trim().split_once(' '))
            .map(|(name, state)| (name.to_string(), state.to_string()))
            .collect()
    }

    /// Waits (polling the cluster) until job `name` is running.
    fn until_running(&self, name: &str, run: &mut std::process::Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.jobs().iter().any(|(n, s)| n == name && s == "RUNNING") {
            assert!(run.try_wait().unwrap().is_none(), "the run ended before {name} ran");
            assert!(Instant::now() < deadline, "{name} never ran: {:?}", self.jobs());
            std::thread::yield_now();
        }
    }

    /// What `run` printed, once it ended; fails the test if it is still
    /// running a minute from now (waiting for a job that should be over).
    fn ended_within_a_minute(&self, mut run: std::process::Child) -> Output {
        let deadline = Instant::now() + Duration::from_secs(60);
        while run.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                run.kill().unwrap();
                panic!("fabric still waits for its job a minute later: {:?}", self.jobs());
            }
            std::thread::yield_now();
        }
        run.wait_with_output().unwrap()
    }

    /// `fabric ARGS` in `ws`, using this cluster.
    fn fabric(&self, ws: &Workspace, args: &[&str]) -> Outcome {
        Outcome::from(self.fabric_command(ws, args).output().unwrap())
    }

    fn fabric_command(&self, ws: &Workspace, args: &[&str]) -> Command {
        let mut command = ws.command(args);
        command.env("SLURM_CONF", &self.conf);
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _: Output = Command::new(script())
            .arg("stop")
            .arg(self.dir.path().join("cluster"))
            .output()
            .unwrap();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-cluster")
}

/// A wide graph: a source, twelve stages reading it, one joining them, a
/// built-in step, and a stage that stays local.
const WIDE: &str = r#"[workspace]
name = "wide"

[stage.src]
cmd = "seq 1 500 > data.txt"
outs = ["data.txt"]
[stage.src.resources]
cpus = 2
memory = "300M"
time = "0:10:00"

[stage.join]
cmd = "cat w/*.txt | sort -n > joined.txt"
deps = ["w"]
outs = ["joined.txt"]

[stage.sim]
step = "prime.simulate"
outs = ["raw"]
[stage.sim.with]
users = 2
sessions_per_user = 1
snapshots_per_session = 8

[stage.quick]
cmd = "echo local > quick.txt"
outs = ["quick.txt"]
executor = "local"
"#;

fn wide(ws: &Workspace) {
    let mut manifest = WIDE.to_string();
    for i in 0..12 {
        manifest.push_str(&format!(
            "\n[stage.w{i}]\ncmd = \"mkdir -p w && awk 'NR % 12 == {i}' data.txt > w/{i}.txt\"\ndeps = [\"data.txt\"]\nouts = [\"w/{i}.txt\"]\n"
        ));
    }
    manifest = manifest.replace(
        "deps = [\"w\"]",
        &format!(
            "deps = [{}]",
            (0..12).map(|i| format!("\"w/{i}.txt\"")).collect::<Vec<_>>().join(", ")
        ),
    );
    ws.write("Fabric.toml", &manifest);
}

#[test]
fn every_stage_runs_as_a_slurm_job_and_makes_what_a_local_run_makes() {
    let cluster = Cluster::start();
    let (on_slurm, locally) = (Workspace::new(), Workspace::new());
    wide(&on_slurm);
    wide(&locally);

    let outcome = cluster.fabric(&on_slurm, &["run", "--executor", "slurm", "-j", "8"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    locally.ok(&["run"]);
    for out in ["data.txt", "joined.txt", "quick.txt", "Fabric.lock"] {
        assert_eq!(on_slurm.read(out), locally.read(out), "{out} differs");
    }
    let raw = |ws: &Workspace| {
        let mut files: Vec<(String, String)> = std::fs::read_dir(ws.path("raw"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    assert_eq!(raw(&on_slurm), raw(&locally), "the built-in step's out differs");

    // The cluster's record: each stage but the local one was one job, and
    // every job completed.
    let jobs = cluster.jobs();
    let mut names: Vec<&str> = jobs.iter().map(|(name, _)| name.as_str()).collect();
    names.sort();
    let mut expected: Vec<String> = ["src", "join", "sim"]
        .into_iter()
        .map(String::from)
        .chain((0..12).map(|i| format!("w{i}")))
        .map(|stage| format!("fabric.wide.{stage}"))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(jobs.iter().all(|(_, state)| state == "COMPLETED"), "{jobs:?}");

    // The stage's resources were asked of Slurm.
    let asked = cluster
        .client("squeue")
        .args([
            "--noheader",
            "--states=all",
            "--name=fabric.wide.src",
            "--format=%C %m %l",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&asked.stdout).trim(), "2 300M 10:00");

    // Up to date: nothing is submitted.
    let again = cluster.fabric(&on_slurm, &["run", "--executor", "slurm"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(cluster.jobs().len(), jobs.len());
}

#[test]
fn failures_name_the_job_and_its_log_and_keep_going_runs_the_rest() {
    let cluster = Cluster::start();
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        r#"[workspace]
name = "bad"
executor = "slurm"

[stage.fails]
cmd = "echo boom; exit 3"
outs = ["fails.txt"]

[stage.below]
cmd = "cp fails.txt below.txt"
deps = ["fails.txt"]
outs = ["below.txt"]

[stage.killed]
cmd = "kill -9 $$"
outs = ["killed.txt"]

[stage.silent]
cmd = "true"
outs = ["never-written.txt"]

[stage.timed]
cmd = "sleep 600"
outs = ["timed.txt"]
[stage.timed.resources]
time = 1

[stage.hog]
cmd = """python3 -c "import time; held = b'x' * (400 << 20); time.sleep(600)" """
outs = ["hog.txt"]
[stage.hog.resources]
memory = "50M"

[stage.fine]
cmd = "echo ok > fine.txt"
outs = ["fine.txt"]
"#,
    );
    let outcome = cluster.fabric(&ws, &["run", "--keep-going", "-j", "8"]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let said = &outcome.stderr;
    let line = |stage: &str| {
        said.lines()
            .find(|l| l.starts_with(&format!("failed {stage}")))
            .unwrap_or_else(|| panic!("no failure line for {stage}:\n{said}"))
            .to_string()
    };
    let fails = line("fails");
    assert!(fails.contains("command exited with status 3 (Slurm job "), "{fails}");
    assert!(fails.contains("log: .fabric/logs/fails.log"), "{fails}");
    assert!(said.contains("boom"), "the log's tail is shown:\n{said}");
    assert!(line("killed").contains("killed by a signal (9) (Slurm job "), "{said}");
    assert!(line("timed").contains("reached its time limit"), "{said}");
    let hog = line("hog");
    assert!(hog.contains("ran out of memory (slurmstepd"), "{hog}");
    assert!(hog.contains("raise `memory` in the stage's resources"), "{hog}");
    assert!(
        line("silent").contains("declared out `never-written.txt` was not created"),
        "{said}"
    );
    assert!(said.contains("skipped below"), "{said}");
    assert_eq!(ws.read("fine.txt"), "ok\n");
    let lock = ws.read("Fabric.lock");
    assert!(lock.contains("[stage.fine]") && !lock.contains("[stage.fails]") && !lock.contains("[stage.timed]"));
    assert!(!lock.contains("[stage.hog]"), "{lock}");
}

/// A node that does not mount the workspace's filesystem cannot start the
/// job (no directory, no log there): the stage says where to look.
#[test]
fn a_job_on_a_node_that_cannot_see_the_workspace_says_so() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[workspace]\nname = \"blind\"\nexecutor = \"slurm\"\n\n[stage.one]\ncmd = \"echo one > one.txt\"\nouts = [\"one.txt\"]\n",
    );
    let cluster = Cluster::start_hiding(ws.root());
    let outcome = cluster.fabric(&ws, &["run"]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let said = &outcome.stderr;
    assert!(
        said.contains("Slurm job ") && said.contains("could not be started on localhost"),
        "{said}"
    );
    assert!(
        said.contains("no log at .fabric/logs/one.log: the job ran where this workspace is not visible?"),
        "{said}"
    );
    assert!(!ws.path("one.txt").exists());
    assert!(!ws.path("Fabric.lock").exists() || !ws.read("Fabric.lock").contains("[stage.one]"));
}

#[test]
fn an_interrupted_run_cancels_its_jobs_and_a_killed_ones_jobs_are_cancelled_by_the_next() {
    let cluster = Cluster::start();
    let ws = Workspace::new();
    let manifest = |cmd: &str| {
        format!(
            "[workspace]\nname = \"cut\"\nexecutor = \"slurm\"\n\n[stage.long]\ncmd = \"{cmd}\"\nouts = [\"long.txt\"]\n"
        )
    };
    ws.write("Fabric.toml", &manifest("sleep 600; echo late > long.txt"));

    // Ctrl-C: the job is cancelled and nothing recorded.
    let mut run = cluster
        .fabric_command(&ws, &["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cluster.until_running("fabric.cut.long", &mut run);
    // SAFETY: sending a signal to a child process.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    // The job is cancelled, so fabric ends long before the job would have.
    let ended = cluster.ended_within_a_minute(run);
    assert_eq!(
        ended.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    assert_eq!(
        cluster.jobs(),
        [("fabric.cut.long".to_string(), "CANCELLED".to_string())]
    );
    assert!(!ws.path("Fabric.lock").exists() || !ws.read("Fabric.lock").contains("[stage.long]"));

    // kill -9: the job outlives fabric; the next run cancels it before
    // running the stage again, so it never writes into the new out.
    let mut run = cluster
        .fabric_command(&ws, &["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cluster.until_running("fabric.cut.long", &mut run);
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(
        cluster
            .jobs()
            .iter()
            .any(|(name, state)| name == "fabric.cut.long" && state == "RUNNING")
    );
    ws.write("Fabric.toml", &manifest("echo new > long.txt"));
    let next = cluster.fabric(&ws, &["run"]);
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert!(
        next.stderr.contains("cancelled 1 Slurm job(s) an earlier run"),
        "{}",
        next.stderr
    );
    assert_eq!(ws.read("long.txt"), "new\n");
    assert!(
        cluster.jobs().iter().all(|(_, state)| state != "RUNNING"),
        "{:?}",
        cluster.jobs()
    );
}

/// The default pipeline, every stage a Slurm job (built-in steps as
/// `fabric __step` jobs), records what the repository commits.
#[test]
fn the_default_pipeline_runs_through_slurm_and_records_the_committed_lock() {
    let cluster = Cluster::start();
    let ws = Workspace::new();
    super::prime::like_a_fresh_clone(&ws);
    let outcome = cluster.fabric(&ws, &["run", "--executor", "slurm"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    super::prime::matches_the_committed_lock(&ws);
    let lock = fabric_core::lock::Lock::read(&ws.path("Fabric.lock")).unwrap();
    let jobs = cluster.jobs();
    for stage in lock.stage.keys() {
        let name = format!("fabric.prime-fabric.{stage}");
        assert!(
            jobs.iter().any(|(n, state)| *n == name && state == "COMPLETED"),
            "{stage} did not run as a Slurm job: {jobs:?}"
        );
    }
    assert_eq!(jobs.len(), lock.stage.len(), "one job per stage: {jobs:?}");
}

#[test]
fn a_job_lost_with_its_node_ends_the_stage_with_that_reason() {
    let cluster = Cluster::start();
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[workspace]\nname = \"node\"\nexecutor = \"slurm\"\n\n[stage.long]\ncmd = \"sleep 600; echo late > long.txt\"\nouts = [\"long.txt\"]\n",
    );
    let mut run = cluster
        .fabric_command(&ws, &["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    cluster.until_running("fabric.node.long", &mut run);
    let down = cluster
        .client("scontrol")
        .args(["update", "nodename=localhost", "state=down", "reason=fabric-test"])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let ended = cluster.ended_within_a_minute(run);
    let said = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(1), "{said}");
    assert!(said.contains("was lost with its node (localhost)"), "{said}");
    assert_eq!(
        cluster.jobs(),
        [("fabric.node.long".to_string(), "NODE_FAIL".to_string())]
    );
    assert!(!ws.path("Fabric.lock").exists() || !ws.read("Fabric.lock").contains("[stage.long]"));
}

/// Experiments of a workspace that runs on Slurm send their stages to the
/// cluster too; what they share with the workspace is restored, not submitted.
#[test]
fn experiments_run_their_stages_as_slurm_jobs() {
    let cluster = Cluster::start();
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[workspace]\nname = \"grid\"\nexecutor = \"slurm\"\n\n[params]\np = 0\n\n[stage.base]\ncmd = \"echo base > base.txt\"\nouts = [\"base.txt\"]\n\n[stage.fit]\ncmd = \"cat base.txt > fit.txt; echo ${params.p} >> fit.txt\"\ndeps = [\"base.txt\"]\nouts = [\"fit.txt\"]\n",
    );
    let baseline = cluster.fabric(&ws, &["run"]);
    assert_eq!(baseline.code, 0, "{}", baseline.stderr);
    let grid = cluster.fabric(&ws, &["exp", "run", "--grid", "p=1,2", "-j", "2"]);
    assert_eq!(grid.code, 0, "{}", grid.stderr);
    let count = |name: &str| {
        cluster
            .jobs()
            .iter()
            .filter(|(n, state)| n == name && state == "COMPLETED")
            .count()
    };
    assert_eq!(count("fabric.grid.base"), 1, "{:?}", cluster.jobs());
    assert_eq!(count("fabric.grid.fit"), 3, "{:?}", cluster.jobs());
    let show = cluster.fabric(&ws, &["exp", "show", "--json"]);
    assert_eq!(show.stdout.matches("\"succeeded\"").count(), 2, "{}", show.stdout);
}
