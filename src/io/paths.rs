//! Outputs that can never clobber inputs or each other.
//!
//! Every command lists the paths it reads and the paths it writes, each with the flag that
//! named it, and [`Paths::check`] refuses the run before any work when an output is an input,
//! lies inside an input directory (the next run would read it as data), or is written twice.
//! Paths are compared canonicalised, so `./a.parquet`, `a.parquet` and a symlink to it are
//! the same file; a file that does not exist yet is its canonical parent plus its name.
//! Object URLs are compared as URLs: an output under an input's prefix lies inside it.

use std::path::{Path, PathBuf};

use super::store::{self, Location};
use super::writer::check_target;
use crate::error::{Error, Result};

/// The paths one command reads and writes, by flag.
#[derive(Debug, Default)]
pub struct Paths {
    inputs: Vec<(String, PathBuf)>,
    outputs: Vec<(String, PathBuf, Kind)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    /// A directory the command creates and fills.
    Dir,
}

impl Paths {
    pub fn new() -> Self {
        Self::default()
    }

    /// Input files or directories named by `flag` (`INPUT` for the positional ones).
    pub fn inputs<'a>(mut self, flag: &str, paths: impl IntoIterator<Item = &'a PathBuf>) -> Self {
        for p in paths {
            self.inputs.push((flag.to_string(), p.clone()));
        }
        self
    }

    /// An input file named by `flag`, when given.
    pub fn input(self, flag: &str, path: Option<&Path>) -> Self {
        let owned: Vec<PathBuf> = path.map(Path::to_path_buf).into_iter().collect();
        self.inputs(flag, &owned)
    }

    /// An output file named by `flag`, when given.
    pub fn output(mut self, flag: &str, path: Option<&Path>) -> Self {
        if let Some(p) = path {
            self.outputs
                .push((flag.to_string(), p.to_path_buf(), Kind::File));
        }
        self
    }

    /// An output directory the command creates (such as `export --out-dir`).
    pub fn output_dir(mut self, flag: &str, path: &Path) -> Self {
        self.outputs
            .push((flag.to_string(), path.to_path_buf(), Kind::Dir));
        self
    }

    /// Refuses (exit 2) an output that would overwrite an input or another output, or that
    /// cannot be written; checks each output file's directory exists and is writable.
    pub fn check(&self) -> Result<()> {
        let mut seen: Vec<(&str, PathBuf)> = Vec::new();
        for (flag, path, kind) in &self.outputs {
            if *kind == Kind::File {
                check_target(path)?;
            }
            let at = canonical(path)?;
            if let Some((other, _)) = seen.iter().find(|(_, q)| *q == at) {
                return Err(Error::Usage(format!(
                    "{other} and {flag} both write {}; give each output its own path",
                    path.display()
                )));
            }
            for (in_flag, input) in &self.inputs {
                let Ok(inp) = store::canonical_input(input) else {
                    // A missing input is reported by the reader, with its own message.
                    continue;
                };
                let what = if in_flag == "INPUT" {
                    "an input".to_string()
                } else {
                    format!("the {in_flag} input")
                };
                if inp == at {
                    return Err(Error::Usage(format!(
                        "{flag} {} is {what}; writing it would destroy the data it is made from",
                        path.display()
                    )));
                }
                if (Location::is_object(&inp) || inp.is_dir()) && at.starts_with(&inp) {
                    return Err(Error::Usage(format!(
                        "{flag} {} lies inside input directory {}; the next run would read it \
                         as data. Write it elsewhere",
                        path.display(),
                        input.display()
                    )));
                }
                if *kind == Kind::Dir && inp.starts_with(&at) {
                    return Err(Error::Usage(format!(
                        "{flag} {} holds {what} {}; write the output elsewhere",
                        path.display(),
                        input.display()
                    )));
                }
            }
            seen.push((flag, at));
        }
        Ok(())
    }
}

/// The canonical form of `path`, which may not exist yet: its parent canonicalised, then
/// its name.
pub fn canonical(path: &Path) -> Result<PathBuf> {
    let local = match Location::of(path)? {
        Location::Object(_) => return store::canonical_input(path),
        Location::Local(p) => p,
    };
    let path = local.as_path();
    if let Ok(c) = std::fs::canonicalize(path) {
        return Ok(c);
    }
    let name = path.file_name().ok_or_else(|| {
        Error::Usage(format!(
            "{}: expected a path that ends in a file name",
            path.display()
        ))
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent).map_err(|e| {
        Error::Usage(format!(
            "{}: directory {} cannot be used ({})",
            path.display(),
            parent.display(),
            super::reader::describe_io(&e)
        ))
    })?;
    Ok(parent.join(name))
}
