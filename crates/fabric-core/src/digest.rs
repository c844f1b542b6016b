//! [`Digest`]: a BLAKE3 hash, written as 64 hex digits, and [`KeyEncoder`],
//! the canonical length-prefixed encoding every hashed structure goes through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Digest {
        Digest(*hash.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(text: &str) -> Result<Digest, String> {
        let hash = blake3::Hash::from_hex(text).map_err(|_| format!("`{text}` is not a 64-digit BLAKE3 hash"))?;
        Ok(hash.into())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Feeds fields into BLAKE3 so that no two different sequences of fields
/// encode the same bytes: every field is a tag plus a length-prefixed value.
pub struct KeyEncoder(blake3::Hasher);

impl KeyEncoder {
    /// Starts an encoding under a domain name that includes its format version
    /// (`fabric-fingerprint-v1`), so keys of different kinds or versions never collide.
    pub fn new(domain: &str) -> KeyEncoder {
        let mut encoder = KeyEncoder(blake3::Hasher::new());
        encoder.bytes(b'D', domain.as_bytes());
        encoder
    }

    /// Adds one tagged, length-prefixed field.
    pub fn bytes(&mut self, tag: u8, value: &[u8]) -> &mut Self {
        self.0.update(&[tag]);
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    /// Adds a file's bytes as one field, streamed (length from its metadata).
    pub fn file(&mut self, tag: u8, path: &std::path::Path) -> std::io::Result<&mut Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        self.0.update(&[tag]);
        self.0.update(&len.to_le_bytes());
        self.0.update_reader(file)?;
        Ok(self)
    }

    /// Adds a string field.
    pub fn text(&mut self, tag: u8, value: &str) -> &mut Self {
        self.bytes(tag, value.as_bytes())
    }

    /// Adds the identity of the running fabric: its version and the size and
    /// modification time of its executable, so a copy of derived state
    /// (parsed lock, validated manifest) kept by one build is never trusted
    /// by another, even of the same version.
    pub fn binary(&mut self) -> &mut Self {
        self.text(b'v', env!("CARGO_PKG_VERSION"));
        let identity = std::env::current_exe()
            .and_then(std::fs::metadata)
            .map(|meta| {
                use std::os::unix::fs::MetadataExt;
                format!("{} {} {}", meta.len(), meta.mtime(), meta.mtime_nsec())
            })
            .unwrap_or_default();
        self.text(b'x', &identity)
    }

    /// The digest of everything added.
    pub fn finish(&self) -> Digest {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let digest = Digest::of(b"fabric");
        assert_eq!(digest.to_string().parse::<Digest>().unwrap(), digest);
        assert!("xyz".parse::<Digest>().is_err());
    }

    #[test]
    fn field_boundaries_matter() {
        let mut a = KeyEncoder::new("t");
        a.text(b's', "ab").text(b's', "c");
        let mut b = KeyEncoder::new("t");
        b.text(b's', "a").text(b's', "bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn a_streamed_file_encodes_like_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"content").unwrap();
        let mut streamed = KeyEncoder::new("t");
        streamed.file(b'f', &path).unwrap();
        let mut direct = KeyEncoder::new("t");
        direct.bytes(b'f', b"content");
        assert_eq!(streamed.finish(), direct.finish());
    }
}
