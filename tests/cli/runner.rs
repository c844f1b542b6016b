//! The DAG runner: incremental runs, cache, scheduling, commands, diagnostics.

use std::process::Command;

use super::{Outcome, Workspace};

#[test]
fn first_run_runs_everything_and_a_rerun_runs_nothing() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    assert_eq!(ws.counts(), [1, 1, 1, 1]);
    assert_eq!(ws.read("build/b.txt"), "6\n4\n2\n");
    let rerun = ws.ok(&["run"]);
    assert_eq!(ws.counts(), [1, 1, 1, 1], "a no-op run executes nothing");
    assert!(
        rerun.stderr.contains("0 ran, 0 restored, 4 up to date"),
        "{}",
        rerun.stderr
    );
}

#[test]
fn editing_a_dep_runs_exactly_the_stages_downstream_and_reverting_restores() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    ws.write("data/in.txt", "1\n2\n4\n");
    ws.ok(&["run"]);
    assert_eq!(ws.counts(), [2, 2, 2, 1]);
    assert_eq!(ws.read("build/b.txt"), "8\n4\n2\n");

    ws.write("data/in.txt", "1\n2\n3\n");
    let reverted = ws.ok(&["run"]);
    assert_eq!(
        ws.counts(),
        [2, 2, 2, 1],
        "reverting restores from the cache without running"
    );
    assert_eq!(ws.read("build/b.txt"), "6\n4\n2\n");
    assert_eq!(ws.read("build/c/copy.txt"), "6\n4\n2\n");
    assert!(
        reverted.stderr.contains("0 ran, 3 restored, 1 up to date"),
        "{}",
        reverted.stderr
    );
}

#[test]
fn an_edit_that_leaves_an_out_unchanged_stops_there() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    // Same lines, other order: `a` sorts them, so its out is identical.
    ws.write("data/in.txt", "3\n1\n2\n");
    ws.ok(&["run"]);
    assert_eq!(ws.counts(), [2, 1, 1, 1]);
}

#[test]
fn deleting_or_editing_an_out_by_hand_brings_it_back_from_the_store() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    std::fs::remove_dir_all(ws.path("build/c")).unwrap();
    let status = ws.fabric(&["status", "--check"]);
    assert_eq!(status.code, 1);
    assert!(status.stdout.contains("out `build/c` is missing"), "{}", status.stdout);
    ws.write("build/b.txt", "tampered\n");
    let status = ws.fabric(&["status", "--check"]);
    assert!(
        status
            .stdout
            .contains("out `build/b.txt` was modified since it was recorded"),
        "{}",
        status.stdout
    );
    ws.ok(&["run"]);
    assert_eq!(ws.counts(), [1, 1, 1, 1], "outs are restored, not recomputed");
    assert_eq!(ws.read("build/b.txt"), "6\n4\n2\n");
    assert_eq!(ws.read("build/c/copy.txt"), "6\n4\n2\n");
    assert_eq!(ws.fabric(&["status", "--check"]).code, 0);
}

#[test]
fn params_overrides_change_fingerprints_and_reverting_them_restores() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    ws.ok(&["run", "-P", "factor=10"]);
    assert_eq!(ws.counts(), [1, 2, 2, 1], "only stages using the param (and below) run");
    assert_eq!(ws.read("build/b.txt"), "30\n20\n10\n");
    ws.ok(&["run"]);
    assert_eq!(ws.counts(), [1, 2, 2, 1]);
    assert_eq!(ws.read("build/b.txt"), "6\n4\n2\n");

    let unknown = ws.fabric(&["run", "-P", "factr=3"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("unknown parameter `factr`"),
        "{}",
        unknown.stderr
    );
    assert!(unknown.stderr.contains("did you mean `factor`?"), "{}", unknown.stderr);

    // A value that is not of the declared type is a usage error, before anything runs.
    for wrong in ["factor=abc", "factor=2.5", "factor=true"] {
        let mistyped = ws.fabric(&["run", "-P", wrong]);
        assert_eq!(mistyped.code, 2, "{wrong}: {}", mistyped.stderr);
        assert!(
            mistyped.stderr.contains("`factor` is declared as an integer (2)")
                && mistyped.stderr.contains("to change the type on purpose"),
            "{}",
            mistyped.stderr
        );
    }
    assert_eq!(ws.counts(), [1, 2, 2, 1], "nothing ran");
}

#[test]
fn params_overrides_take_the_declared_type() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[params]\nname = \"x\"\nrate = 0.5\nflag = false\n\n[stage.echo]\ncmd = \"echo ${params.name} ${params.rate} ${params.flag} > out.txt\"\nouts = [\"out.txt\"]\n",
    );
    // A string param takes the text as it is; a float takes an integer; a boolean a boolean.
    ws.ok(&["run", "-P", "name=10", "-P", "rate=1", "-P", "flag=true"]);
    assert_eq!(ws.read("out.txt"), "10 1 true\n");
    let mistyped = ws.fabric(&["run", "-P", "rate=fast"]);
    assert_eq!(mistyped.code, 2);
    assert!(
        mistyped.stderr.contains("`rate` is declared as a float (0.5)"),
        "{}",
        mistyped.stderr
    );
}

#[test]
fn comments_and_key_order_do_not_change_fingerprints() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    let original = ws.read("pipelines/chain.toml");
    let reordered = original.replace(
        "[stage.d]\ncmd =",
        "# a comment about d\n[stage.d]\n# outs first now\nouts = [\"build/d.txt\"]\ncmd =",
    );
    let reordered = reordered.replacen("outs = [\"build/d.txt\"]\n\"#", "\"#", 1);
    let reordered = {
        // drop the second (original) outs line of stage d
        let mut parts: Vec<&str> = reordered.rsplitn(2, "outs = [\"build/d.txt\"]\n").collect();
        parts.reverse();
        parts.concat()
    };
    assert_ne!(reordered, original);
    ws.write("pipelines/chain.toml", &reordered);
    ws.ok(&["run"]);
    assert_eq!(ws.counts(), [1, 1, 1, 1]);
}

#[test]
fn declared_env_enters_the_fingerprint_and_undeclared_env_does_not() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        &format!(
            "[stage.e]\ncmd = \"{} && echo \\\"$THEME\\\" > e.txt\"\nouts = [\"e.txt\"]\nenv = [\"THEME\"]\n",
            ws.tick("e")
        ),
    );
    let run = |theme: &str, other: &str| {
        let output = ws
            .command(&["run"])
            .env("THEME", theme)
            .env("UNRELATED", other)
            .output()
            .unwrap();
        assert!(output.status.success());
    };
    run("dark", "1");
    run("dark", "2");
    assert_eq!(ws.count("e"), 1);
    run("light", "2");
    assert_eq!(ws.count("e"), 2);
    assert_eq!(ws.read("e.txt"), "light\n");
    let explain = Outcome::from(ws.command(&["explain", "e"]).env("THEME", "blue").output().unwrap());
    assert!(
        explain.stdout.contains("environment variable `THEME` changed"),
        "{}",
        explain.stdout
    );
}

