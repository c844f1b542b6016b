//! Atomic file replacement: write a temporary file beside the target, fsync
//! it, rename it over the target, fsync the directory. Readers see the old
//! content or the new one, never a mix, even after a crash.
//!
//! Accelerators (the stat cache, the parsed lock) use [`replace`]: the same
//! without the fsyncs, so a process crash still leaves the old or the new
//! file, and a power failure at worst an empty one, which they ignore.

use std::fs::File;
use std::io;
use std::path::Path;

/// Replaces `path` with what `write` produces, durably.
pub fn write(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    swap(path, write, true)
}

/// Replaces `path` with what `write` produces, atomically but not durably
/// (no fsync: for files that are only accelerators).
pub fn replace(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    swap(path, write, false)
}

fn swap(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>, durable: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new().prefix(".fabric-tmp-").tempfile_in(dir)?;
    write(temp.as_file_mut())?;
    if durable {
        temp.as_file().sync_all()?;
    }
    temp.persist(path).map_err(|e| e.error)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
