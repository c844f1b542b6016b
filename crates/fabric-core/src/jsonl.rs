//! JSON Lines: one value per line, with errors that name the file and line.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Parses every line of `text` (read from `path`) as a `T`. A bad line is an
/// error `PATH:LINE: WHAT (why)`, followed by `; HINT` when a hint is given.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path, what: &str, hint: Option<&str>) -> anyhow::Result<Vec<T>> {
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                let hint = hint.map(|h| format!("; {h}")).unwrap_or_default();
                anyhow::anyhow!("{}:{}: {what} ({e}){hint}", path.display(), n + 1)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_line_is_named_with_its_file_and_number() {
        let path = std::path::Path::new("data/x.jsonl");
        let parsed: Vec<u32> = super::parse("1\n2\n", path, "a number", None).unwrap();
        assert_eq!(parsed, [1, 2]);
        let error = super::parse::<u32>("1\nx\n", path, "a number", Some("fix it")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("data/x.jsonl:2: a number (") && message.ends_with("; fix it"),
            "{message}"
        );
    }
}