/// `[stage.NAME.resources]` is for a cluster scheduler: the local executor
/// runs the stage as usual, and a changed request reruns nothing.
#[test]
fn resources_are_accepted_and_do_not_change_what_a_stage_makes() {
    let ws = Workspace::new();
    let manifest = |cpus: u32| {
        format!(
            "[stage.r]\ncmd = \"{} && echo made > r.txt\"\nouts = [\"r.txt\"]\n\n[stage.r.resources]\ncpus = {cpus}\nmemory = \"2G\"\ngpus = 0\ntime = \"0:30:00\"\npartition = \"debug\"\n",
            ws.tick("r")
        )
    };
    ws.write("Fabric.toml", &manifest(2));
    ws.ok(&["run"]);
    assert_eq!(ws.count("r"), 1);
    ws.write("Fabric.toml", &manifest(8));
    ws.ok(&["run"]);
    assert_eq!(ws.count("r"), 1);
    assert_eq!(ws.read("r.txt"), "made\n");
}

#[test]
fn a_failed_stage_is_not_recorded_and_its_downstream_does_not_run() {
    let ws = Workspace::new();
    ws.chain();
    let pipeline = ws.read("pipelines/chain.toml").replace("sort -r data/in.txt", "false");
    ws.write("pipelines/chain.toml", &pipeline);
    let failed = ws.fabric(&["run", "-j", "1", "--keep-going"]);
    assert_eq!(failed.code, 1);
    assert_eq!(ws.counts(), [1, 0, 0, 1], "b and c skipped, independent d finished");
    assert!(
        failed.stderr.contains("failed a: command exited with status 1"),
        "{}",
        failed.stderr
    );
    assert!(failed.stderr.contains("1 failed (a)"), "{}", failed.stderr);
    let lock = ws.read("Fabric.lock");
    assert!(!lock.contains("[stage.a]"), "a failed stage is not recorded:\n{lock}");
    assert!(lock.contains("[stage.d]"));
}

#[test]
fn without_keep_going_a_failure_cancels_stages_not_yet_started() {
    let ws = Workspace::new();
    ws.chain();
    let pipeline = ws.read("pipelines/chain.toml").replace("sort -r data/in.txt", "false");
    ws.write("pipelines/chain.toml", &pipeline);
    let failed = ws.fabric(&["run", "-j", "1"]);
    assert_eq!(failed.code, 1);
    assert_eq!(ws.counts(), [1, 0, 0, 0]);
    assert!(failed.stderr.contains("cancelled d"), "{}", failed.stderr);
}

#[test]
fn a_missing_declared_out_fails_the_stage_naming_it() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.s]\ncmd = \"touch one\"\nouts = [\"one\", \"two\"]\n",
    );
    let failed = ws.fabric(&["run"]);
    assert_eq!(failed.code, 1);
    assert!(
        failed.stderr.contains("declared out `two` was not created"),
        "{}",
        failed.stderr
    );
}

#[test]
fn independent_stages_run_in_parallel() {
    let ws = Workspace::new();
    // Each stage announces itself, then waits (bounded) for the other: with
    // one job at a time the first would give up and fail.
    let stage = |me: &str, other: &str| {
        format!(
            "[stage.{me}]\ncmd = \"touch {me}.started; i=0; while [ ! -e {other}.started ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; test -e {other}.started && touch {me}.out\"\nouts = [\"{me}.out\"]\n"
        )
    };
    ws.write("Fabric.toml", &format!("{}\n{}", stage("p", "q"), stage("q", "p")));
    ws.ok(&["run", "-j", "2"]);
    assert!(ws.path("p.out").exists() && ws.path("q.out").exists());
}

#[test]
fn a_second_run_on_the_same_workspace_fails_clearly_or_waits() {
    let ws = Workspace::new();
    let gate = ws.counters.path().join("gate");
    ws.write(
        "Fabric.toml",
        &format!(
            "[stage.slow]\ncmd = \"touch started; while [ ! -e {} ]; do sleep 0.02; done; touch slow.out\"\nouts = [\"slow.out\"]\nalways_run = true\n",
            gate.display()
        ),
    );
    let mut first = ws.spawn(&["run"]);
    while !ws.path("started").exists() {
        std::thread::yield_now();
        assert!(first.try_wait().unwrap().is_none(), "first run ended early");
    }
    let second = ws.fabric(&["run"]);
    assert_eq!(second.code, 1);
    assert!(
        second.stderr.contains("another `fabric run` is using this workspace"),
        "{}",
        second.stderr
    );
    let waiting = ws.spawn(&["run", "--wait"]);
    std::fs::write(&gate, "").unwrap();
    assert!(first.wait().unwrap().success());
    let waited = waiting.wait_with_output().unwrap();
    assert!(waited.status.success());
    assert!(String::from_utf8_lossy(&waited.stderr).contains("ran slow"));
}

#[test]
fn sigterm_ends_running_commands_and_leaves_the_lock_consistent() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.quick]\ncmd = \"echo q > quick.out\"\nouts = [\"quick.out\"]\n\n[stage.sleepy]\ncmd = \"echo $$ > sleepy.pid; sleep 300; touch sleepy.out\"\nouts = [\"sleepy.out\"]\nafter = [\"quick\"]\n",
    );
    let mut run = ws.spawn(&["run", "-j", "1"]);
    let shell = pid_written(&ws, &mut run, "sleepy.pid");
    // SAFETY: sending a signal to a child process.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let ended = run.wait_with_output().unwrap();
    assert_eq!(ended.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&ended.stderr).contains("failed sleepy: interrupted"));
    // Every process of the command's group ends (zombies left to a
    // non-reaping init do not count).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !live_members_of_group(shell).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stage's process group survived SIGTERM"
        );
        std::thread::yield_now();
    }
    let lock = ws.read("Fabric.lock");
    assert!(
        lock.contains("[stage.quick]") && !lock.contains("[stage.sleepy]"),
        "{lock}"
    );
    assert_eq!(ws.fabric(&["status", "--check"]).code, 1);
}

/// After `kill -9` of `fabric`, nothing its commands started survives a
/// second — the shell, a subshell it waits for, work it put in the
/// background — so nothing writes into an out afterwards.
#[test]
fn after_kill_9_no_process_of_a_command_survives_and_nothing_writes_into_outs() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"mkdir -p out && echo $$ > a.pid && (sleep 30; echo late > out/b.txt) & (sleep 30; echo late > out/c.txt); echo normal\"\nouts = [\"out\"]\n",
    );
    let mut run = ws.spawn(&["run"]);
    let group = pid_written(&ws, &mut run, "a.pid");
    // Both subshells have started once the group has four members.
    until(|| live_members_of_group(group).len() >= 4);
    assert!(
        gone_within_a_second_of_kill_9(&mut run, || live_members_of_group(group).is_empty()),
        "still alive a second after fabric died: {:?}",
        live_members_of_group(group)
    );
    assert!(!ws.path("out/b.txt").exists() && !ws.path("out/c.txt").exists());
}

