//! The no-op memo (`.fabric/noop`): an unchanged workspace is answered from
//! it, and any change to what the verdict rested on makes the run plan again.

use super::Workspace;

/// True when `fabric run` was answered by the memo: such a run reads neither
/// the lock nor its parsed copy, so the copy removed before stays absent.
fn served_by_memo(ws: &Workspace, args: &[&str]) -> bool {
    let parsed = ws.path(".fabric/lock.parsed");
    let _ = std::fs::remove_file(&parsed);
    ws.ok(&[&["run"], args].concat());
    !parsed.exists()
}

/// Runs until a no-op is answered by the memo (a run may not vouch for files
/// written within the racy window before it, then the next one does).
fn until_memo_serves(ws: &Workspace, args: &[&str]) {
    assert!(
        (0..5).any(|_| served_by_memo(ws, args)),
        "the memo never answered an unchanged workspace"
    );
}

/// A workspace with a directory dep, a glob dep, an environment variable, a
/// param and an included pipeline, built once.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("data/a/x.txt", "x1\n").write("src/lib/one.c", "int one;\n");
    ws.write(
        "Fabric.toml",
        &format!(
            r#"[workspace]
include = ["pipelines/*.toml"]

[params]
n = 1

[stage.dir]
cmd = "{} && ls -R data > out/dir && cat data/a/x.txt >> out/dir"
deps = ["data"]
outs = ["out/dir"]

[stage.glob]
cmd = "{} && cat src/lib/*.c > out/glob"
deps = ["src/**/*.c"]
outs = ["out/glob"]

[stage.env]
cmd = "{} && echo $FABRIC_MEMO_TEST > out/env"
env = ["FABRIC_MEMO_TEST"]
outs = ["out/env"]

[stage.param]
cmd = "{} && echo ${{params.n}} > out/param"
outs = ["out/param"]
"#,
            ws.tick("dir"),
            ws.tick("glob"),
            ws.tick("env"),
            ws.tick("param"),
        ),
    );
    ws.write(
        "pipelines/p.toml",
        &format!(
            "[pipeline]\nname = \"p\"\n\n[stage.later]\ncmd = \"{} && cat out/dir > out/later\"\ndeps = [\"out/dir\"]\nouts = [\"out/later\"]\n",
            ws.tick("later")
        ),
    );
    ws.ok(&["run"]);
    until_memo_serves(&ws, &[]);
    ws
}

/// After `change`, the next run must not be answered by the memo and must
/// run `stage` again.
fn change_reruns(stage: &str, change: impl FnOnce(&Workspace)) {
    let ws = workspace();
    let before = ws.count(stage);
    change(&ws);
    assert!(!served_by_memo(&ws, &[]), "a change the memo should have seen");
    assert_eq!(ws.count(stage), before + 1, "stage `{stage}` reran");
}

#[test]
fn an_unchanged_workspace_is_answered_from_the_memo_with_the_same_report() {
    let ws = workspace();
    let counts: Vec<usize> = ["dir", "glob", "env", "param", "later"]
        .iter()
        .map(|s| ws.count(s))
        .collect();
    let answered = ws.ok(&["run", "-v"]).stderr;
    assert!(served_by_memo(&ws, &["-v"]));
    assert!(answered.contains("0 ran, 0 restored, 5 up to date"), "{answered}");
    assert!(answered.contains("up to date later"), "{answered}");
    // The same words as a run that planned (the memo dropped first).
    std::fs::remove_file(ws.path(".fabric/noop")).unwrap();
    assert_eq!(ws.ok(&["run", "-v"]).stderr, answered);
    let after: Vec<usize> = ["dir", "glob", "env", "param", "later"]
        .iter()
        .map(|s| ws.count(s))
        .collect();
    assert_eq!(counts, after, "nothing ran");
}

#[test]
fn a_dep_rewritten_in_place_with_the_same_size() {
    change_reruns("dir", |ws| {
        ws.write("data/a/x.txt", "x2\n");
    });
}

#[test]
fn a_file_added_deep_in_a_dep_directory() {
    change_reruns("dir", |ws| {
        ws.write("data/a/b/new.txt", "new\n");
    });
}

#[test]
fn a_file_removed_from_a_dep_directory() {
    change_reruns("dir", |ws| {
        ws.write("data/a/y.txt", "y\n");
        ws.ok(&["run"]);
        until_memo_serves(ws, &[]);
        std::fs::remove_file(ws.path("data/a/y.txt")).unwrap();
    });
}

#[test]
fn a_new_file_matching_a_glob() {
    change_reruns("glob", |ws| {
        ws.write("src/lib/two.c", "int two;\n");
    });
}

#[test]
fn an_out_modified_or_deleted() {
    let ws = workspace();
    ws.write("out/glob", "tampered\n");
    assert!(!served_by_memo(&ws, &[]));
    assert_eq!(ws.read("out/glob"), "int one;\n", "restored from the cache");
    until_memo_serves(&ws, &[]);
    std::fs::remove_file(ws.path("out/param")).unwrap();
    assert!(!served_by_memo(&ws, &[]));
    assert_eq!(ws.read("out/param"), "1\n");
}

#[test]
fn the_manifest_edited() {
    change_reruns("param", |ws| {
        let text = ws.read("Fabric.toml").replace("n = 1", "n = 2");
        ws.write("Fabric.toml", &text);
    });
}

#[test]
fn a_pipeline_file_added_to_an_include() {
    let ws = workspace();
    ws.write(
        "pipelines/q.toml",
        &format!(
            "[pipeline]\nname = \"q\"\n\n[stage.new]\ncmd = \"{} && touch out/new\"\nouts = [\"out/new\"]\n",
            ws.tick("new")
        ),
    );
    assert!(!served_by_memo(&ws, &[]));
    assert_eq!(ws.count("new"), 1);
}

