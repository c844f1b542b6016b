//! Workspace-relative paths.
//!
//! Everything that enters a fingerprint, the lock or the store names files by
//! [`RelPath`]: `/`-separated, normalized, never absolute and never escaping
//! the workspace. Absolute paths exist only at the edges, joined on demand.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A normalized path relative to the workspace root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

/// Why a path cannot be a workspace-relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is absolute.
    #[error("`{0}` is absolute; paths must be relative to the workspace")]
    Absolute(String),
    /// The path climbs above the workspace root with `..`.
    #[error("`{0}` leaves the workspace")]
    Escapes(String),
    /// The path is empty or only `.`.
    #[error("the path is empty")]
    Empty,
}

impl RelPath {
    /// Parses and normalizes `text` (`a/./b/../c` becomes `a/c`).
    pub fn new(text: &str) -> Result<RelPath, PathError> {
        let path = Path::new(text);
        let mut parts: Vec<String> = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escapes(text.to_string()));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(PathError::Absolute(text.to_string()));
                }
            }
        }
        if parts.is_empty() {
            return Err(PathError::Empty);
        }
        Ok(RelPath(parts.join("/")))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute path under `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// True when `self` is `other` or lies inside it.
    pub fn is_within(&self, other: &RelPath) -> bool {
        self.0 == other.0 || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// True when one of the two paths contains the other.
    pub fn overlaps(&self, other: &RelPath) -> bool {
        self.is_within(other) || other.is_within(self)
    }

    /// Joins a relative child (already normalized, `/`-separated).
    pub fn join(&self, child: &str) -> RelPath {
        RelPath(format!("{}/{}", self.0, child))
    }
}

/// True when `text` is already what [`RelPath::new`] makes of it: non-empty
/// `/`-separated parts, none of them empty, `.` or `..`.
fn is_normal(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        if is_normal(&text) {
            return Ok(RelPath(text)); // as `new` would write it: keep the string
        }
        RelPath::new(&text)
    }
}

impl From<RelPath> for String {
    fn from(path: RelPath) -> String {
        path.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when a directory on the way to `path` under `root` is a symlink
/// that resolves outside `canonical_root` (the root with its own links
/// resolved): writing the out would then write outside the workspace. The
/// last component is not checked: the runner removes an out before its
/// stage runs and a restore replaces it, so a symlink there is replaced, never
/// written through. `plain_dirs` remembers prefixes already found to be plain
/// directories, so outs sharing a parent cost one `stat` in all.
pub fn escapes_through_symlink(
    root: &Path,
    canonical_root: &Path,
    path: &RelPath,
    plain_dirs: &mut std::collections::HashSet<String>,
) -> bool {
    let text = path.as_str();
    for (end, _) in text.match_indices('/') {
        let prefix = &text[..end];
        if plain_dirs.contains(prefix) {
            continue;
        }
        let current = root.join(prefix);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return match current.canonicalize() {
                    Ok(target) => !target.starts_with(canonical_root),
                    Err(_) => true,
                };
            }
            Ok(meta) if meta.is_dir() => {
                plain_dirs.insert(prefix.to_string());
            }
            _ => return false,
        }
    }
    false
}

/// The directory a glob pattern can only match below: its leading
/// components without glob characters (`data/raw/*.csv` → `data/raw`).
pub fn literal_prefix(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for part in pattern.split('/') {
        if part.contains(['*', '?', '[', '{']) {
            break;
        }
        base.push(part);
    }
    if base.as_os_str() == pattern {
        base.pop();
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_rejects_escapes() {
        assert_eq!(RelPath::new("a/./b/../c").unwrap().as_str(), "a/c");
        assert_eq!(RelPath::new("a/b/").unwrap().as_str(), "a/b");
        assert!(matches!(RelPath::new("../x"), Err(PathError::Escapes(_))));
        assert!(matches!(RelPath::new("a/../../x"), Err(PathError::Escapes(_))));
        assert!(matches!(RelPath::new("/etc/passwd"), Err(PathError::Absolute(_))));
        assert!(matches!(RelPath::new("."), Err(PathError::Empty)));
    }

    #[test]
    fn reading_a_path_back_agrees_with_parsing_it() {
        for text in [
            "a", "a/b", "a/./b", "./a", "a/", "a//b", "/a", "..", "a/..", "a/../b", ".", "", "a/.b", "..a/b", "a b/c",
        ] {
            assert_eq!(RelPath::try_from(text.to_string()), RelPath::new(text), "{text:?}");
        }
    }

    #[test]
    fn containment_respects_component_boundaries() {
        let data = RelPath::new("data").unwrap();
        assert!(RelPath::new("data/x.csv").unwrap().is_within(&data));
        assert!(data.is_within(&data));
        assert!(!RelPath::new("database").unwrap().is_within(&data));
        assert!(data.overlaps(&RelPath::new("data/a/b").unwrap()));
    }
}