/// Returns once `done` holds (the test's own timeout bounds the wait).
fn until(done: impl Fn() -> bool) {
    while !done() {
        std::thread::yield_now();
    }
}

/// Kills `run` (`kill -9`) and tells whether `gone` holds within a second.
fn gone_within_a_second_of_kill_9(run: &mut std::process::Child, gone: impl Fn() -> bool) -> bool {
    run.kill().unwrap();
    run.wait().unwrap();
    let killed = std::time::Instant::now();
    while !gone() {
        if killed.elapsed() > std::time::Duration::from_secs(1) {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// A process that left its command's group (`setsid`) still carries the
/// run's mark in its environment: after `kill -9` of `fabric` the
/// supervisor ends it too. (The same sweep ends a command `fabric` died
/// too early to register.)
#[test]
fn after_kill_9_a_process_that_left_its_group_is_ended_too() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"mkdir -p out; setsid sh -c 'sleep 30; echo late > out/late.txt' & echo $! > escaped.pid; sleep 30\"\nouts = [\"out\"]\n",
    );
    let mut run = ws.spawn(&["run"]);
    let escaped = pid_written(&ws, &mut run, "escaped.pid");
    until(|| process(escaped).is_none_or(|p| p.group == escaped));
    let ended = gone_within_a_second_of_kill_9(&mut run, || !process_is_live(escaped));
    // SAFETY: ending the process this test started, should it have survived.
    unsafe { libc::kill(escaped, libc::SIGKILL) };
    assert!(
        ended,
        "the process that left its group outlived the killed run by a second"
    );
    assert!(!ws.path("out/late.txt").exists());
}

/// After `kill -9` of `fabric`, the workspace passes to the next run only
/// once the killed run's commands are dead: its supervisor holds the run
/// lock until then. The test keeps the supervisor from acting (it holds a
/// second write end of the supervisor's pipe, so the supervisor does not
/// see `fabric` die) to stand for a supervisor the machine is slow to
/// schedule; the next run waits for it.
#[test]
fn the_run_after_a_kill_9_waits_until_the_killed_runs_commands_are_dead() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[params]\nnap = 30\n\n[stage.a]\ncmd = \"mkdir -p out; echo early > out/f; if [ ${params.nap} -gt 0 ]; then (sleep 30; echo late >> out/f) & echo $! > writer.pid; sleep 30; fi\"\nouts = [\"out\"]\n",
    );
    let mut run = ws.spawn(&["run"]);
    let writer = pid_written(&ws, &mut run, "writer.pid");
    let supervisor = supervisor_of(run.id() as i32);
    let held_open = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{supervisor}/fd/0"))
        .unwrap();
    run.kill().unwrap();
    run.wait().unwrap();
    let mut next = ws.spawn(&["run", "-P", "nap=0"]);
    let mut stderr = std::io::BufReader::new(next.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    assert!(first.starts_with("waiting for the commands of an ended run"), "{first}");
    assert!(process_is_live(writer), "the writer runs while the supervisor waits");
    drop(held_open);
    let done = next.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0));
    assert!(
        !process_is_live(writer),
        "the next run began beside the killed run's writer"
    );
    assert_eq!(ws.read("out/f"), "early\n");
    assert_eq!(ws.fabric(&["status", "--check", "-P", "nap=0"]).code, 0);
}

/// A run that ends frees the workspace as it exits: its supervisor, which
/// shares the run lock, has ended by then too.
#[test]
fn a_finished_run_leaves_the_workspace_free() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"echo a > a.txt\"\nouts = [\"a.txt\"]\n",
    );
    for _ in 0..5 {
        ws.ok(&["run", "--force"]);
        let lock = std::fs::File::open(ws.path(".fabric/run.lock")).unwrap();
        assert!(
            lock.try_lock().is_ok(),
            "the run lock is still held after fabric exited"
        );
    }
}

/// What a command prints on stdout and stderr goes to its log in order,
/// a last line without a newline included.
#[test]
fn a_commands_output_is_logged_in_order_to_its_last_unended_line() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"echo one; echo two >&2; echo three; printf four\"\n",
    );
    ws.ok(&["run"]);
    assert_eq!(ws.read(".fabric/logs/a.log"), "one\ntwo\nthree\nfour");
}

/// A process that left the command's group but holds its output pipe (a
/// daemon) does not hold the stage: it ends with its shell.
#[test]
fn a_process_outside_the_group_holding_the_output_does_not_hold_the_stage() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"setsid sleep 60 & echo $! > daemon.pid; echo done\"\n",
    );
    let started = std::time::Instant::now();
    ws.ok(&["run"]);
    let took = started.elapsed();
    let daemon: i32 = ws.read("daemon.pid").trim().parse().unwrap();
    // SAFETY: ending the process this test started.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    assert!(
        took < std::time::Duration::from_secs(30),
        "the stage waited for the daemon: {took:?}"
    );
    assert_eq!(ws.read(".fabric/logs/a.log"), "done\n");
}

/// The pid of the supervisor `fabric` (pid `parent`) started.
fn supervisor_of(parent: i32) -> i32 {
    processes()
        .into_iter()
        .find(|p| {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
            p.parent == parent && cmdline.split(|b| *b == 0).any(|arg| arg == b"__supervise")
        })
        .unwrap_or_else(|| panic!("fabric (pid {parent}) has no supervisor"))
        .pid
}

fn process_is_live(pid: i32) -> bool {
    process(pid).is_some_and(|p| p.state != "Z")
}

/// A stage ends with its shell: a writer it left in the background is
/// killed then, so nothing changes an out after it was hashed and recorded.
#[test]
fn background_work_a_command_leaves_behind_ends_with_its_stage() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"echo $$ > a.pid; mkdir -p out; echo first > out/f; (sleep 0.3; echo late >> out/f) &\"\nouts = [\"out\"]\n",
    );
    ws.ok(&["run"]);
    let group: i32 = ws.read("a.pid").trim().parse().unwrap();
    // The stage ended only once nothing of its command ran.
    assert_eq!(live_members_of_group(group), Vec::<i32>::new());
    assert_eq!(ws.read("out/f"), "first\n");
    assert_eq!(ws.fabric(&["status", "--check"]).code, 0);
}

/// Pids of processes in process group `group` that are not zombies.
fn live_members_of_group(group: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.state != "Z" && p.group == group)
        .map(|p| p.pid)
        .collect()
}

/// A process as `/proc/PID/stat` describes it (read here independently of
/// the code under test).
struct Process {
    pid: i32,
    state: String,
    parent: i32,
    group: i32,
}

fn process(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state ppid pgrp ...
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    Some(Process {
        pid,
        state: fields.first()?.to_string(),
        parent: fields.get(1)?.parse().ok()?,
        group: fields.get(2)?.parse().ok()?,
    })
}

