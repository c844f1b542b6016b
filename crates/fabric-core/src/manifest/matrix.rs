//! `[stage.NAME.matrix]`: one declared stage expanded into a stage per
//! combination of values.
//!
//! A matrix is a table of lists (`seed = [1, 2]`, `hidden = [[64, 32], [128, 64]]`).
//! Each combination becomes a stage of its own, named
//! `NAME@KEY=VALUE,KEY=VALUE` with the keys in sorted order and a list's
//! items joined by `-` (`train@hidden=64-32,seed=1`), with its own outs,
//! fingerprint and lock entry. Its `cmd`, `with`, `deps` and `outs` read the
//! values as `${matrix.KEY}`. The declared name stands for every expansion
//! where stages are named: as a `fabric run` target and in `after`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;
use toml::Spanned;

use super::interpolate::is_name;
use super::resources::Invalid;

/// A matrix as written: keys and their lists, with spans.
pub type RawMatrix = Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>;

/// The most stages one matrix may expand to.
pub const MOST_COMBINATIONS: usize = 1000;

/// How a matrix value an expansion used is named among its params
/// (`matrix.KEY`).
pub fn param_name(key: &str) -> String {
    format!("matrix.{key}")
}

/// Whether a used param is a matrix value (`matrix.KEY`), which belongs to
/// one expansion rather than to the workspace.
pub fn is_matrix_param(name: &str) -> bool {
    name.starts_with("matrix.")
}

/// One combination: a value per key, and the stage it names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Combination {
    /// `NAME@KEY=VALUE,…`.
    pub name: String,
    /// The value of each key (what `${matrix.KEY}` gives).
    pub values: BTreeMap<String, Json>,
}

