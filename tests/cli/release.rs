//! Releases, the changelog, `fabric verify` and the lock merge driver.

use std::process::Command;

use super::Workspace;

const NOTE: &str = "### What\nA model.\n\n### Why\nIt is better.\n\n### How\nfabric run.\n";

/// A workspace whose `build` stage writes a model and metrics, and whose
/// `release` stage publishes them as `demo` version `${params.release}`.
fn releasing(ws: &Workspace, content: &str) {
    ws.write("Fabric.toml", &format!(
        r#"[params]
release = "v1"
content = "{content}"

[stage.build]
cmd = "mkdir -p out && printf '${{params.content}}' > out/model.onnx && echo '{{\"model\": {{\"command_accuracy\": 0.75, \"mode_compliance\": 1.0}}, \"seed_rules\": {{}}}}' > out/metrics.json"
outs = ["out/model.onnx", "out/metrics.json"]

[stage.release]
step = "fabric.release"
deps = ["out/model.onnx", "out/metrics.json"]
outs = ["receipt.json"]
[stage.release.with]
name = "demo"
version = "${{params.release}}"
"#
    ));
}

#[test]
fn a_release_needs_a_what_why_how_note_and_publishes_manifest_and_changelog() {
    let ws = Workspace::new();
    releasing(&ws, "weights-1");
    let refused = ws.fabric(&["run"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("a release needs a note"), "{}", refused.stderr);
    assert!(!ws.path("artifacts/demo/v1").exists());

    ws.write("changes/next.md", "### What\nA model.\n");
    let incomplete = ws.fabric(&["run"]);
    assert!(
        incomplete.stderr.contains("the note has no why, how section"),
        "{}",
        incomplete.stderr
    );

    ws.write("changes/next.md", &NOTE.replace("### Why", "## Why"));
    let heading = ws.fabric(&["run"]);
    assert!(
        heading
            .stderr
            .contains("changes/next.md: line 4: `## ` starts a release's entry in the changelog"),
        "{}",
        heading.stderr
    );

    ws.write("changes/next.md", &NOTE.replace('\n', "\r\n"));
    ws.ok(&["run"]);
    assert!(!ws.path("changes/next.md").exists(), "the fragment is consumed");
    assert_eq!(ws.read("artifacts/demo/v1/model.onnx"), "weights-1");
    // Kept as written, Windows line endings too (and verify reads them).
    assert!(
        ws.read("artifacts/demo/v1/NOTE.md")
            .contains("### What\r\nA model.\r\n")
    );
    assert!(ws.read("artifacts/demo/v1/NOTE.md").lines().eq(NOTE.lines()));
    let manifest = ws.read("artifacts/demo/v1/MANIFEST.toml");
    let model_hash = blake3::hash(b"weights-1").to_hex().to_string();
    assert!(manifest.contains(&model_hash), "{manifest}");
    assert!(manifest.contains("command_accuracy = 0.75"), "{manifest}");
    assert!(manifest.contains("[stages]\nbuild = "), "{manifest}");
    let changelog = ws.read("artifacts/CHANGELOG.md");
    assert!(changelog.contains("## demo v1"), "{changelog}");
    assert!(
        changelog.contains(&format!("- model: `model.onnx` blake3 `{model_hash}`")),
        "{changelog}"
    );
    assert!(
        changelog.contains("- scores: command accuracy 75.0%, mode compliance 100.0%"),
        "{changelog}"
    );
    let verify = ws.ok(&["verify", "--outs", "--fresh"]);
    assert!(
        verify.stdout.contains("verify: all checks passed (1 release"),
        "{}",
        verify.stdout
    );

    // The same content again is fine; other content under the same version
    // (an experiment, or a version not bumped) is held back with a warning,
    // not published and not an error.
    ws.ok(&["run", "--force=release"]);
    releasing(&ws, "weights-2");
    let immutable = ws.ok(&["run"]);
    assert!(
        immutable.stderr.contains(
            "warning: release: not published: demo/v1 already holds other content (model.onnx); releases are immutable"
        ),
        "{}",
        immutable.stderr
    );
    assert_eq!(ws.read("artifacts/demo/v1/model.onnx"), "weights-1");
    let receipt: serde_json::Value = serde_json::from_str(&ws.read("receipt.json")).unwrap();
    assert!(
        receipt["held_back"].as_str().unwrap().contains("not published"),
        "{receipt}"
    );

    // A new version with a new note: newest first in the changelog.
    ws.write("changes/next.md", NOTE);
    ws.ok(&["run", "-P", "release=v2"]);
    let changelog = ws.read("artifacts/CHANGELOG.md");
    assert!(
        changelog.find("## demo v2").unwrap() < changelog.find("## demo v1").unwrap(),
        "{changelog}"
    );
    ws.ok(&["verify"]);
}

/// Publishes v1 and returns the workspace.
fn published() -> Workspace {
    let ws = Workspace::new();
    releasing(&ws, "weights-1");
    ws.write("changes/next.md", NOTE);
    ws.ok(&["run"]);
    ws
}

fn verify_fails(ws: &Workspace, args: &[&str]) -> String {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let outcome = ws.fabric(&all);
    assert_eq!(outcome.code, 1, "{}", outcome.stdout);
    outcome.stdout
}

#[test]
fn verify_reports_every_tampered_release_file_and_manifest() {
    let ws = published();
    ws.write("artifacts/demo/v1/model.onnx", "weights-X");
    ws.write("artifacts/demo/v1/extra.bin", "?");
    let out = verify_fails(&ws, &[]);
    let tampered = blake3::hash(b"weights-X").to_hex().to_string();
    assert!(
        out.contains(&format!(
            "FAIL release: artifacts/demo/v1/model.onnx: hashes to {tampered} (9 bytes); the manifest says"
        )),
        "{out}"
    );
    assert!(
        out.contains("FAIL release: artifacts/demo/v1/extra.bin: is not in the manifest"),
        "{out}"
    );
    // The changelog's claim about the model is false now too.
    assert!(
        out.contains(&format!(
            "FAIL changelog: demo v1: entry does not match the release: it says `model.onnx` hashes to {}; the shipped file hashes to {tampered}",
            blake3::hash(b"weights-1").to_hex()
        )),
        "{out}"
    );
    assert!(out.contains("verify: 3 checks failed"), "{out}");

    let ws = published();
    let manifest = ws.read("artifacts/demo/v1/MANIFEST.toml");
    let real = blake3::hash(b"weights-1").to_hex().to_string();
    ws.write(
        "artifacts/demo/v1/MANIFEST.toml",
        &manifest.replace(&real, &"0".repeat(64)),
    );
    let out = verify_fails(&ws, &[]);
    assert!(
        out.contains("FAIL release: artifacts/demo/v1/model.onnx: hashes to"),
        "{out}"
    );
    assert!(
        out.contains("FAIL changelog: demo v1: entry does not match the release: it says MANIFEST.toml hashes to"),
        "{out}"
    );
}

#[test]
fn verify_checks_the_changelog_both_ways() {
    let ws = published();
    let changelog = ws.read("artifacts/CHANGELOG.md");
    ws.write(
        "artifacts/CHANGELOG.md",
        &changelog.replace("command accuracy 75.0%", "command accuracy 95.0%"),
    );
    let out = verify_fails(&ws, &[]);
    assert!(
        out.contains("FAIL changelog: demo v1: entry does not match the release: it gives `command accuracy` as 95.0%; the manifest says 0.75"),
        "{out}"
    );

    let missing = changelog[..changelog.find("## demo v1").unwrap()].to_string();
    ws.write("artifacts/CHANGELOG.md", &missing);
    let out = verify_fails(&ws, &[]);
    assert!(out.contains("FAIL changelog: demo v1: has no changelog entry"), "{out}");

    ws.write(
        "artifacts/CHANGELOG.md",
        &format!("{changelog}## demo v9\n\n- model: ghost\n"),
    );
    let out = verify_fails(&ws, &["--json"]);
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["ok"], false);
    assert_eq!(result["failures"][0]["check"], "changelog");
    assert_eq!(result["failures"][0]["subject"], "demo v9");
    assert_eq!(result["failures"][0]["message"], "entry has no release manifest");
}

