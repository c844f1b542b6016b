//! Keyed pseudonyms for identifiers (`sessionId`, `snapshotId`).
//!
//! A pseudonym is BLAKE3 in keyed mode over the raw identifier: stable for
//! one key (so reruns, deduplication and ingest retries agree), and not
//! reversible by hashing guesses without the key.
//!
//! The key is 32 random bytes, read from `FABRIC_PSEUDONYM_KEY` (64 hex
//! digits: how CI and colleagues share one) or else from
//! `.fabric/keys/pseudonym.key` of the workspace, created on first use with
//! mode 0600. It is never committed (`.fabric/` is ignored), never released,
//! and never printed; only its [`PseudonymKey::id`], a one-way derivation,
//! enters fingerprints, so a changed key reruns sanitize.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable that carries a shared key.
pub const KEY_ENV: &str = "FABRIC_PSEUDONYM_KEY";

/// The name of the key among the workspace's keys ([`fabric_core::layout::Layout::key`]).
const KEY_NAME: &str = "pseudonym.key";

/// The secret key of the pseudonyms.
#[derive(Clone)]
pub struct PseudonymKey([u8; 32]);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PseudonymKey({})", self.id())
    }
}

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The environment variable is set but is not 64 hex digits.
    #[error("{KEY_ENV} must be 64 hex digits (32 bytes); unset it to use the workspace's key file")]
    BadEnv,
    /// The key file is damaged.
    #[error(
        "{0}: not a pseudonym key (32 bytes); restore it from a backup, or delete it to start a new key (every sanitized output then changes)"
    )]
    BadFile(PathBuf),
    /// Reading or creating the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl PseudonymKey {
    /// A key from its bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> PseudonymKey {
        PseudonymKey(bytes)
    }

    /// The key for the workspace at `root`: `FABRIC_PSEUDONYM_KEY`, else the
    /// workspace's key file, created with a new random key if missing.
    pub fn for_workspace(root: &Path) -> Result<PseudonymKey, KeyError> {
        if let Ok(hex) = std::env::var(KEY_ENV) {
            let mut bytes = [0u8; 32];
            let hex = hex.trim();
            if hex.len() != 64 {
                return Err(KeyError::BadEnv);
            }
            for (i, byte) in bytes.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| KeyError::BadEnv)?;
            }
            return Ok(PseudonymKey(bytes));
        }
        let path = fabric_core::layout::Layout::new(root).key(KEY_NAME);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => bytes
                .try_into()
                .map(PseudonymKey)
                .map_err(|_| KeyError::BadFile(path.clone())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let dir = path.parent().expect("the key file has a parent");
                std::fs::create_dir_all(dir).map_err(io)?;
                // Written whole, then put in place only if no other process
                // got there first: a reader never sees a half-written key.
                let mut temp = tempfile::Builder::new().prefix(".key-").tempfile_in(dir).map_err(io)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    temp.as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                temp.write_all(&key)
                    .and_then(|()| temp.as_file().sync_all())
                    .map_err(io)?;
                match temp.persist_noclobber(&path) {
                    Ok(_) => Ok(PseudonymKey(key)),
                    Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => Self::for_workspace(root),
                    Err(error) => Err(io(error.error)),
                }
            }
            Err(error) => Err(io(error)),
        }
    }

    /// A one-way name for the key (for fingerprints and reports).
    pub fn id(&self) -> String {
        let derived = blake3::derive_key("prime-fabric pseudonym key id v1", &self.0);
        blake3::Hash::from(derived).to_hex()[..16].to_string()
    }

    fn keyed(&self, domain: &str, raw: &str) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(domain.as_bytes()).update(&[0]).update(raw.as_bytes());
        hasher.finalize()
    }

    /// The pseudonym of a `sessionId`: 32 lowercase hex digits.
    pub fn session(&self, raw: &str) -> String {
        self.keyed("session", raw).to_hex()[..32].to_string()
    }

    /// The pseudonym of a `snapshotId`: a UUID v4 (so records stay valid v1).
    pub fn snapshot(&self, raw: &str) -> String {
        let bytes: [u8; 16] = self.keyed("snapshot", raw).as_bytes()[..16]
            .try_into()
            .expect("16 bytes");
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }
}

/// True when `id` has the shape of a session pseudonym.
pub fn is_session_pseudonym(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True when `id` has the shape of a snapshot pseudonym (a lowercase UUID v4).
pub fn is_snapshot_pseudonym(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4 && u.hyphenated().to_string() == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_shaped() {
        let key = PseudonymKey([7; 32]);
        let other = PseudonymKey([8; 32]);
        let session = key.session("jane-doe-macbook");
        assert_eq!(session, key.session("jane-doe-macbook"));
        assert_ne!(session, other.session("jane-doe-macbook"));
        assert!(is_session_pseudonym(&session) && !is_session_pseudonym("jane-doe-macbook"));
        // Not an unkeyed hash of the raw id: guessing needs the key.
        assert!(!blake3::hash(b"jane-doe-macbook").to_hex().starts_with(&session));
        let snapshot = key.snapshot("00000000-0000-4000-8000-000000000001");
        assert!(is_snapshot_pseudonym(&snapshot), "{snapshot}");
        assert_ne!(key.id(), other.id());
    }

    #[test]
    fn a_workspace_key_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = PseudonymKey::for_workspace(dir.path()).unwrap();
        let again = PseudonymKey::for_workspace(dir.path()).unwrap();
        assert_eq!(first.id(), again.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(fabric_core::layout::Layout::new(dir.path()).key(KEY_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Created once even when many ask at the same time; nobody sees half a key.
        let racing = tempfile::tempdir().unwrap();
        let ids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| PseudonymKey::for_workspace(racing.path()).unwrap().id()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        std::fs::write(fabric_core::layout::Layout::new(dir.path()).key(KEY_NAME), b"short").unwrap();
        assert!(matches!(
            PseudonymKey::for_workspace(dir.path()),
            Err(KeyError::BadFile(_))
        ));
    }
}
