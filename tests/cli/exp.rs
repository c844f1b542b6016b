//! Experiments: variants of the pipeline run in isolated copies of the
//! workspace that share its store, then compared.

use super::Workspace;

/// Four stages: two that no param touches, two that read `scale`.
fn pipeline(ws: &Workspace) -> String {
    format!(
        r#"[workspace]
name = "exps"

[params]
scale = 1

[stage.a]
cmd = "{a}; echo a > a.txt"
outs = ["a.txt"]

[stage.b]
cmd = "{b}; cat a.txt > b.txt; echo b >> b.txt"
deps = ["a.txt"]
outs = ["b.txt"]

[stage.fit]
cmd = "{fit}; test ${{params.scale}} -ne 0 && echo fit ${{params.scale}} > fit.txt"
deps = ["b.txt"]
outs = ["fit.txt"]

[stage.score]
cmd = "echo '{{\"score\": '$(( ${{params.scale}} * 10 ))', \"half\": '$(( ${{params.scale}} * 5 ))'}}' > score.json"
deps = ["fit.txt"]
metrics = ["score.json"]
"#,
        a = ws.tick("a"),
        b = ws.tick("b"),
        fit = ws.tick("fit"),
    )
}

#[test]
fn a_grid_runs_in_copies_restores_what_it_shares_and_compares() {
    let ws = Workspace::new();
    ws.write("Fabric.toml", &pipeline(&ws));
    assert_eq!(ws.fabric(&["run"]).code, 0);
    let before = ws.files("");

    let run = ws.fabric(&["exp", "run", "--grid", "scale=2,3", "-j", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        (ws.count("a"), ws.count("b")),
        (1, 1),
        "shared stages are restored, not rerun"
    );
    assert_eq!(ws.count("fit"), 3, "the varied stage runs once per experiment");
    assert_eq!(ws.files(""), before, "the workspace is untouched");

    let show = ws.fabric(&["exp", "show", "--json", "--sort", "score"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let list: Vec<serde_json::Value> = serde_json::from_str(&show.stdout).unwrap();
    let seen: Vec<(String, String, String)> = list
        .iter()
        .map(|e| {
            (
                e["params"][0].as_str().unwrap().to_string(),
                e["state"].as_str().unwrap().to_string(),
                e["metrics"]["score"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("scale=3".to_string(), "succeeded".to_string(), "30".to_string()),
            ("scale=2".to_string(), "succeeded".to_string(), "20".to_string()),
        ]
    );
    let ascending = ws.fabric(&["exp", "show", "--json", "--sort", "score", "--ascending"]);
    let first: Vec<serde_json::Value> = serde_json::from_str(&ascending.stdout).unwrap();
    assert_eq!(first[0]["metrics"]["score"], "20");
    let only = ws.fabric(&["exp", "show", "--json", "--metric", "score"]);
    let only: Vec<serde_json::Value> = serde_json::from_str(&only.stdout).unwrap();
    assert_eq!(only[0]["metrics"].as_object().unwrap().len(), 1);
    let md = ws.fabric(&["exp", "show", "--md", "--sort", "score", "--metric", "score"]);
    assert!(
        md.stdout
            .starts_with("| name | state | params | score |\n| --- | --- | --- | --- |\n"),
        "{}",
        md.stdout
    );

    let (a, b) = (list[1]["name"].as_str().unwrap(), list[0]["name"].as_str().unwrap());
    let diff = ws.fabric(&["exp", "diff", a, b]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    let line = |start: &str| {
        diff.stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line:\n{}", diff.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("param"), ["param", "scale", "2", "3"]);
    assert_eq!(line("metric  score"), ["metric", "score", "20", "30"]);
    assert!(line("dep")[1..3] == ["score:", "fit.txt"], "{}", diff.stdout);
    assert!(
        !diff.stdout.contains("b.txt"),
        "what both share is not a difference:\n{}",
        diff.stdout
    );

    let unknown = ws.fabric(&["exp", "show", "--sort", "scor"]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("did you mean `score`?"), "{}", unknown.stderr);

    // The best one becomes the workspace's: its param, its lock, its outs.
    let applied = ws.fabric(&["exp", "apply", b]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(
        ws.read("Fabric.toml").contains("\n[params]\nscale = 3\n"),
        "{}",
        ws.read("Fabric.toml")
    );
    assert_eq!(
        ws.read("Fabric.lock"),
        ws.read(&format!(".fabric/exp/{b}/workspace/Fabric.lock"))
    );
    assert_eq!(ws.read("score.json").trim(), "{\"score\": 30, \"half\": 15}");
    assert_eq!(ws.read("fit.txt"), "fit 3\n");
    let status = ws.fabric(&["status", "--check"]);
    assert_eq!(
        status.code, 0,
        "up to date after apply:\n{}{}",
        status.stdout, status.stderr
    );
    assert_eq!(ws.count("fit"), 3, "applying runs nothing");
}

#[test]
fn a_failing_experiment_or_a_bad_override_leaves_the_workspace_as_it_was() {
    let ws = Workspace::new();
    ws.write("Fabric.toml", &pipeline(&ws));
    assert_eq!(ws.fabric(&["run"]).code, 0);
    let before = ws.files("");

    let bad = ws.fabric(&["exp", "run", "-P", "scael=2"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("did you mean `scale`?"), "{}", bad.stderr);
    let twice = ws.fabric(&["exp", "run", "--grid", "scale=2,2"]);
    assert_eq!(twice.code, 2, "{}", twice.stderr);
    assert!(
        twice.stderr.contains("the grid makes `scale=2` twice"),
        "{}",
        twice.stderr
    );
    assert!(
        !ws.path(".fabric/exp").exists(),
        "nothing starts when one override is wrong"
    );

    let broken = ws.fabric(&["exp", "run", "-P", "scale=0", "--name", "broken"]);
    assert_eq!(broken.code, 1, "{}", broken.stderr);
    assert!(
        broken.stderr.contains("broken: failed (scale=0); see "),
        "{}",
        broken.stderr
    );
    assert!(ws.read(".fabric/exp/broken/run.log").contains("failed fit"));
    assert_eq!(ws.files(""), before, "the workspace is untouched");
    assert_eq!(state(&ws, "broken"), "failed");
    let refused = ws.fabric(&["exp", "apply", "broken"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("experiment `broken` failed"),
        "{}",
        refused.stderr
    );
    assert_eq!(ws.files(""), before, "a refused apply changes nothing");
    // The workspace still runs, from its own lock: nothing to do.
    let again = ws.fabric(&["run"]);
    assert!(again.stderr.contains("0 ran"), "{}", again.stderr);
}

#[test]
fn the_store_keeps_what_experiments_made_until_they_are_removed() {
    let ws = Workspace::new();
    ws.write("Fabric.toml", &pipeline(&ws));
    assert_eq!(ws.fabric(&["run"]).code, 0);
    assert_eq!(ws.fabric(&["exp", "run", "-P", "scale=2", "--name", "two"]).code, 0);

    // Garbage collection with no grace period keeps what the experiment's lock names...
    let gc = ws.fabric(&["gc", "--keep-days", "0"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(
        gc.stdout.starts_with("removed 0 run records, 0 trees, 0 objects"),
        "{}",
        gc.stdout
    );
    let applied = ws.fabric(&["exp", "apply", "two"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(ws.read("fit.txt"), "fit 2\n", "restored from the store");

    // ... and once the workspace is back and the experiment removed, `exp gc`
    // drops what only the experiment needed.
    ws.write("Fabric.toml", &pipeline(&ws));
    assert_eq!(ws.fabric(&["run"]).code, 0);
    let removed = ws.fabric(&["exp", "remove", "two"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(!ws.path(".fabric/exp/two").exists());
    let dropped = ws.fabric(&["exp", "gc"]);
    assert_eq!(dropped.code, 0, "{}", dropped.stderr);
    assert!(
        dropped.stdout.starts_with("removed 2 run records"),
        "{}",
        dropped.stdout
    );
    assert_eq!(
        ws.fabric(&["exp", "show"]).stdout.trim(),
        "No experiments: `fabric exp run -P NAME=VALUE` makes one."
    );
    let unknown = ws.fabric(&["exp", "remove", "two"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
}

/// `fabric exp run` killed outright (with everything it started) in the
/// middle of an experiment's stage: the workspace is as it was, and runs
/// as before. While it ran, the same experiment could not be started or
/// removed again and `fabric gc` waited for it; killed, it shows as
/// interrupted and can be run again.
#[test]
fn an_experiment_killed_mid_stage_leaves_the_workspace_untouched() {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;

    let ws = Workspace::new();
    let outside = tempfile::tempdir().unwrap();
    let (started, fifo) = (outside.path().join("started"), outside.path().join("fifo"));
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    ws.write(
        "Fabric.toml",
        &format!(
            "[params]\nmode = \"fast\"\n\n[stage.a]\ncmd = \"echo a > a.txt\"\nouts = [\"a.txt\"]\n\n[stage.b]\ncmd = \"if [ ${{params.mode}} = slow ]; then touch {started}; cat {fifo}; fi; cat a.txt > b.txt\"\ndeps = [\"a.txt\"]\nouts = [\"b.txt\"]\n",
            started = started.display(),
            fifo = fifo.display()
        ),
    );
    assert_eq!(ws.fabric(&["run"]).code, 0);
    let before = ws.files("");

    let mut run = ws.command(&["exp", "run", "-P", "mode=slow", "--name", "cut"]);
    let mut run = run
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The stage is inside its command once it made the file (it then waits
    // on the pipe, which nobody writes).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(
            run.try_wait().unwrap().is_none(),
            "the experiment ended before its stage ran"
        );
        assert!(std::time::Instant::now() < deadline, "the stage never started");
        std::thread::yield_now();
    }
    assert_eq!(state(&ws, "cut"), "running");
    let twice = ws.fabric(&["exp", "run", "-P", "mode=fast", "--name", "cut"]);
    assert_eq!(twice.code, 2, "{}", twice.stderr);
    assert!(
        twice
            .stderr
            .contains("experiment `cut` is being run by another `fabric exp run`"),
        "{}",
        twice.stderr
    );
    let remove = ws.fabric(&["exp", "remove", "cut"]);
    assert_eq!(remove.code, 2, "{}", remove.stderr);
    assert!(remove.stderr.contains("kept cut: still running"), "{}", remove.stderr);
    // gc waits for the experiment (it says so before it blocks).
    let mut gc = ws
        .command(&["gc"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiting = std::io::BufReader::new(gc.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut waiting, &mut line).unwrap();
    assert_eq!(line, "waiting for running experiments (`fabric exp run`) to finish…\n");
    assert!(gc.try_wait().unwrap().is_none());

    // SAFETY: killpg with the group of a child this test started.
    assert_eq!(unsafe { libc::killpg(run.id() as i32, libc::SIGKILL) }, 0);
    run.wait().unwrap();
    // Let a command that outlived its group end (nothing may write the pipe otherwise).
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);

    let gc = gc.wait_with_output().unwrap();
    assert!(gc.status.success());
    assert!(String::from_utf8_lossy(&gc.stdout).starts_with("removed "));

    assert_eq!(ws.files(""), before, "the workspace is untouched");
    let again = ws.fabric(&["run"]);
    assert!(again.stderr.contains("0 ran"), "{}", again.stderr);
    assert_eq!(state(&ws, "cut"), "interrupted");
    let rerun = ws.fabric(&["exp", "run", "-P", "mode=fast", "--name", "cut"]);
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert_eq!(state(&ws, "cut"), "succeeded");
}

/// The state `fabric exp show` gives the experiment `name`.
fn state(ws: &Workspace, name: &str) -> String {
    let show = ws.ok(&["exp", "show"]);
    let row = show.stdout.lines().find(|l| l.split_whitespace().next() == Some(name));
    let row = row.unwrap_or_else(|| panic!("no `{name}` row:\n{}", show.stdout));
    row.split_whitespace().nth(1).unwrap_or_default().to_string()
}
