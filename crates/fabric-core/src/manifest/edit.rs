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

/// Sets each param of `params` (`NAME=VALUE`, read as `-P` reads it) in
/// every manifest file of `workspace` that declares it (as `-P` overrides
/// them all); the files changed, workspace-relative. Every edit is made
/// and checked in memory first: on any error no file is written.
pub fn set_params(workspace: &Workspace, params: &[String]) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut texts: BTreeMap<PathBuf, String> = BTreeMap::new();
    for param in params {
        let (name, text) = param.split_once('=').unwrap_or((param, ""));
        let mut found = false;
        for relative in &workspace.sources {
            let source = match texts.get(relative) {
                Some(text) => text.clone(),
                None => std::fs::read_to_string(workspace.root.join(relative))
                    .map_err(|e| Diagnostic::new(format!("cannot read {}: {e}", relative.display())))?,
            };
            let edited = set_in(&source, name, text).map_err(|problem| {
                Diagnostic::new(format!("cannot set `{param}` in {}: {problem}", relative.display()))
                    .hint("change the declaration by hand")
            })?;
            if let Some(edited) = edited {
                found = true;
                texts.insert(relative.clone(), edited);
            }
        }
        if !found {
            return Err(Diagnostic::new(format!("no manifest declares a param `{name}`")));
        }
    }
    for (relative, text) in &texts {
        write(&workspace.root.join(relative), text)
            .map_err(|e| Diagnostic::new(format!("cannot write {}: {e}", relative.display())))?;
    }
    Ok(texts.into_keys().collect())
}

/// `source` with param `name` declared as `text` makes it, or `None` when
/// `source` does not declare it.
fn set_in(source: &str, name: &str, text: &str) -> Result<Option<String>, String> {
    let declared = toml::from_str::<Params>(source).map_err(|e| e.message().to_string())?;
    let Some(value) = declared.params.get(name) else {
        return Ok(None);
    };
    let current = toml_to_json(value.get_ref());
    // A table's span is its header, not its keys: not edited here.
    if current.is_object() {
        return Err(format!("`{name}` is a table"));
    }
    let literal = override_value(&current, text)
        .and_then(|new| literal(&current, new))
        .ok_or_else(|| format!("`{text}` does not fit `{name}` as declared ({current})"))?;
    let span = value.span();
    let edited = format!("{}{literal}{}", &source[..span.start], &source[span.end..]);
    // The edit must read back as exactly the value written.
    match toml::from_str::<Params>(&edited) {
        Ok(after) if after.params.get(name).map(|v| v.get_ref().to_string()) == Some(literal) => Ok(Some(edited)),
        _ => Err(format!("`{name}` is not declared as a plain `{name} = VALUE` line")),
    }
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
        let params = ["lr=1", "name=b c", "hidden=[128,64]", "epochs=8"].map(String::from);
        assert_eq!(set_params(&workspace, &params).unwrap(), [PathBuf::from("Fabric.toml")]);
        let edited =
            "# the workspace\n[params]\nlr = 1.0   # learning rate\nname = \"b c\"\nhidden = [128, 64]\nepochs = 8\n";
        assert_eq!(std::fs::read_to_string(dir.path().join("Fabric.toml")).unwrap(), edited);
        // One bad param: nothing is written, not even the good one before it.
        for bad in ["epochs=many", "nope=1"] {
            assert!(set_params(&workspace, &["lr=2".into(), bad.into()]).is_err(), "{bad}");
        }
        assert_eq!(std::fs::read_to_string(dir.path().join("Fabric.toml")).unwrap(), edited);
    }

    #[test]
    fn a_table_or_dotted_param_is_left_to_the_user() {
        assert!(
            set_in("[params.model]\nlr = 0.1\n", "model", "{lr=0.2}")
                .unwrap_err()
                .contains("table")
        );
        assert!(set_in("[params]\nmodel.lr = 0.1\n", "model", "{lr=0.2}").is_err());
        assert_eq!(set_in("[params]\nx = 1\n", "y", "2"), Ok(None));
    }
}
