//! Matrix stages: one declared stage, a stage per combination of values,
//! each with its own outs, fingerprint and lock entry.

use super::Workspace;

/// `train` over two seeds and two sizes, an aggregation of all four, and a
/// stage reading one of them.
fn grid(ws: &Workspace, seeds: &str) -> String {
    format!(
        r#"[workspace]
name = "grid"

[stage.train]
cmd = "{tick}; mkdir -p out && echo seed=${{matrix.seed}} size=${{matrix.size}} > out/${{matrix.size}}-${{matrix.seed}}.txt"
outs = ["out/${{matrix.size}}-${{matrix.seed}}.txt"]
[stage.train.matrix]
seed = {seeds}
size = ["small", "large"]

[stage.report]
cmd = "{report}; cat out/*.txt > report.txt"
deps = ["out/*.txt"]
after = ["train"]
outs = ["report.txt"]

[stage.best]
cmd = "cp ${{stage.train@seed=2,size=large.outs[0]}} best.txt"
deps = ["${{stage.train@seed=2,size=large.outs[0]}}"]
outs = ["best.txt"]
"#,
        tick = ws.tick("train"),
        report = ws.tick("report"),
    )
}

#[test]
fn a_matrix_stage_runs_once_per_combination_and_reruns_only_what_changed() {
    let ws = Workspace::new();
    ws.write("Fabric.toml", &grid(&ws, "[1, 2]"));
    let names = [
        "train@seed=1,size=large",
        "train@seed=1,size=small",
        "train@seed=2,size=large",
        "train@seed=2,size=small",
    ];
    let dag = ws.fabric(&["dag"]);
    assert_eq!(dag.code, 0, "{}", dag.stderr);
    for name in names {
        assert!(dag.stdout.contains(name), "{name} is not in the dag:\n{}", dag.stdout);
    }

    let mermaid = ws.fabric(&["dag", "--format", "mermaid"]);
    assert!(
        mermaid
            .stdout
            .contains("  train_seed_1_size_large[\"train@seed=1,size=large\"]\n"),
        "{}",
        mermaid.stdout
    );

    let run = ws.fabric(&["run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ws.count("train"), 4);
    assert_eq!(ws.count("report"), 1, "the aggregation runs after all four, once");
    assert_eq!(
        ws.read("report.txt"),
        "seed=1 size=large\nseed=2 size=large\nseed=1 size=small\nseed=2 size=small\n"
    );
    assert_eq!(ws.read("best.txt"), "seed=2 size=large\n");
    let lock = fabric_core::lock::Lock::read(&ws.path("Fabric.lock")).unwrap();
    for name in names {
        let entry = &lock.stage[name];
        assert!(
            entry.outs.keys().any(|out| out.starts_with("out/")),
            "{name}: {:?}",
            entry.outs
        );
    }
    let fingerprints: std::collections::BTreeSet<_> = names.iter().map(|n| &lock.stage[*n].fingerprint).collect();
    assert_eq!(fingerprints.len(), 4, "each combination has its own fingerprint");

    // A third seed: only its two stages run, and the aggregation again.
    ws.write("Fabric.toml", &grid(&ws, "[1, 2, 3]"));
    let again = ws.fabric(&["run"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(ws.count("train"), 6, "{}", again.stderr);
    assert_eq!(ws.count("report"), 2);
    assert_eq!(ws.read("report.txt").lines().count(), 6);

    // The declared name as a target stands for every expansion; one
    // expansion can be named alone.
    std::fs::remove_file(ws.path("out/small-3.txt")).unwrap();
    let one = ws.fabric(&["run", "train@seed=3,size=small"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(
        one.stderr.contains("restored train@seed=3,size=small"),
        "{}",
        one.stderr
    );
    assert_eq!(ws.read("out/small-3.txt"), "seed=3 size=small\n");
    let all = ws.fabric(&["run", "--force=train"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert_eq!(ws.count("train"), 12, "{}", all.stderr);
}

#[test]
fn matrix_values_enter_the_fingerprint_and_the_lock() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        "[stage.fit]\ncmd = \"echo lr=${matrix.lr} > fit-${matrix.name}.txt\"\nouts = [\"fit-${matrix.name}.txt\"]\n[stage.fit.matrix]\nlr = [0.1]\nname = [\"a\"]\n",
    );
    assert_eq!(ws.fabric(&["run"]).code, 0);
    assert_eq!(ws.read("fit-a.txt"), "lr=0.1\n");
    let lock = ws.read("Fabric.lock");
    assert!(lock.contains("[stage.\"fit@lr=0.1,name=a\"]"), "{lock}");
    assert!(lock.contains("\"matrix.lr\" = \"0.1\""), "{lock}");
}

#[test]
fn a_release_of_several_expansions_names_each_and_keeps_only_workspace_params() {
    let ws = Workspace::new();
    ws.write(
        "Fabric.toml",
        r#"[params]
tag = "t1"

[stage.fit]
cmd = "echo ${params.tag} seed=${matrix.seed} > fit-${matrix.seed}.txt"
outs = ["fit-${matrix.seed}.txt"]
[stage.fit.matrix]
seed = [1, 2]

[stage.release]
step = "fabric.release"
deps = ["fit-1.txt", "fit-2.txt"]
outs = ["receipt.json"]
[stage.release.with]
name = "demo"
version = "v1"
"#,
    );
    ws.write(
        "changes/next.md",
        "### What\nTwo fits.\n\n### Why\nSeeds.\n\n### How\nfabric run.\n",
    );
    ws.ok(&["run"]);
    let manifest = fabric_core::release::Manifest::read(&ws.path("artifacts/demo/v1/MANIFEST.toml")).unwrap();
    let stages: Vec<&String> = manifest.stages.keys().collect();
    assert_eq!(stages, ["fit@seed=1", "fit@seed=2"]);
    assert_eq!(
        manifest.params.keys().collect::<Vec<_>>(),
        ["tag"],
        "{:?}",
        manifest.params
    );
}
