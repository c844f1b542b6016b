//! The validated manifest, kept in `.fabric/manifest.parsed`.
//!
//! Parsing and validating thousands of stages is most of a no-op run's time,
//! so the last workspace loaded is kept (postcard, a compact binary
//! encoding) under the BLAKE3 of what it
//! was made from: `Fabric.toml`'s text, the root, the overrides and the fabric
//! binary ([`KeyEncoder::binary`]). It is used only when, in addition, the
//! `include` patterns still name the same files with the same content (each
//! kept with its hash), so it can never disagree with the manifest; a stale
//! or damaged copy is ignored and rewritten. What the manifest alone cannot
//! vouch for is checked again on every load: that no out leads outside the
//! workspace through a symlink.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::Glob;
use serde::{Deserialize, Serialize};

use super::{MANIFEST, Override, Workspace, included_files};
use crate::diagnostic::Location;
use crate::digest::{Digest, KeyEncoder};
use crate::stat_cache::Look;

/// What `.fabric/manifest.parsed` starts with.
const MAGIC: &[u8] = b"FABRICMANIFEST1\n";

/// The copy's body.
#[derive(Serialize, Deserialize)]
struct Kept {
    /// `[workspace] include` patterns as written.
    includes: Vec<String>,
    /// The BLAKE3 of each included file, in the order of `workspace.sources[1..]`.
    included: Vec<Digest>,
    /// The validated workspace (locations without their text).
    workspace: Workspace,
}

fn path(root: &Path) -> PathBuf {
    crate::layout::Layout::new(root).manifest_cache()
}

fn key(root: &Path, overrides: &[Override], manifest: &str) -> Digest {
    let mut key = KeyEncoder::new("fabric-manifest-parsed");
    key.binary().text(b'r', &root.to_string_lossy());
    for o in overrides {
        key.text(b'n', &o.name)
            .text(b'=', &o.value)
            .text(b'f', o.flag.as_deref().unwrap_or(""));
    }
    key.text(b'm', manifest).finish()
}

/// The workspace as last loaded, when nothing it was made from has changed.
pub(super) fn read(root: &Path, canonical_root: &Path, overrides: &[Override]) -> Option<Workspace> {
    let mut look = Look::now(root, MANIFEST);
    let manifest = std::fs::read_to_string(root.join(MANIFEST)).ok()?;
    look.hash = Some(Digest::of(manifest.as_bytes()));
    let mut observed = vec![look];
    let bytes = std::fs::read(path(root)).ok()?;
    let rest = bytes.strip_prefix(MAGIC)?;
    let (stored, body) = rest.split_at_checked(32)?;
    if stored != key(root, overrides, &manifest).0 {
        return None;
    }
    let Kept {
        includes,
        included,
        mut workspace,
    } = postcard::from_bytes(body).ok()?;

    let mut files = BTreeSet::new();
    for pattern in &includes {
        let glob = Glob::new(pattern).ok()?.compile_matcher();
        files.extend(included_files(root, pattern, &glob, &mut observed));
    }
    if workspace.sources.first().map(PathBuf::as_path) != Some(Path::new(MANIFEST))
        || !files.iter().eq(&workspace.sources[1..])
        || included.len() != files.len()
    {
        return None;
    }
    let mut texts: HashMap<PathBuf, Arc<str>> = HashMap::new();
    texts.insert(PathBuf::from(MANIFEST), manifest.into());
    for (file, digest) in files.into_iter().zip(&included) {
        let mut look = Look::now(root, &file.to_string_lossy());
        let text = std::fs::read_to_string(root.join(&file)).ok()?;
        if Digest::of(text.as_bytes()) != *digest {
            return None;
        }
        look.hash = Some(*digest);
        observed.push(look);
        texts.insert(file, text.into());
    }

    let mut plain_dirs = HashSet::new();
    let escapes = workspace
        .stages
        .iter()
        .flat_map(|s| s.out_paths())
        .any(|out| crate::paths::escapes_through_symlink(root, canonical_root, out, &mut plain_dirs));
    if escapes {
        return None; // a full load reports it, with its location
    }
    for stage in &mut workspace.stages {
        let locations = std::iter::once(&mut stage.at)
            .chain(stage.deps.iter_mut().map(|d| &mut d.at))
            .chain(stage.outs.iter_mut().map(|o| &mut o.at))
            .chain(stage.after.iter_mut().map(|a| &mut a.at));
        for location in locations {
            attach(location, &texts)?;
        }
    }
    workspace.observed = observed;
    Some(workspace)
}

/// Gives a location read from the copy the text of its file again.
fn attach(location: &mut Location, texts: &HashMap<PathBuf, Arc<str>>) -> Option<()> {
    location.source = texts.get(&location.file)?.clone();
    Some(())
}

/// Keeps `workspace`, loaded from `texts` (one per `workspace.sources`) with
/// the `includes` patterns.
pub(super) fn write(
    root: &Path,
    overrides: &[Override],
    includes: &[String],
    texts: &[Arc<str>],
    workspace: &Workspace,
) -> std::io::Result<()> {
    let (manifest, included) = texts.split_first().ok_or(std::io::ErrorKind::InvalidInput)?;
    let kept = KeptRef {
        includes,
        included: included.iter().map(|t| Digest::of(t.as_bytes())).collect(),
        workspace,
    };
    let bytes = postcard::to_stdvec(&kept).map_err(std::io::Error::other)?;
    let key = key(root, overrides, manifest);
    if !crate::layout::Layout::new(root).state_dir().is_dir() {
        return Ok(()); // loading alone does not create the state directory
    }
    crate::atomic::replace(&path(root), |file| {
        file.write_all(MAGIC)?;
        file.write_all(&key.0)?;
        file.write_all(&bytes)
    })
}