fn processes() -> Vec<Process> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| process(entry.file_name().to_string_lossy().parse().ok()?))
        .collect()
}

/// Waits until a command of `run` wrote its pid into `file`, and returns it.
fn pid_written(ws: &Workspace, run: &mut std::process::Child, file: &str) -> i32 {
    while !ws.path(file).exists() || ws.read(file).trim().is_empty() {
        assert!(run.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::yield_now();
    }
    ws.read(file).trim().parse().unwrap()
}

#[test]
fn dry_run_explains_the_plan_without_doing_anything() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    ws.write("data/in.txt", "9\n");
    let plan = ws.ok(&["run", "--dry-run"]);
    assert_eq!(ws.counts(), [1, 1, 1, 1]);
    let lines: Vec<&str> = plan.stdout.lines().collect();
    assert!(
        lines[0].starts_with("run         a: dep `data/in.txt` changed"),
        "{}",
        plan.stdout
    );
    assert!(
        lines.contains(&"run         b: upstream stage `a` will run first"),
        "{}",
        plan.stdout
    );
    assert!(lines.contains(&"up to date  d"), "{}", plan.stdout);
    ws.write("data/in.txt", "1\n2\n3\n");
    let restore = ws.ok(&["run", "--dry-run", "--force=d"]);
    assert!(restore.stdout.contains("up to date  a"), "{}", restore.stdout);
    assert!(
        restore.stdout.contains("run         d: it was forced with --force"),
        "{}",
        restore.stdout
    );

    // Reasons are literally true: an upstream stage that will be restored
    // says so, and a stage whose last run failed is not "never run".
    ws.ok(&["run", "-P", "factor=3"]);
    let back = ws.ok(&["run", "--dry-run"]);
    assert!(back.stdout.contains("restore     b: "), "{}", back.stdout);
    assert!(
        back.stdout
            .contains("run         c: upstream stage `b` will be restored from the cache first"),
        "{}",
        back.stdout
    );
}

#[test]
fn after_a_failed_rerun_the_reason_does_not_claim_the_stage_never_ran() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.s]\ncmd = \"test \\\"$(cat flag.txt)\\\" != bad && cp flag.txt out.txt\"\ndeps = [\"flag.txt\"]\nouts = [\"out.txt\"]\n",
    );
    ws.write("flag.txt", "good\n");
    ws.ok(&["run"]);
    ws.write("flag.txt", "bad\n");
    assert_eq!(ws.fabric(&["run"]).code, 1);
    ws.write("flag.txt", "good\n");
    let plan = ws.ok(&["run", "--dry-run"]);
    assert!(
        plan.stdout.contains(
            "restore     s: it has no entry in Fabric.lock (it never ran successfully, or its last run failed or was interrupted)"
        ),
        "{}",
        plan.stdout
    );
}

#[test]
fn force_runs_up_to_date_stages() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    ws.ok(&["run", "--force=b"]);
    assert_eq!(
        ws.counts(),
        [1, 2, 1, 1],
        "b reran; its outs were identical so c stayed up to date"
    );
    ws.ok(&["run", "--force", "c"]);
    assert_eq!(
        ws.counts(),
        [2, 3, 2, 1],
        "--force with a target forces it and what it needs"
    );
}

#[test]
fn targets_select_a_stage_with_its_upstream_or_its_downstream() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run", "b"]);
    assert_eq!(ws.counts(), [1, 1, 0, 0]);
    ws.write("data/in.txt", "5\n");
    ws.ok(&["run", "--downstream", "b"]);
    assert_eq!(ws.counts(), [1, 1, 1, 0], "a is not selected; b is up to date, c runs");
    ws.ok(&["run", "chain"]);
    assert_eq!(ws.counts(), [2, 2, 2, 1]);
    let unknown = ws.fabric(&["run", "chian"]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("did you mean `chain`?"), "{}", unknown.stderr);
}

#[test]
fn explain_names_each_changed_component_old_and_new() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    let explain = ws.ok(&["explain", "b", "-P", "factor=3"]);
    assert!(explain.stdout.contains("* param factor"), "{}", explain.stdout);
    assert!(
        explain.stdout.contains("param `factor` changed from 2 to 3"),
        "{}",
        explain.stdout
    );
    let fresh = ws.ok(&["explain", "d"]);
    assert!(fresh.stdout.contains("Up to date"), "{}", fresh.stdout);
}

#[test]
fn status_json_and_run_json_are_machine_readable() {
    let ws = Workspace::new();
    ws.chain();
    let run = ws.ok(&["run", "--json", "-j", "1"]);
    let events: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0]["event"], "run_started");
    assert_eq!(events[0]["stages"], 4);
    let finished: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "stage_finished").collect();
    assert_eq!(finished.len(), 4);
    assert!(finished.iter().all(|e| e["outcome"] == "ran"));
    assert_eq!(events.last().unwrap()["summary"]["ran"], 4);

    ws.write("data/other.txt", "changed\n");
    let status = ws.ok(&["status", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let d = entries.as_array().unwrap().iter().find(|e| e["stage"] == "d").unwrap();
    assert_eq!(d["state"], "stale");
}

#[test]
fn dag_prints_ascii_dot_and_mermaid() {
    let ws = Workspace::new();
    ws.chain();
    let ascii = ws.ok(&["dag"]);
    assert_eq!(ascii.stdout, "a [cmd]\nb [cmd] <- a\nc [cmd] <- b\nd [cmd]\n");
    let dot = ws.ok(&["dag", "--format", "dot"]);
    assert!(
        dot.stdout.contains("\"a\" -> \"b\";") && dot.stdout.contains("\"b\" -> \"c\";"),
        "{}",
        dot.stdout
    );
    let mermaid = ws.ok(&["dag", "--format", "mermaid"]);
    assert!(mermaid.stdout.starts_with("flowchart LR\n") && mermaid.stdout.contains("  b --> c\n"));
}

#[test]
fn checkout_restores_outs_as_the_lock_records_them() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    std::fs::remove_file(ws.path("build/b.txt")).unwrap();
    std::fs::remove_dir_all(ws.path("build/c")).unwrap();
    ws.ok(&["checkout"]);
    assert_eq!(ws.read("build/b.txt"), "6\n4\n2\n");
    assert_eq!(ws.read("build/c/copy.txt"), "6\n4\n2\n");
    assert_eq!(ws.counts(), [1, 1, 1, 1]);

    // Outs another run left (their content is in the store) are put back
    // without asking, as the lock says ...
    let lock = ws.read("Fabric.lock");
    ws.ok(&["run", "-P", "factor=10"]);
    ws.write("Fabric.lock", &lock);
    ws.ok(&["checkout"]);
    assert_eq!(ws.read("build/b.txt"), "6\n4\n2\n");

    // ... but a hand edit, saved nowhere, is not overwritten without --force.
    ws.write("build/b.txt", "my own numbers\n");
    let refused = ws.fabric(&["checkout"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("checkout would overwrite changes saved nowhere, in: build/b.txt")
            && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert_eq!(ws.read("build/b.txt"), "my own numbers\n");
    ws.ok(&["checkout", "--force"]);
    assert_eq!(ws.read("build/b.txt"), "6\n4\n2\n");
}

#[test]
fn metrics_shows_metrics_outs() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    let metrics = ws.ok(&["metrics"]);
    assert!(metrics.stdout.contains("build/c.json  lines   3"), "{}", metrics.stdout);
    // Floats are shown rounded (the file keeps them whole).
    ws.write("build/c.json", "{\"lines\": 3, \"score\": 0.123456789, \"loss\": 2.50}");
    let metrics = ws.ok(&["metrics"]);
    assert!(metrics.stdout.contains("score   0.1235"), "{}", metrics.stdout);
    assert!(metrics.stdout.contains("loss    2.5\n"), "{}", metrics.stdout);
}

#[test]
fn a_corrupted_store_object_is_detected_and_the_stage_reruns() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    ws.write("data/other.txt", "y\n");
    ws.ok(&["run"]);
    // Corrupt the stored copy of d's first output, then revert the input.
    let objects = ws.path(".fabric/store/objects");
    let original = blake3::hash(b"x\n").to_hex().to_string();
    let object = objects.join(&original[..2]).join(&original[2..]);
    std::fs::write(&object, b"garbage").unwrap();
    ws.write("data/other.txt", "x\n");
    let run = ws.ok(&["run"]);
    assert!(run.stderr.contains("is corrupt"), "{}", run.stderr);
    assert_eq!(ws.count("d"), 3, "the stage re-ran instead of restoring garbage");
    assert_eq!(ws.read("build/d.txt"), "x\n");
}

