//! Atomic file replacement: write a temporary file beside the target, fsync
//! it, rename it over the target, fsync the directory. Readers see the old
//! content or the new one, never a mix, even after a crash.

use std::fs::File;
use std::io;
use std::path::Path;

/// Replaces `path` with what `write` produces.
pub fn write(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new().prefix(".fabric-tmp-").tempfile_in(dir)?;
    write(temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}