/// [`Kept`], borrowed for writing.
#[derive(Serialize)]
struct KeptRef<'a> {
    includes: &'a [String],
    included: Vec<Digest>,
    workspace: &'a Workspace,
}

/// Keeps a value that only JSON can describe (params, a step's `with`) as
/// JSON text inside the binary copy.
pub(super) mod json_text {
    use serde::de::{DeserializeOwned, Error};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(value).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
        // Owned: a JSON copy (a step job) escapes the text's quotes.
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::Registry;

    fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".fabric")).unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn load(root: &Path, overrides: &[Override]) -> Workspace {
        super::super::load(root, overrides, &Registry::default()).unwrap()
    }

    /// Keeps `workspace` renamed, under the key of what is on disk now, so a
    /// load that returns the new name was read from the copy.
    fn mark(root: &Path, overrides: &[Override], mut workspace: Workspace) {
        workspace.name = "from-the-copy".into();
        let texts: Vec<Arc<str>> = workspace
            .sources
            .iter()
            .map(|file| std::fs::read_to_string(root.join(file)).unwrap().into())
            .collect();
        let includes = vec!["pipelines/*.toml".to_string()];
        write(root, overrides, &includes, &texts, &workspace).unwrap();
    }

    const MANIFEST_TEXT: &str = "[workspace]\ninclude = [\"pipelines/*.toml\"]\n\n[params]\nn = 1\n\n\
        [stage.a]\ncmd = \"echo ${params.n} > out/a\"\nouts = [\"out/a\"]\n";
    const PIPELINE_TEXT: &str = "[pipeline]\nname = \"p\"\n\n[stage.b]\ncmd = \"cat out/a > out/b\"\n\
        deps = [\"out/a\", \"data/*.csv\"]\nouts = [\"out/b\"]\n";

    #[test]
    fn an_unchanged_manifest_is_read_from_its_copy_with_its_locations() {
        let dir = workspace(&[(MANIFEST, MANIFEST_TEXT), ("pipelines/p.toml", PIPELINE_TEXT)]);
        let first = load(dir.path(), &[]);
        mark(dir.path(), &[], first.clone());
        let second = load(dir.path(), &[]);
        assert_eq!(second.name, "from-the-copy");
        for (a, b) in first.stages.iter().zip(&second.stages) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.action, b.action);
            assert_eq!(a.params, b.params);
            assert_eq!(a.at, b.at, "locations keep their file's text");
            assert_eq!(format!("{:?}", a.deps), format!("{:?}", b.deps));
        }
        let b = second.stage("b").unwrap();
        assert!(matches!(&b.deps[1].value, super::super::Dep::Glob { matcher, .. } if matcher.is_match("data/x.csv")));
        assert_eq!(b.at.line_column(), (4, 1));
    }

    #[test]
    fn any_change_to_what_the_workspace_was_made_from_is_seen() {
        let dir = workspace(&[(MANIFEST, MANIFEST_TEXT), ("pipelines/p.toml", PIPELINE_TEXT)]);
        let root = dir.path();
        let fresh = |overrides: &[Override]| {
            mark(root, overrides, load(root, overrides));
            assert_eq!(load(root, overrides).name, "from-the-copy", "the copy is used");
        };

        fresh(&[]);
        std::fs::write(root.join(MANIFEST), MANIFEST_TEXT.replace("n = 1", "n = 2")).unwrap();
        let edited = load(root, &[]);
        assert_ne!(edited.name, "from-the-copy", "Fabric.toml edited");
        assert_eq!(edited.stage("a").unwrap().params["n"], 2);

        fresh(&[]);
        std::fs::write(root.join("pipelines/p.toml"), PIPELINE_TEXT.replace("out/b", "out/c")).unwrap();
        let edited = load(root, &[]);
        assert_ne!(edited.name, "from-the-copy", "an included file edited");
        assert_eq!(edited.stage("b").unwrap().outs[0].value.as_str(), "out/c");

        fresh(&[]);
        std::fs::write(
            root.join("pipelines/q.toml"),
            "[pipeline]\nname = \"q\"\n\n[stage.q]\ncmd = \"true\"\n",
        )
        .unwrap();
        let edited = load(root, &[]);
        assert_ne!(edited.name, "from-the-copy", "a file added to an include glob");
        assert!(edited.stage("q").is_some());

        let three = [Override {
            name: "n".into(),
            value: "3".into(),
            flag: None,
        }];
        fresh(&[]);
        let overridden = load(root, &three);
        assert_ne!(overridden.name, "from-the-copy", "other overrides");
        assert_eq!(overridden.stage("a").unwrap().params["n"], 3);

        fresh(&[]);
        let kept = std::fs::read(path(root)).unwrap();
        let mut damaged = kept.clone();
        let last = damaged.len() - 1;
        damaged.truncate(last);
        std::fs::write(path(root), damaged).unwrap();
        assert_ne!(load(root, &[]).name, "from-the-copy", "a damaged copy");
    }

    #[test]
    fn a_symlink_escape_made_after_the_copy_is_still_refused() {
        let dir = workspace(&[(MANIFEST, MANIFEST_TEXT), ("pipelines/p.toml", PIPELINE_TEXT)]);
        let root = dir.path();
        load(root, &[]);
        assert!(path(root).exists());
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        let error = super::super::load(root, &[], &Registry::default()).unwrap_err();
        assert!(format!("{error:?}").contains("leads outside the workspace through a symlink"));
    }
}
