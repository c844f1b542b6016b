//! Changing manifests in place: a param's declared value rewritten where it
//! is declared, every other byte (comments, order, layout) kept. What
//! `fabric exp apply` uses to bring an experiment's overrides home.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;
use toml::Spanned;

use super::{Workspace, override_value, toml_to_json};
use crate::diagnostic::Diagnostic;

/// The `[params]` of a manifest file, with spans; its other tables ignored.
#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    params: BTreeMap<String, Spanned<toml::Value>>,
}

/// Sets param `name` to `text`, read as `-P name=text` reads it, in every
/// manifest file of `workspace` that declares it (as `-P` overrides them
/// all); the files changed, workspace-relative.
pub fn set_param(workspace: &Workspace, name: &str, text: &str) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut changed = Vec::new();
    for relative in &workspace.sources {
        let path = workspace.root.join(relative);
        let source = std::fs::read_to_string(&path)
            .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", relative.display())))?;
        let declared = toml::from_str::<Params>(&source)
            .map_err(|e| Diagnostic::new(format!("cannot read {}: {}", relative.display(), e.message())))?;
        let Some(value) = declared.params.get(name) else {
            continue;
        };
        let current = toml_to_json(value.get_ref());
        let literal = override_value(&current, text)
            .and_then(|new| literal(&current, new))
            .ok_or_else(|| {
                Diagnostic::new(format!(
                    "`{name}={text}` does not fit `{name}` as {} declares it ({current})",
                    relative.display()
                ))
                .hint("change the declaration by hand")
            })?;
        let span = value.span();
        let edited = format!("{}{literal}{}", &source[..span.start], &source[span.end..]);
        write(&path, &edited).map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", relative.display())))?;
        changed.push(relative.clone());
    }
    if changed.is_empty() {
        return Err(Diagnostic::new(format!("no manifest declares a param `{name}`")));
    }
    Ok(changed)
}

/// `new` written as TOML, keeping a float param a float (`1` → `1.0`).
fn literal(declared: &Json, new: Json) -> Option<String> {
    if declared.is_f64()
        && let Some(n) = new.as_i64()
    {
        return Some(toml::Value::Float(n as f64).to_string());
    }
    toml::Value::try_from(new).ok().map(|value| value.to_string())
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    crate::atomic::replace(path, |file| std::io::Write::write_all(file, text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_param_is_rewritten_where_declared_and_nothing_else_moves() {
        let dir = tempfile::tempdir().unwrap();
        let manifest =
            "# the workspace\n[params]\nlr = 0.1   # learning rate\nname = \"a\"\nhidden = [64, 32]\nepochs = 4\n";
        std::fs::write(dir.path().join("Fabric.toml"), manifest).unwrap();
        let workspace = super::super::load(dir.path(), &[], &crate::steps::Registry::default()).unwrap();
        for (name, text) in [("lr", "1"), ("name", "b c"), ("hidden", "[128,64]"), ("epochs", "8")] {
            assert_eq!(
                set_param(&workspace, name, text).unwrap(),
                [PathBuf::from("Fabric.toml")]
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("Fabric.toml")).unwrap(),
            "# the workspace\n[params]\nlr = 1.0   # learning rate\nname = \"b c\"\nhidden = [128, 64]\nepochs = 8\n"
        );
        assert!(
            set_param(&workspace, "epochs", "many")
                .unwrap_err()
                .message
                .contains("does not fit")
        );
        assert!(set_param(&workspace, "nope", "1").is_err());
    }
}
