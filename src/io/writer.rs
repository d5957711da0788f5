//! Writes results so that a failure leaves nothing behind: every output goes to a temporary
//! file beside its target, or for an object URL into a multipart upload, and all of them are
//! renamed into place or completed only once all are written. A failed run removes its
//! temporary files and aborts its uploads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tempfile::NamedTempFile;

use super::cleanup::Tracked;
use super::store::{self, Location, Upload};
use crate::error::{Error, Result};

/// Rows per Parquet row group: big enough for fast scans, small enough for Spark tasks.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// Fails early, before any work, if `path` cannot be an output file.
pub fn check_target(path: &Path) -> Result<()> {
    let path = match Location::of(path)? {
        Location::Object(o) => return store::check_output(path, &o),
        Location::Local(p) => p,
    };
    let path = path.as_path();
    if path.is_dir() {
        return Err(Error::Usage(format!(
            "{}: is a directory, expected a file path",
            path.display()
        )));
    }
    let parent = parent_dir(path);
    if !parent.is_dir() {
        return Err(Error::Usage(format!(
            "{}: directory {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    // A directory the user cannot write to is their environment, not our failure: say so
    // now, before any work, rather than after the fit.
    if let Err(e) = tempfile::Builder::new()
        .prefix(".lakemeans-probe.")
        .tempfile_in(&parent)
    {
        return Err(unwritable(path, &parent, &e));
    }
    Ok(())
}

/// The usage error for an output whose directory refuses writes.
fn unwritable(path: &Path, parent: &Path, e: &std::io::Error) -> Error {
    Error::Usage(format!(
        "{}: cannot write in directory {} ({})",
        path.display(),
        parent.display(),
        super::reader::describe_io(e)
    ))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writer settings shared by every Parquet output: zstd, statistics, large row groups;
/// dictionaries only where values repeat.
pub fn writer_properties(no_dictionary: &[&str]) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for c in no_dictionary {
        b = b.set_column_dictionary_enabled((*c).into(), false);
    }
    b.build()
}

/// Outputs written so far, not yet visible under their final names.
#[derive(Default)]
pub struct Outputs {
    pending: Vec<Target>,
}

/// Where one output's bytes go until [`Outputs::commit`] makes them visible.
enum Target {
    /// A temporary file beside the output, renamed into place.
    Local {
        tmp: Tracked,
        file: std::fs::File,
        path: PathBuf,
    },
    /// A multipart upload, completed at commit and aborted when dropped before.
    Object(Upload),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::Local { file, .. } => file.write(buf),
            Target::Object(u) => u.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Target::Local { file, .. } => file.flush(),
            Target::Object(u) => u.flush(),
        }
    }
}

impl Target {
    fn new(path: &Path) -> Result<Target> {
        let local = match Location::of(path)? {
            Location::Object(o) => return Ok(Target::Object(Upload::start(path, &o)?)),
            Location::Local(p) => p,
        };
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut b = tempfile::Builder::new();
        b.prefix(&prefix).suffix(".tmp");
        // Outputs are for other tools and users to read, not private like a usual temp file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            b.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let parent = parent_dir(&local);
        let tmp: NamedTempFile = b.tempfile_in(&parent).map_err(|e| {
            use std::io::ErrorKind::{PermissionDenied, ReadOnlyFilesystem};
            if matches!(e.kind(), PermissionDenied | ReadOnlyFilesystem) {
                unwritable(path, &parent, &e)
            } else {
                Error::output(path, e)
            }
        })?;
        let file = tmp.reopen().map_err(|e| Error::output(path, e))?;
        Ok(Target::Local {
            tmp: Tracked::new(tmp),
            file,
            path: local,
        })
    }

    /// Makes the output visible under its name.
    fn commit(self) -> Result<()> {
        match self {
            Target::Local { tmp, path, .. } => {
                tmp.persist(&path).map_err(|e| Error::output(&path, e))
            }
            Target::Object(u) => u.finish(),
        }
    }
}

impl Outputs {
    /// Writes `batches` as one Parquet file destined for `path`.
    pub fn parquet(
        &mut self,
        path: &Path,
        schema: SchemaRef,
        batches: impl IntoIterator<Item = Result<RecordBatch>>,
        no_dictionary: &[&str],
    ) -> Result<()> {
        self.parquet_stream(path, schema, no_dictionary, |put| {
            for b in batches {
                put(b?)?;
            }
            Ok(())
        })
    }

    /// Writes one Parquet file destined for `path` from the batches `produce` hands to its
    /// argument, as they come (for passes that stream).
    pub fn parquet_stream(
        &mut self,
        path: &Path,
        schema: SchemaRef,
        no_dictionary: &[&str],
        produce: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let mut w = ArrowWriter::try_new(
            Target::new(path)?,
            Arc::clone(&schema),
            Some(writer_properties(no_dictionary)),
        )
        .map_err(|e| Error::output(path, e))?;
        produce(&mut |b| w.write(&b).map_err(|e| Error::output(path, e)))?;
        let target = w.into_inner().map_err(|e| Error::output(path, e))?;
        self.pending.push(target);
        Ok(())
    }

    /// Writes `bytes` as a file destined for `path`.
    pub fn bytes(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut target = Target::new(path)?;
        target
            .write_all(bytes)
            .and_then(|_| target.flush())
            .map_err(|e| Error::output(path, e))?;
        self.pending.push(target);
        Ok(())
    }

    /// Makes every output visible. Temporary files of a failed run are removed, and its
    /// uploads aborted, on drop.
    pub fn commit(self) -> Result<()> {
        for t in self.pending {
            t.commit()?;
        }
        Ok(())
    }
}