/// Each claim of an entry is read back and checked against the release on
/// disk: the changelog is not trusted because the release stage wrote it.
#[test]
fn verify_reads_back_every_claim_of_a_changelog_entry() {
    let ws = published();
    releasing(&ws, "weights-2");
    ws.write("changes/next.md", NOTE);
    ws.ok(&["run", "-P", "release=v2"]);
    ws.ok(&["verify"]);
    let changelog = ws.read("artifacts/CHANGELOG.md");
    let failing = |changed: &str| {
        assert_ne!(changed, changelog, "the change must change the changelog");
        ws.write("artifacts/CHANGELOG.md", changed);
        let out = verify_fails(&ws, &[]);
        ws.write("artifacts/CHANGELOG.md", &changelog);
        out
    };

    let model = blake3::hash(b"weights-1").to_hex().to_string();
    let out = failing(&changelog.replace(&model, &"0".repeat(64)));
    assert!(
        out.contains(&format!(
            "FAIL changelog: demo v1: entry does not match the release: it says `model.onnx` hashes to {}; the shipped file hashes to {model}",
            "0".repeat(64)
        )),
        "{out}"
    );

    let note = changelog.rfind("A model.").unwrap();
    let out = failing(&format!(
        "{}A better model.{}",
        &changelog[..note],
        &changelog[note + "A model.".len()..]
    ));
    assert!(
        out.contains("FAIL changelog: demo v1: entry does not match the release: its note is not the release's NOTE.md: `A better model.` should be `A model.`"),
        "{out}"
    );

    let (v1, v2) = (
        changelog.find("## demo v1").unwrap(),
        changelog.find("## demo v2").unwrap(),
    );
    let v1_entry = &changelog[v1..];
    let swapped = format!("{}{}{}", &changelog[..v2], v1_entry, &changelog[v2..v1]);
    let out = failing(&swapped);
    assert!(
        out.contains(
            "FAIL changelog: demo v2: is listed after `demo v1`, which was published before it (newest first)"
        ),
        "{out}"
    );

    let out = failing(&format!("{changelog}{v1_entry}"));
    assert!(out.contains("FAIL changelog: demo v1: has two entries"), "{out}");

    let out = failing(&changelog.replacen(
        "- review: unreviewed (no person has approved its outputs)",
        "- review: `model.onnx` approved by Ada on 2026-12-01 (20 samples, `REVIEW.json`)",
        1,
    ));
    assert!(
        out.contains("FAIL changelog: demo v2: entry does not match the release: it says a person reviewed it; the manifest says unreviewed"),
        "{out}"
    );

    let out = failing(&changelog.replacen(", mode compliance 100.0%", "", 1));
    assert!(
        out.contains("FAIL changelog: demo v2: entry does not match the release: it does not give the score `mode compliance` (1)"),
        "{out}"
    );

    let out = failing(&changelog.replacen(
        "- scores: command accuracy 75.0%",
        "- scores: command accuracy 12.0%, command accuracy 75.0%",
        1,
    ));
    assert!(
        out.contains(
            "FAIL changelog: demo v2: entry does not match the release: it gives the score `command accuracy` twice"
        ),
        "{out}"
    );

    let out = failing(&changelog.replacen("command accuracy 75.0%", "command accuracy 1", 1));
    assert!(
        out.contains("it gives `command accuracy` as 1; the manifest says 0.75"),
        "{out}"
    );

    let out = failing(&changelog.replacen("- scores:", "- license: MIT\n- scores:", 1));
    assert!(
        out.contains(
            "FAIL changelog: demo v2: entry does not match the release: `- license: MIT` is not a changelog claim"
        ),
        "{out}"
    );
}