/// The combinations `matrix` declares for the stage `base`, the last key
/// varying fastest; or every mistake in it.
pub(crate) fn expand(base: &str, matrix: &RawMatrix) -> Result<Vec<Combination>, Vec<Invalid>> {
    let mut errors = Vec::new();
    let mut axes: Vec<(&str, Vec<(String, Json)>)> = Vec::new();
    for (key, values) in matrix.get_ref() {
        let invalid = |message: String, hint: &'static str| Invalid {
            span: values.span(),
            message,
            hint,
        };
        let name = key.get_ref();
        if !is_name(name) {
            errors.push(Invalid {
                span: key.span(),
                message: format!("`{name}` is not a valid matrix key"),
                hint: "use letters, digits, `_` and `-`",
            });
            continue;
        }
        let toml::Value::Array(items) = values.get_ref() else {
            errors.push(invalid(
                format!("matrix key `{name}` must list its values"),
                "write a list, e.g. `seed = [1, 2, 3]`",
            ));
            continue;
        };
        if items.is_empty() {
            errors.push(invalid(
                format!("matrix key `{name}` lists no values"),
                "list at least one value, or remove the key",
            ));
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut axis = Vec::new();
        for item in items {
            match label(item) {
                Some(label) if !seen.insert(label.clone()) => errors.push(invalid(
                    format!("matrix key `{name}` lists `{label}` twice"),
                    "each value names a stage; list it once",
                )),
                Some(label) => axis.push((label, super::toml_to_json(item))),
                None => errors.push(invalid(
                    format!("matrix key `{name}` has a value that cannot name a stage: `{item}`"),
                    "values are numbers, booleans, strings of letters, digits, `_`, `-` and `.`, or lists of those",
                )),
            }
        }
        axes.push((name, axis));
    }
    if matrix.get_ref().is_empty() {
        errors.push(Invalid {
            span: matrix.span(),
            message: "`matrix` is empty".into(),
            hint: "give it a key with a list of values, e.g. `seed = [1, 2]`",
        });
    }
    let count = axes.iter().try_fold(1usize, |n, (_, axis)| n.checked_mul(axis.len()));
    if count.is_none_or(|count| count > MOST_COMBINATIONS) {
        errors.push(Invalid {
            span: matrix.span(),
            message: format!(
                "`matrix` expands to {} stages; at most {MOST_COMBINATIONS} are allowed",
                count.map_or_else(|| "too many".to_string(), |n| n.to_string())
            ),
            hint: "split the stage, or list fewer values",
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut combinations = vec![Vec::new()];
    for (key, axis) in &axes {
        combinations = combinations
            .into_iter()
            .flat_map(|chosen: Vec<(&str, &(String, Json))>| {
                axis.iter().map(move |value| {
                    let mut chosen = chosen.clone();
                    chosen.push((key, value));
                    chosen
                })
            })
            .collect();
    }
    Ok(combinations
        .into_iter()
        .map(|chosen| Combination {
            name: format!(
                "{base}@{}",
                chosen
                    .iter()
                    .map(|(key, (label, _))| format!("{key}={label}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            values: chosen
                .into_iter()
                .map(|(key, (_, value))| (key.to_string(), value.clone()))
                .collect(),
        })
        .collect())
}

/// How `value` appears in a stage name: a number, boolean or plain string
/// as written, a list as its items joined by `-`; `None` for what cannot.
fn label(value: &toml::Value) -> Option<String> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) if x.is_finite() => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::String(s)
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
        {
            Some(s.clone())
        }
        _ => None,
    };
    match value {
        toml::Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(|labels| labels.join("-")),
        other => scalar(other),
    }
}

/// Whether `name` can name a stage: a declared name, or an expansion's
/// (`NAME@KEY=VALUE,…`).
pub fn is_stage_name(name: &str) -> bool {
    match name.split_once('@') {
        None => is_name(name),
        Some((base, values)) => {
            is_name(base)
                && !values.is_empty()
                && values.chars().all(|c| c.is_ascii_alphanumeric() || "_-.=,".contains(c))
        }
    }
}

/// The declared name of a stage: `name` up to an expansion's `@`.
pub fn base(name: &str) -> &str {
    name.split_once('@').map_or(name, |(base, _)| base)
}

/// Whether stage `name` is an expansion of the matrix stage declared as `declared`.
pub fn expands(declared: &str, name: &str) -> bool {
    name.split_once('@').is_some_and(|(base, _)| base == declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(text: &str) -> RawMatrix {
        #[derive(serde::Deserialize)]
        struct File {
            matrix: RawMatrix,
        }
        toml::from_str::<File>(text).unwrap().matrix
    }

    #[test]
    fn every_combination_is_a_stage_named_by_its_values() {
        let expanded = expand(
            "train",
            &matrix("[matrix]\nseed = [1, 2]\nhidden = [[64, 32], [128]]\nlr = [0.001]\n"),
        )
        .unwrap();
        let names: Vec<&str> = expanded.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "train@hidden=64-32,lr=0.001,seed=1",
                "train@hidden=64-32,lr=0.001,seed=2",
                "train@hidden=128,lr=0.001,seed=1",
                "train@hidden=128,lr=0.001,seed=2",
            ]
        );
        assert_eq!(expanded[0].values["hidden"], serde_json::json!([64, 32]));
        assert_eq!(expanded[3].values["seed"], serde_json::json!(2));
        assert!(names.iter().all(|name| is_stage_name(name) && base(name) == "train"));
    }

    #[test]
    fn mistakes_are_reported_where_they_are() {
        let text = "[matrix]\nseed = 3\nnone = []\ntwice = [1, 1]\npath = [\"a/b\"]\n\"x y\" = [1]\n";
        let errors = expand("train", &matrix(text)).unwrap_err();
        let said: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (&text[e.span.clone()], e.message.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                ("[]", "matrix key `none` lists no values"),
                (
                    "[\"a/b\"]",
                    "matrix key `path` has a value that cannot name a stage: `\"a/b\"`"
                ),
                ("3", "matrix key `seed` must list its values"),
                ("[1, 1]", "matrix key `twice` lists `1` twice"),
                ("\"x y\"", "`x y` is not a valid matrix key"),
            ]
        );
        assert!(
            expand("t", &matrix("[matrix]\n")).unwrap_err()[0]
                .message
                .contains("empty")
        );
        let big = "[matrix]\na = [1,2,3,4,5,6,7,8,9,10]\nb = [1,2,3,4,5,6,7,8,9,10]\nc = [1,2,3,4,5,6,7,8,9,10,11]\n";
        assert!(
            expand("t", &matrix(big)).unwrap_err()[0]
                .message
                .contains("expands to 1100 stages")
        );
    }

    #[test]
    fn stage_names_with_and_without_values() {
        assert!(is_stage_name("train") && is_stage_name("train@lr=0.1,seed=2"));
        assert!(!is_stage_name("train@") && !is_stage_name("tr ain") && !is_stage_name("train@a b"));
        assert_eq!(base("train@seed=1"), "train");
        assert!(expands("train", "train@seed=1"));
        assert!(!expands("train", "train") && !expands("tr", "train@seed=1"));
    }
}