#[test]
fn gc_removes_what_nothing_refers_to() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    ws.write("data/other.txt", "y\n");
    ws.ok(&["run"]);
    let dry = ws.ok(&["gc", "--dry-run", "--keep-days", "0"]);
    assert_eq!(
        dry.stdout,
        "would remove 1 run records, 0 trees, 1 objects, 0 step memos\n"
    );
    ws.ok(&["gc", "--keep-days", "0"]);
    ws.write("data/other.txt", "x\n");
    ws.ok(&["run"]);
    assert_eq!(ws.count("d"), 3, "the collected result had to be recomputed");
    assert_eq!(ws.count("a"), 1);
}

/// Two workspaces share one store (`store = …`): gc in one of them must
/// not drop what only the other's lock names. Without saying who uses the
/// store it refuses; `--also` keeps the other's results; `--sole-user`
/// (here a false claim) is what would have dropped them.
#[test]
fn gc_on_a_shared_store_keeps_what_every_named_workspace_needs() {
    let shared = tempfile::tempdir().unwrap();
    let (mine, theirs, elsewhere) = (Workspace::new(), Workspace::new(), Workspace::new());
    for (ws, store) in [
        (&mine, shared.path()),
        (&theirs, shared.path()),
        (&elsewhere, std::path::Path::new(".fabric/store")),
    ] {
        ws.write(
            "Fabric.toml",
            &format!(
                "[workspace]\nname = \"t\"\ninclude = [\"pipelines/*.toml\"]\nstore = \"{}\"\n",
                store.display()
            ),
        );
        ws.write(
            "pipelines/p.toml",
            "[pipeline]\nname = \"p\"\n\n[stage.copy]\ncmd = \"mkdir -p build && cp data/in.txt build/out.txt\"\ndeps = [\"data/in.txt\"]\nouts = [\"build/out.txt\"]\n",
        );
        ws.write("data/in.txt", "x\n");
    }
    mine.ok(&["run"]);
    mine.write("data/in.txt", "y\n");
    mine.ok(&["run"]);
    elsewhere.ok(&["run"]);
    // Theirs restores the result for "x" from the shared store: only their
    // lock names it now.
    let restored = theirs.ok(&["run"]);
    assert!(restored.stderr.contains("0 ran, 1 restored"), "{}", restored.stderr);

    let refused = mine.fabric(&["gc", "--keep-days", "0"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--also DIR") && refused.stderr.contains("--sole-user"),
        "{}",
        refused.stderr
    );
    let wrong = mine.fabric(&["gc", "--also", &elsewhere.root().display().to_string()]);
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("uses the store"), "{}", wrong.stderr);
    // Its own store, though named: nobody else's to ask about.
    elsewhere.ok(&["gc"]);
    // Naming this workspace itself, or one twice, counts each once (and
    // does not wait on its own lock).
    let me = mine.root().display().to_string();
    let dry = mine.ok(&["gc", "-n", "--also", &me, "--also", &me, "--keep-days", "0"]);
    assert!(dry.stdout.starts_with("would remove 1 run records"), "{}", dry.stdout);

    let again = |ws: &Workspace| {
        std::fs::remove_file(ws.path("build/out.txt")).unwrap();
        ws.ok(&["run"]).stderr
    };
    mine.ok(&["gc", "--keep-days", "0", "--also", &theirs.root().display().to_string()]);
    let kept = again(&theirs);
    assert!(
        kept.contains("0 ran, 1 restored"),
        "gc kept what their lock names: {kept}"
    );
    mine.ok(&["gc", "--keep-days", "0", "--sole-user"]);
    let pruned = again(&theirs);
    assert!(pruned.contains("1 ran, 0 restored"), "pruned by one lock: {pruned}");
}