#[test]
fn verify_fresh_and_outs_catch_a_stale_workspace_and_a_lost_out() {
    let ws = published();
    releasing(&ws, "weights-3");
    ws.write("changes/next.md", NOTE);
    let out = verify_fails(&ws, &["--fresh"]);
    assert!(out.contains("FAIL fresh: build: stale: the command changed"), "{out}");
    assert!(
        out.contains("param `content` changed from \"weights-1\" to \"weights-3\""),
        "{out}"
    );
    assert!(
        out.contains("FAIL fresh: release: stale: upstream stage `build` will run first"),
        "{out}"
    );

    let ws = published();
    std::fs::remove_dir_all(ws.path(".fabric/store")).unwrap();
    std::fs::remove_file(ws.path("out/model.onnx")).unwrap();
    let out = verify_fails(&ws, &["--outs"]);
    assert!(
        out.contains("FAIL lock: build: out/model.onnx: neither the workspace nor the store holds"),
        "{out}"
    );
}

#[test]
fn verify_reproduce_reruns_in_a_scratch_copy_and_names_differing_files() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.steady]\ncmd = \"mkdir -p s && echo same > s/a.txt\"\nouts = [\"s\"]\n\n[stage.clock]\ncmd = \"mkdir -p c && echo same > c/a.txt && date +%s%N > c/b.txt\"\nouts = [\"c\"]\n",
    );
    ws.ok(&["run"]);
    ws.ok(&["verify", "--reproduce", "steady"]);
    let out = verify_fails(&ws, &["--reproduce", "steady", "clock"]);
    assert!(
        out.contains("FAIL reproduce: clock: not byte-identical when re-run: c/b.txt"),
        "{out}"
    );
    assert!(!out.contains("steady"), "{out}");
    assert_eq!(
        ws.fabric(&["status", "--check"]).code,
        0,
        "the workspace itself is untouched"
    );
}

