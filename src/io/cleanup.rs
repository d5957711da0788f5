//! Temporary files that must not outlive the process, even when it is interrupted.
//!
//! Every temporary output and spill file is registered here while it exists. On SIGINT or
//! SIGTERM the handler deletes all of them and exits with 130, so a killed fit leaves neither
//! half-written outputs nor spill files behind. Normal drops delete them as usual.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::NamedTempFile;

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs the signal handler once; later calls do nothing.
pub fn install_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Without a handler (another library installed one first) a kill still leaves files
        // behind, as any program would; nothing else depends on it.
        let _ = ctrlc::set_handler(|| {
            if let Ok(live) = LIVE.lock() {
                for p in live.iter() {
                    let _ = std::fs::remove_file(p);
                }
            }
            eprintln!("lakemeans: interrupted; temporary files removed");
            std::process::exit(130);
        });
    });
}

/// A temporary file, registered for deletion on a signal while it exists.
pub struct Tracked {
    file: Option<NamedTempFile>,
    path: PathBuf,
}

impl Tracked {
    pub fn new(file: NamedTempFile) -> Self {
        let path = file.path().to_path_buf();
        if let Ok(mut live) = LIVE.lock() {
            live.push(path.clone());
        }
        Tracked {
            file: Some(file),
            path,
        }
    }

    /// The directory the file lives in.
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    pub fn reopen(&self) -> std::io::Result<File> {
        File::open(&self.path)
    }

    /// Renames the file to `target` and stops tracking it.
    pub fn persist(mut self, target: &Path) -> std::io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("temporary file already persisted"))?;
        forget(&self.path);
        file.persist(target).map(|_| ()).map_err(|e| e.error)
    }
}

fn forget(path: &Path) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|p| p != path);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.file.is_some() {
            forget(&self.path);
        }
    }
}