#[test]
fn moving_the_workspace_keeps_every_cache_hit() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    let moved = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", ws.root().display()))
        .arg(moved.path())
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .args(["status", "--check"])
        .current_dir(moved.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn init_creates_a_workspace_that_runs() {
    let ws = Workspace::new();
    ws.ok(&["init"]);
    ws.ok(&["run"]);
    assert!(ws.read("build/counts.txt").contains("fabric"));
    assert!(ws.read("build/metrics.json").contains("distinct"));
    assert_eq!(ws.fabric(&["init"]).code, 2);
}

#[test]
fn the_workspace_is_found_from_a_subdirectory() {
    let ws = Workspace::new();
    ws.chain();
    std::fs::create_dir_all(ws.path("data/deep")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .args(["dag"])
        .current_dir(ws.path("data/deep"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let outside = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .args(["run"])
        .current_dir(outside.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("fabric init"));
}

/// Loads `Fabric.toml` text and returns the error output (asserting exit 2).
fn manifest_error(fabric_toml: &str, pipeline: Option<&str>) -> String {
    let ws = Workspace::new();
    ws.write("Fabric.toml", fabric_toml);
    if let Some(pipeline) = pipeline {
        ws.write("pipelines/p.toml", pipeline);
    }
    ws.write("data/in.txt", "x");
    let outcome = ws.fabric(&["run"]);
    assert_eq!(outcome.code, 2, "stderr:\n{}", outcome.stderr);
    assert!(!outcome.stderr.contains("panicked"), "{}", outcome.stderr);
    outcome.stderr
}

#[test]
fn manifest_errors_point_at_file_line_and_column_with_a_hint() {
    let unknown_key = manifest_error(
        "[workspace]\ninclude = [\"pipelines/*.toml\"]\n",
        Some("[pipeline]\nname = \"p\"\n\n[stage.x]\ncmd = \"true\"\ndpes = [\"data/in.txt\"]\n"),
    );
    assert!(unknown_key.contains("unknown field `dpes`"), "{unknown_key}");
    assert!(unknown_key.contains("pipelines/p.toml:6:1"), "{unknown_key}");
    assert!(unknown_key.contains("did you mean `deps`?"), "{unknown_key}");

    let syntax = manifest_error("[stage.x]\ncmd = \"true\nouts = []\n", None);
    assert!(syntax.contains("Fabric.toml:2:"), "{syntax}");

    let wrong_type = manifest_error("[stage.x]\ncmd = \"true\"\nouts = \"a.txt\"\n", None);
    assert!(wrong_type.contains("invalid type"), "{wrong_type}");
    assert!(wrong_type.contains("Fabric.toml:3:8"), "{wrong_type}");

    let unknown_step = manifest_error("[stage.x]\nstep = \"prime.sanitise\"\n", None);
    assert!(unknown_step.contains("unknown step `prime.sanitise`"), "{unknown_step}");
    assert!(unknown_step.contains("Fabric.toml:2:8"), "{unknown_step}");

    let both = manifest_error("[stage.x]\ncmd = \"true\"\nstep = \"x\"\n", None);
    assert!(both.contains("has both `cmd` and `step`"), "{both}");

    let bad_param = manifest_error("[params]\nseed = 1\n\n[stage.x]\ncmd = \"echo ${params.sede}\"\n", None);
    assert!(bad_param.contains("unknown parameter `sede`"), "{bad_param}");
    assert!(bad_param.contains("Fabric.toml:5:13"), "{bad_param}");
    assert!(bad_param.contains("did you mean `seed`?"), "{bad_param}");

    let bad_reference = manifest_error("[stage.x]\ncmd = \"echo ${HOME}\"\n", None);
    assert!(bad_reference.contains("is not a reference"), "{bad_reference}");
    assert!(bad_reference.contains("$${"), "{bad_reference}");

    let bad_out_index = manifest_error(
        "[stage.x]\ncmd = \"touch a\"\nouts = [\"a\"]\n\n[stage.y]\ncmd = \"cat ${stage.x.outs[3]}\"\n",
        None,
    );
    assert!(
        bad_out_index.contains("stage `x` has 1 outs; there is no outs[3]"),
        "{bad_out_index}"
    );
}

#[test]
fn graph_errors_name_the_stages_involved() {
    let cycle = manifest_error(
        "[stage.a]\ncmd = \"cp c a\"\ndeps = [\"c\"]\nouts = [\"a\"]\n\n[stage.b]\ncmd = \"cp a b\"\ndeps = [\"a\"]\nouts = [\"b\"]\n\n[stage.c]\ncmd = \"cp b c\"\ndeps = [\"b\"]\nouts = [\"c\"]\n",
        None,
    );
    assert!(
        cycle.contains("dependency cycle between stages `a`, `b`, `c`: a → b → c → a"),
        "{cycle}"
    );

    let duplicate = manifest_error(
        "[stage.a]\ncmd = \"touch o\"\nouts = [\"o\"]\n\n[stage.b]\ncmd = \"touch o\"\nouts = [\"o\"]\n",
        None,
    );
    assert!(
        duplicate.contains("out `o` is claimed by stages `a` and `b`"),
        "{duplicate}"
    );
    assert!(duplicate.contains("Fabric.toml:7:9"), "{duplicate}");

    let nested = manifest_error(
        "[stage.a]\ncmd = \"mkdir d\"\nouts = [\"d\"]\n\n[stage.b]\ncmd = \"touch d/x\"\nouts = [\"d/x\"]\n",
        None,
    );
    assert!(
        nested.contains("out `d/x` of stage `b` is nested inside out `d` of stage `a`"),
        "{nested}"
    );

    let missing = manifest_error("[stage.a]\ncmd = \"true\"\ndeps = [\"nope.txt\"]\n", None);
    assert!(
        missing.contains("dep `nope.txt` of stage `a` does not exist and no stage produces it"),
        "{missing}"
    );
    assert!(missing.contains("Fabric.toml:3:9"), "{missing}");

    let escape = manifest_error("[stage.a]\ncmd = \"true\"\nouts = [\"../x\"]\n", None);
    assert!(escape.contains("out `../x` leaves the workspace"), "{escape}");
    let absolute = manifest_error("[stage.a]\ncmd = \"true\"\ndeps = [\"/etc/passwd\"]\n", None);
    assert!(absolute.contains("is absolute"), "{absolute}");

    let self_dep = manifest_error("[stage.a]\ncmd = \"true\"\ndeps = [\"o\"]\nouts = [\"o\"]\n", None);
    assert!(self_dep.contains("stage `a` depends on its own out"), "{self_dep}");

    let after = manifest_error(
        "[stage.a]\ncmd = \"true\"\nafter = [\"bb\"]\n\n[stage.b]\ncmd = \"true\"\n",
        None,
    );
    assert!(after.contains("`after` names unknown stage `bb`"), "{after}");
}

#[test]
fn outs_escaping_through_a_symlink_are_rejected() {
    let ws = Workspace::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path("link")).unwrap();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"touch link/x\"\nouts = [\"link/x\"]\n",
    );
    let outcome = ws.fabric(&["run"]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("leads outside the workspace through a symlink"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_dep_rewritten_right_after_a_run_with_the_same_size_is_seen() {
    // The racy-timestamp case: a rewrite right after hashing, same size, so
    // only the timestamp (and content) tells; every rewrite must rerun.
    let ws = Workspace::new();
    ws.write("in.txt", "v00\n");
    ws.write(
        "Fabric.toml",
        &format!(
            "[stage.copy]\ncmd = \"{} && cp in.txt out.txt\"\ndeps = [\"in.txt\"]\nouts = [\"out.txt\"]\n",
            ws.tick("copy")
        ),
    );
    ws.ok(&["run"]);
    for round in 1..=20 {
        let text = format!("v{round:02}\n");
        ws.write("in.txt", &text);
        ws.ok(&["run"]);
        assert_eq!(ws.read("out.txt"), text, "round {round}");
        assert_eq!(ws.count("copy"), round + 1, "round {round}");
    }
}

#[test]
fn an_out_that_is_itself_a_symlink_is_replaced_not_written_through() {
    let ws = Workspace::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious.txt");
    std::fs::write(&target, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&target, ws.path("result.txt")).unwrap();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"echo new > result.txt\"\nouts = [\"result.txt\"]\n",
    );
    ws.ok(&["run"]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    let out = ws.path("result.txt");
    assert!(!std::fs::symlink_metadata(&out).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(out).unwrap(), "new\n");
}

#[test]
fn glob_deps_track_matching_files() {
    let ws = Workspace::new();
    ws.write("data/a.csv", "1\n")
        .write("data/b.csv", "2\n")
        .write("data/notes.txt", "n\n");
    ws.write(
        "Fabric.toml",
        &format!(
            "[stage.g]\ncmd = \"{} && cat data/*.csv > all.csv\"\ndeps = [\"data/*.csv\"]\nouts = [\"all.csv\"]\n",
            ws.tick("g")
        ),
    );
    ws.ok(&["run"]);
    ws.write("data/notes.txt", "changed\n");
    ws.ok(&["run"]);
    assert_eq!(ws.count("g"), 1, "a file outside the glob does not matter");
    ws.write("data/c.csv", "3\n");
    ws.ok(&["run"]);
    assert_eq!(ws.count("g"), 2, "a new matching file does");
    assert_eq!(ws.read("all.csv"), "1\n2\n3\n");
}

#[test]
fn a_damaged_lock_is_reported_not_overwritten() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    let damaged = format!("{}\n<<<<<<< HEAD\n", ws.read("Fabric.lock"));
    ws.write("Fabric.lock", &damaged);
    let outcome = ws.fabric(&["run"]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.contains("Fabric.lock is damaged"), "{}", outcome.stderr);
    assert_eq!(ws.read("Fabric.lock"), damaged);
}

#[test]
fn on_a_terminal_progress_bars_and_a_summary_table_are_drawn() {
    let ws = Workspace::new();
    ws.chain();
    // `script` gives the run a pseudo-terminal.
    let output = Command::new("script")
        .args([
            "-qec",
            &format!("{} run -j 1", env!("CARGO_BIN_EXE_fabric")),
            "/dev/null",
        ])
        .current_dir(ws.root())
        .env_remove("CI")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(output.status.success());
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(screen.contains("stages"), "the overall bar: {screen}");
    assert!(screen.contains("✓ a ran in"), "{screen}");
    assert!(
        screen.contains("stage                          result        time"),
        "{screen}"
    );
    assert!(screen.contains("4 ran, 0 restored, 0 up to date"), "{screen}");
    assert_eq!(ws.counts(), [1, 1, 1, 1]);
}

#[test]
fn step_argument_errors_point_at_the_key_or_value() {
    let ws = Workspace::new();
    ws.write("in/x.jsonl", "");
    let manifest = "[params]\nwindow_size = 4\n\n[stage.d]\nstep = \"prime.dataset\"\ndeps = [\"in\"]\nouts = [\"a\", \"b\", \"c\"]\n[stage.d.with]\nseed = 3\naugment_mod = true\n";
    ws.write("Fabric.toml", manifest);
    let typo = ws.fabric(&["run"]);
    assert_eq!(typo.code, 2);
    assert!(typo.stderr.contains("Fabric.toml:10:1"), "{}", typo.stderr);
    assert!(typo.stderr.contains("did you mean `augment_mode`?"), "{}", typo.stderr);

    ws.write(
        "Fabric.toml",
        &manifest.replace("augment_mod = true", "window_size = \"${params.window_sise}\""),
    );
    let reference = ws.fabric(&["run"]);
    assert!(
        reference.stderr.contains("unknown parameter `window_sise`"),
        "{}",
        reference.stderr
    );
    assert!(reference.stderr.contains("Fabric.toml:10:16"), "{}", reference.stderr);
}

#[test]
fn stages_removed_from_the_manifest_are_forgotten_by_the_lock() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    let pipeline = ws.read("pipelines/chain.toml");
    let without_d = &pipeline[..pipeline.find("[stage.d]").unwrap()];
    ws.write("pipelines/chain.toml", without_d);
    let run = ws.ok(&["run"]);
    assert!(
        run.stderr.contains("forgot stage d: it is no longer declared"),
        "{}",
        run.stderr
    );
    assert!(!ws.read("Fabric.lock").contains("[stage.d]"));
    assert_eq!(ws.counts(), [1, 1, 1, 1]);
}

#[test]
fn metrics_diff_compares_with_a_git_revision() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[params]\nscore = 0.5\n\n[stage.m]\ncmd = \"echo '{\\\"score\\\": ${params.score}}' > m.json\"\nmetrics = [\"m.json\"]\n",
    );
    ws.ok(&["run"]);
    ws.git(&["init", "-q"]);
    ws.git(&["add", "Fabric.toml", "m.json"]);
    ws.git(&["commit", "-qm", "base"]);
    ws.ok(&["run", "-P", "score=0.75"]);
    let diff = ws.ok(&["metrics", "--diff", "HEAD"]);
    let row = diff.stdout.lines().find(|l| l.starts_with("m.json")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["m.json", "score", "0.5", "0.75", "+0.25"], "{}", diff.stdout);
}

#[test]
fn shell_completions_are_valid_scripts_that_know_the_commands() {
    let ws = Workspace::new();
    let bash = ws.ok(&["completions", "bash"]).stdout;
    assert!(bash.contains("verify") && bash.contains("review") && bash.contains("--reproduce"));
    let script = ws.path("fabric.bash");
    std::fs::write(&script, &bash).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash accepts the script");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(ws.ok(&["completions", shell]).stdout.contains("fabric"), "{shell}");
    }
    assert_eq!(ws.fabric(&["completions", "tcsh"]).code, 2);
}

