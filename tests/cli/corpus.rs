//! R3: a corpus of broken manifests (`tests/manifests/CASE/`), each with the
//! exact diagnostics `fabric` must print (`expected.txt`) and exit code 2,
//! never a panic. `FABRIC_BLESS=1` rewrites the expected files after a
//! deliberate change; review the diff.

use super::Workspace;

#[test]
fn every_broken_manifest_gets_its_exact_diagnostic() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests");
    let bless = std::env::var_os("FABRIC_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&corpus).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut mismatches = Vec::new();
    for case in &cases {
        let ws = Workspace::new();
        for file in walkdir::WalkDir::new(case)
            .into_iter()
            .map(Result::unwrap)
            .filter(|e| e.file_type().is_file())
        {
            let relative = file.path().strip_prefix(case).unwrap().to_string_lossy().into_owned();
            if relative != "expected.txt" {
                ws.write(&relative, &std::fs::read_to_string(file.path()).unwrap());
            }
        }
        let outcome = ws.fabric(&["run", "--dry-run"]);
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(outcome.code, 2, "{name}: exit code\n{}", outcome.stderr);
        assert!(!outcome.stderr.contains("panicked"), "{name}: {}", outcome.stderr);
        let expected_path = case.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &outcome.stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if outcome.stderr != expected {
            mismatches.push(format!(
                "{name}:\n--- expected\n{expected}--- actual\n{}",
                outcome.stderr
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
