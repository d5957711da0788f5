//! An output directory that appears whole or not at all: files are written into a hidden
//! temporary directory beside the target, which is renamed onto the target at the end. A
//! failed run leaves the target untouched and removes the temporary directory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::error::{Error, Result};

/// Fails early unless `dir` can become an output directory: its parent exists and it is
/// absent or an empty directory (renaming onto a non-empty one would lose or mix files).
pub fn check_dir_target(dir: &Path) -> Result<()> {
    // A directory of files renamed into place as one has no counterpart in an object store.
    if crate::io::store::Location::is_object(dir) {
        return Err(Error::Usage(format!(
            "{}: an output directory must be local; write it here and copy it to the bucket",
            dir.display()
        )));
    }
    let parent = parent_of(dir);
    if !parent.is_dir() {
        return Err(Error::Usage(format!(
            "{}: directory {} does not exist",
            dir.display(),
            parent.display()
        )));
    }
    if dir.exists() {
        let empty = dir.is_dir()
            && std::fs::read_dir(dir)
                .map_err(|e| Error::output(dir, e))?
                .next()
                .is_none();
        if !empty {
            return Err(Error::Usage(format!(
                "{}: already exists and is not an empty directory; remove it or choose \
                 another --out-dir",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A directory being filled; nothing is visible under the target name until `commit`.
pub struct OutputDir {
    tmp: TempDir,
    target: PathBuf,
}

impl OutputDir {
    pub fn new(target: &Path) -> Result<OutputDir> {
        check_dir_target(target)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempdir_in(parent_of(target))
            .map_err(|e| Error::output(target, e))?;
        Ok(OutputDir {
            tmp,
            target: target.to_path_buf(),
        })
    }

    /// Creates `name` inside the directory; the writer hashes what passes through it.
    pub fn create(&self, name: &str) -> Result<HashingWriter<BufWriter<File>>> {
        let path = self.tmp.path().join(name);
        let f = File::create(&path).map_err(|e| Error::output(&self.target.join(name), e))?;
        Ok(HashingWriter::new(BufWriter::new(f)))
    }

    /// Renames the finished directory onto the target.
    pub fn commit(self) -> Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.tmp.path(), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::output(&self.target, e))?;
        }
        let path = self.tmp.keep();
        std::fs::rename(&path, &self.target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&path);
            Error::output(&self.target, e)
        })
    }
}

/// Passes bytes on and keeps their SHA-256, so a file's digest comes without reading it back.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Flushes and returns the lowercase hex digest of everything written.
    pub fn finish(mut self) -> std::io::Result<String> {
        self.inner.flush()?;
        Ok(self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