#[test]
fn the_lock_replaced() {
    // As a `git checkout` of an older Fabric.lock would: the entry of `param` gone.
    // As a `git checkout` of another Fabric.lock would: `param`'s entry differs.
    change_reruns("param", |ws| {
        let lock = ws.read("Fabric.lock");
        let table = lock.find("[stage.param]").unwrap();
        let line = table + lock[table..].find("fingerprint = \"").unwrap() + "fingerprint = \"".len();
        let edited = format!("{}{}{}", &lock[..line], "0".repeat(64), &lock[line + 64..]);
        ws.write("Fabric.lock", &edited);
        std::fs::remove_dir_all(ws.path(".fabric/store")).unwrap();
    });
}

#[test]
fn an_unfinished_runs_journal() {
    let ws = workspace();
    std::fs::write(
        ws.path(".fabric/lock.journal"),
        "{\"op\":\"remove\",\"stage\":\"later\"}\n",
    )
    .unwrap();
    assert!(!served_by_memo(&ws, &[]));
    assert!(!ws.path(".fabric/lock.journal").exists(), "the journal was folded in");
}

#[test]
fn a_declared_environment_variable_changed() {
    let ws = workspace();
    let before = ws.count("env");
    let outcome = ws.command(&["run"]).env("FABRIC_MEMO_TEST", "other").output().unwrap();
    assert!(outcome.status.success());
    assert_eq!(ws.count("env"), before + 1);
    assert_eq!(ws.read("out/env"), "other\n");
}

#[test]
fn other_params_or_targets_are_another_request() {
    let ws = workspace();
    let before = ws.count("param");
    assert!(!served_by_memo(&ws, &["-P", "n=3"]));
    assert_eq!(ws.count("param"), before + 1);
    assert_eq!(ws.read("out/param"), "3\n");
    until_memo_serves(&ws, &["-P", "n=3"]);
    assert!(!served_by_memo(&ws, &["param"]), "one target: another request");
}

#[test]
fn a_step_fact_changed() {
    // `prime.sanitize` has the pseudonym key among its facts: another key
    // must rerun it, though no path changed.
    let ws = Workspace::new();
    let record = super::prime::snapshot(1, "s1", 0).to_string();
    ws.write("raw/s1.jsonl", &format!("{record}\n"));
    ws.write(
        "Fabric.toml",
        "[stage.sanitize]\nstep = \"prime.sanitize\"\ndeps = [\"raw\"]\nouts = [\"clean\", \"report.json\"]\n",
    );
    ws.ok(&["run"]);
    until_memo_serves(&ws, &[]);
    let outcome = ws
        .command(&["run"])
        .env("FABRIC_PSEUDONYM_KEY", "ab".repeat(32))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    assert!(outcome.status.success(), "{stderr}");
    assert!(stderr.contains("1 ran"), "{stderr}");
}

/// A build keeps the memo from its own looks: the run after it is
/// answered, with the report a planned run gives, and nothing runs.
#[test]
fn a_build_keeps_the_memo_and_the_run_after_it_is_answered() {
    let ws = workspace();
    ws.write("Fabric.toml", &ws.read("Fabric.toml").replace("n = 1", "n = 2"));
    let built = ws.ok(&["run"]).stderr;
    assert!(built.contains("1 ran, 0 restored, 4 up to date"), "{built}");
    let counts = || -> Vec<usize> {
        ["dir", "glob", "env", "param", "later"]
            .iter()
            .map(|s| ws.count(s))
            .collect()
    };
    let before = counts();
    let answered = ws.ok(&["run", "-v"]).stderr;
    assert!(served_by_memo(&ws, &["-v"]), "the run right after a build is answered");
    assert!(answered.contains("0 ran, 0 restored, 5 up to date"), "{answered}");
    std::fs::remove_file(ws.path(".fabric/noop")).unwrap();
    assert_eq!(
        ws.ok(&["run", "-v"]).stderr,
        answered,
        "the same words as a planned run"
    );
    assert_eq!(counts(), before, "nothing ran");
    assert_eq!(ws.read("out/param"), "2\n");
}

/// A command that changes its own dep: the lock holds what the stage read,
/// the file now holds more, and the run after the build must see it.
#[test]
fn a_dep_changed_by_the_build_itself_is_seen_by_the_next_run() {
    let ws = Workspace::new();
    ws.write("data/s.txt", "one\n");
    ws.write(
        "Fabric.toml",
        &format!(
            "[stage.grow]\ncmd = \"{} && cat data/s.txt > out.txt && echo more >> data/s.txt\"\ndeps = [\"data/s.txt\"]\nouts = [\"out.txt\"]\n",
            ws.tick("grow")
        ),
    );
    for runs in 1..=3 {
        ws.ok(&["run"]);
        assert_eq!(ws.count("grow"), runs, "every run sees the dep its last run changed");
    }
}

/// Restored outs are not read back, so a run that restored keeps no memo;
/// the run after it plans, finds everything up to date and keeps one.
#[test]
fn a_build_that_restored_keeps_no_memo() {
    let ws = workspace();
    assert!(!served_by_memo(&ws, &["-P", "n=2"]));
    let restored = ws.ok(&["run"]).stderr;
    assert!(restored.contains("1 restored"), "{restored}");
    assert!(!ws.path(".fabric/noop").exists());
    assert!(!served_by_memo(&ws, &[]), "the next run plans");
    until_memo_serves(&ws, &[]);
}