#[test]
fn what_commands_print_is_streamed_prefixed_by_stage_unless_asked_not_to() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"echo hello from a; echo careful >&2; echo a > a.txt\"\nouts = [\"a.txt\"]\n\n\
         [stage.b]\ncmd = \"echo hello from b > b.txt; cat b.txt\"\nouts = [\"b.txt\"]\n",
    );
    let run = ws.ok(&["run", "-j", "2"]);
    for line in ["a | hello from a", "a | careful", "b | hello from b"] {
        assert!(run.stderr.lines().any(|l| l == line), "{line}:\n{}", run.stderr);
    }
    assert_eq!(ws.read(".fabric/logs/a.log"), "hello from a\ncareful\n");
    let quiet = ws.ok(&["run", "--force", "--no-stream"]);
    assert!(!quiet.stderr.contains("hello from"), "{}", quiet.stderr);
    assert_eq!(
        ws.read(".fabric/logs/a.log"),
        "hello from a\ncareful\n",
        "the log keeps it"
    );
}

/// A command that leaves a background process holding its output open
/// finishes when the command does, not when the background process does.
#[test]
fn a_background_process_holding_the_output_does_not_hold_the_stage() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.a]\ncmd = \"(sleep 60 &); echo started; echo done > a.txt\"\nouts = [\"a.txt\"]\n",
    );
    let start = std::time::Instant::now();
    let run = ws.ok(&["run"]);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "the run waited for the background sleep"
    );
    assert!(run.stderr.contains("a | started"), "{}", run.stderr);
    assert_eq!(ws.read("a.txt"), "done\n");
}