#[test]
fn the_lock_merge_driver_merges_branches_that_changed_different_stages() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[params]\na = 1\n\n# (a blank line apart, so git merges the two edits)\n\nb = 1\n\n[stage.one]\ncmd = \"echo ${params.a} > one.txt\"\nouts = [\"one.txt\"]\n\n[stage.two]\ncmd = \"echo ${params.b} > two.txt\"\nouts = [\"two.txt\"]\n",
    );
    ws.write(".gitignore", ".fabric/\none.txt\ntwo.txt\n");
    ws.write(".gitattributes", "Fabric.lock merge=fabric-lock\n");
    ws.git(&["init", "-q", "-b", "main"]);
    ws.git(&[
        "config",
        "merge.fabric-lock.driver",
        &format!("{} lock merge %O %A %B", env!("CARGO_BIN_EXE_fabric")),
    ]);
    ws.ok(&["run"]);
    ws.git(&["add", "-A"]);
    ws.git(&["commit", "-qm", "base"]);
    ws.git(&["checkout", "-qb", "other"]);
    ws.write("Fabric.toml", &ws.read("Fabric.toml").replace("a = 1", "a = 2"));
    ws.ok(&["run"]);
    ws.git(&["commit", "-qam", "a = 2"]);
    ws.git(&["checkout", "-q", "main"]);
    ws.write("Fabric.toml", &ws.read("Fabric.toml").replace("b = 1", "b = 2"));
    ws.ok(&["run"]);
    ws.git(&["commit", "-qam", "b = 2"]);
    // Fabric.toml itself merges cleanly (different lines); Fabric.lock needs the driver.
    ws.git(&["merge", "-q", "other", "-m", "merge"]);
    ws.ok(&["checkout"]);
    let status = ws.ok(&["status", "--check"]);
    assert_eq!(
        status.stdout, "Everything is up to date.\n",
        "both stages' entries survived the merge"
    );
    assert_eq!(ws.read("one.txt"), "2\n");
}

#[test]
fn the_repository_itself_verifies() {
    let output = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .args(["verify"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let releases = std::fs::read_dir(format!("{}/artifacts/prime-brain", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .count();
    assert!(
        stdout.contains(&format!("({releases} releases, changelog, lock)")),
        "{stdout}"
    );
}
