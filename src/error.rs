//! One error type for the whole crate; its variant decides the process exit code.

use std::path::Path;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that contradict each other or the data (k too large, bad --init shape, ...).
    #[error("{0}")]
    Usage(String),
    /// Input that cannot be used: names the file and, where known, the column and row.
    #[error("{0}")]
    Input(String),
    /// `--device gpu` asked for a GPU and none is there.
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// Only software rasterizers (lavapipe, WARP, ...) were found, and they were not asked for.
    #[error("{}; ask for it with --device gpu or --adapter", software_only(.0))]
    SoftwareOnly(Vec<String>),
    /// The GPU failed while working (lost device, out of memory, shader failure).
    #[error("GPU failure: {0}")]
    Device(String),
    /// Writing results failed (disk full, permissions); nothing partial is left behind.
    #[error("cannot write {path}: {message}")]
    Output { path: String, message: String },
    /// A bug: an invariant of lakemeans itself was broken.
    #[error("internal error: {0}")]
    Internal(String),
}

/// "only a software adapter (llvmpipe) found", for one name or several.
pub fn software_only(names: &[String]) -> String {
    match names {
        [one] => format!("only a software adapter ({one}) found"),
        many => format!("only software adapters ({}) found", many.join(", ")),
    }
}

impl Error {
    /// 2 for anything the user can fix in the command or the data, 1 for failures of ours.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Input(_) | Error::NoAdapter(_) | Error::SoftwareOnly(_) => 2,
            Error::Device(_) | Error::Output { .. } | Error::Internal(_) => 1,
        }
    }

    pub fn input(path: &Path, message: impl std::fmt::Display) -> Self {
        Error::Input(format!("{}: {message}", path.display()))
    }

    pub fn output(path: &Path, message: impl std::fmt::Display) -> Self {
        Error::Output {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}