#[test]
fn status_verbose_lists_up_to_date_stages_too() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    ws.write("data/in.txt", "9\n");
    let plain = ws.ok(&["status"]);
    assert!(!plain.stdout.contains("up to date"), "{}", plain.stdout);
    let verbose = ws.ok(&["status", "-v"]);
    assert!(
        verbose.stdout.lines().any(|l| l == "d: up to date"),
        "{}",
        verbose.stdout
    );
    assert!(
        verbose.stdout.contains("a:\n  - dep `data/in.txt` changed"),
        "{}",
        verbose.stdout
    );
}

#[test]
fn verbosity_flags_are_offered_only_where_they_act() {
    let ws = Workspace::new();
    ws.chain();
    for command in [
        &["dag", "-q"][..],
        &["checkout", "-v"],
        &["metrics", "--quiet"],
        &["gc", "-v"],
    ] {
        let refused = ws.fabric(command);
        assert_eq!(refused.code, 2, "{command:?} was accepted: {}", refused.stderr);
        assert!(refused.stderr.contains("unexpected argument"), "{}", refused.stderr);
    }
    let quiet = ws.ok(&["run", "-q"]);
    assert_eq!(quiet.stderr, "", "run -q printed more than failures");
    ws.write("data/in.txt", "9\n");
    let verbose = ws.ok(&["run", "-v"]);
    assert!(verbose.stderr.contains("ran a ("), "{}", verbose.stderr);
}

#[test]
fn explain_puts_long_values_on_lines_of_their_own() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    let same = ws.ok(&["explain", "b"]);
    assert!(
        same.stdout.contains("\n  cmd\n      recorded  echo x >> "),
        "{}",
        same.stdout
    );
    assert!(same.stdout.contains("\n      current   (same)\n"), "{}", same.stdout);
    let manifest = ws
        .read("pipelines/chain.toml")
        .replace("> build/b.txt\"", "> build/b.txt # v2\"");
    ws.write("pipelines/chain.toml", &manifest);
    let changed = ws.ok(&["explain", "b"]);
    let lines: Vec<&str> = changed.stdout.lines().collect();
    let at = lines.iter().position(|l| *l == "* cmd").expect(&changed.stdout);
    assert!(lines[at + 1].starts_with("      recorded  echo") && !lines[at + 1].contains("# v2"));
    assert!(lines[at + 2].starts_with("      current   echo") && lines[at + 2].ends_with("# v2"));
    // Short values keep the table.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  param factor") && l.ends_with("  2")),
        "{}",
        changed.stdout
    );
}

#[test]
fn metrics_diff_reads_an_uncommitted_metrics_file_through_the_committed_lock() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[params]\nscore = 0.5\n\n[stage.m]\ncmd = \"echo '{\\\"score\\\": ${params.score}}' > m.json\"\nmetrics = [\"m.json\"]\n",
    );
    ws.write(".gitignore", "m.json\n.fabric/\n");
    ws.ok(&["run"]);
    ws.git(&["init", "-q"]);
    ws.git(&["add", "-A"]);
    ws.git(&["commit", "-qm", "base"]);
    let base_lock = ws.read("Fabric.lock");
    ws.ok(&["run", "-P", "score=0.75"]);
    let cells = |stdout: &str| -> Vec<String> {
        let row = stdout.lines().find(|l| l.starts_with("m.json")).unwrap();
        row.split_whitespace().map(String::from).collect()
    };
    let diff = ws.ok(&["metrics", "--diff", "HEAD"]);
    assert_eq!(
        cells(&diff.stdout),
        ["m.json", "score", "0.5", "0.75", "+0.25"],
        "{}",
        diff.stdout
    );

    // A store object that does not match the lock's hash is not believed.
    let hash = base_lock
        .lines()
        .find_map(|l| l.trim().strip_prefix("hash = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap()
        .to_string();
    let object = walkdir::WalkDir::new(ws.path(".fabric/store"))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy() == hash[2..])
        .expect("the old metrics object is in the store")
        .into_path();
    std::fs::set_permissions(&object, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&object, "{\"score\": 0.99}\n").unwrap();
    let damaged = ws.ok(&["metrics", "--diff", "HEAD"]);
    assert!(
        damaged
            .stdout
            .contains("(not in HEAD: commit it, or run that version here)"),
        "{}",
        damaged.stdout
    );
    assert!(!damaged.stdout.contains("0.99"), "{}", damaged.stdout);
}

#[test]
fn a_declared_param_can_be_written_as_an_option_of_run() {
    let ws = Workspace::new();
    ws.chain();
    ws.ok(&["run"]);
    let plan = ws.ok(&["run", "--factor", "3", "--dry-run", "true"]);
    assert!(plan.stdout.contains("run         b"), "{}", plan.stdout);
    assert_eq!(ws.counts(), [1, 1, 1, 1], "a dry run runs nothing");
    let run = ws.ok(&["run", "--factor=3", "--dry-run", "false"]);
    assert!(run.stderr.contains("ran b"), "{}", run.stderr);
    assert_eq!(ws.read("build/b.txt"), "9\n6\n3\n");
    let typo = ws.fabric(&["run", "--factr", "3"]);
    assert_eq!(typo.code, 2);
    assert!(
        typo.stderr
            .contains("`--factr` is neither an option of `fabric run` nor a declared parameter")
            && typo.stderr.contains("did you mean `--factor`?"),
        "{}",
        typo.stderr
    );
    let mistyped = ws.fabric(&["run", "--factor", "many"]);
    assert_eq!(mistyped.code, 2, "{}", mistyped.stderr);
    let missing = ws.fabric(&["run", "--factor", "--keep-going"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("`--factor` needs a value"),
        "{}",
        missing.stderr
    );
    // A bare --dry-run (or -n) can be followed by targets.
    for flag in ["--dry-run", "-n"] {
        let plan = ws.ok(&["run", flag, "d"]);
        assert_eq!(plan.stdout.lines().count(), 1, "{}", plan.stdout);
    }
    // Only `fabric run`'s options are read as params: `run` as another
    // command's value stays what it is.
    let status = ws.fabric(&["-C", ".", "status", "run"]);
    assert!(
        status.stderr.contains("no stage or pipeline is called `run`"),
        "{}",
        status.stderr
    );
}

#[test]
fn a_param_used_only_in_paths_is_fingerprinted_by_the_path() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        &format!(
            "[params]\ndir = \"build\"\n\n[stage.s]\ncmd = \"{} && mkdir -p build && echo x > build/o.txt\"\nouts = [\"${{params.dir}}/o.txt\"]\n",
            ws.tick("s")
        ),
    );
    ws.ok(&["run"]);
    let same = ws.ok(&["run", "--dir", "./build"]);
    assert!(same.stderr.contains("0 ran"), "{}", same.stderr);
    let moved = ws.fabric(&["run", "--dir", "elsewhere"]);
    assert_eq!(
        moved.code, 1,
        "the out moved, the command did not write it: {}",
        moved.stderr
    );
    assert_eq!(ws.count("s"), 2);
}
