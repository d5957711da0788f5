//! Where the bytes of inputs and outputs live: local files, or objects in S3, Google Cloud
//! Storage or Azure Blob Storage, named by `s3://`, `gs://` or `az://` URLs. A `file://` URL
//! is a local path.
//!
//! Objects are reached through the `object_store` crate, configured from the usual
//! environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`). Its API is async: a small tokio
//! runtime starts the first time a URL is used, and each call blocks on it, so the rest of
//! lakemeans stays synchronous and a local run never starts one.
//!
//! Everything above this module keeps naming files by [`Path`]; an object's path is its URL.
//! The listing, whole-file and ranged reads here serve both kinds, so there is one reader.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, GetRange, OBJECT_STORE_COALESCE_DEFAULT,
    ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart, coalesce_ranges,
};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use super::partition::unescape;
use super::reader::describe_io;
use crate::error::{Error, Result};

/// Bytes fetched from an object's end when it is opened: the footer of a Parquet file with
/// a few hundred columns, so that opening costs one request.
const TAIL_BYTES: u64 = 64 << 10;

/// Size of the parts of a multipart upload: parts of 8 MiB allow objects up to 80 GB (S3
/// takes at most 10,000 parts), and a few in flight keep memory small.
const PART_BYTES: usize = 8 << 20;

/// Parts of one upload on the wire at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Attempts of one request after the first: enough to ride out a throttled or reset
/// request, few enough that a dead endpoint fails in seconds (object_store's default is 10
/// retries over up to 3 minutes).
const RETRIES: usize = 4;

/// Seconds after a request's first attempt past which it is not retried.
const RETRY_SECONDS: f64 = 20.0;

/// Overrides [`RETRY_SECONDS`]; 0 turns retries off.
pub const RETRY_SECONDS_VAR: &str = "LAKEMEANS_STORE_RETRY_SECONDS";

/// Time to open a connection before the attempt counts as failed, unless the environment
/// sets one (`AWS_CONNECT_TIMEOUT`, `GOOGLE_CONNECT_TIMEOUT`, `AZURE_CONNECT_TIMEOUT`).
const CONNECT_TIMEOUT: &str = "5s";

/// Makes every upload fail once it has taken this many bytes, after the parts before that
/// point have reached the store: the test of abort-on-failure, never set in normal use.
pub const FAIL_UPLOAD_VAR: &str = "LAKEMEANS_FAIL_UPLOAD_AFTER_BYTES";

/// A path or URL, resolved to where its bytes are.
pub enum Location {
    Local(PathBuf),
    Object(Object),
}

impl Location {
    /// Where `path` is: an object for an `s3://`, `gs://` or `az://` URL, a local path
    /// otherwise (`file://` stripped). Exit 2 for a URL that names no bucket or a scheme
    /// lakemeans cannot read.
    pub fn of(path: &Path) -> Result<Location> {
        let Some(text) = path.to_str() else {
            return Ok(Location::Local(path.to_path_buf()));
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Location::Local(path.to_path_buf()));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            return Ok(Location::Local(PathBuf::from(unescape(rest))));
        }
        if !matches!(
            scheme.as_str(),
            "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss"
        ) {
            return Err(Error::Usage(format!(
                "{text}: unsupported URL scheme '{scheme}://'; lakemeans reads and writes \
                 s3://, gs://, az:// (abfs://, abfss://) and file:// URLs and local paths"
            )));
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Usage(format!("{text}: the URL names no bucket")));
        }
        let key = key.trim_end_matches('/');
        let key = Key::parse(key)
            .map_err(|e| Error::Usage(format!("{text}: not a usable object path ({e})")))?;
        let base = format!("{scheme}://{bucket}");
        Ok(Location::Object(Object {
            store: store_for(&scheme, &base)?,
            base,
            key,
        }))
    }

    /// Whether `path` names an object rather than a local file.
    pub fn is_object(path: &Path) -> bool {
        matches!(Location::of(path), Ok(Location::Object(_)))
    }
}

/// `path` as the rest of lakemeans names it: a `file://` URL as its local path, anything
/// else as given.
pub fn plain(path: &Path) -> Result<PathBuf> {
    Ok(match Location::of(path)? {
        Location::Local(p) => p,
        Location::Object(_) => path.to_path_buf(),
    })
}

/// One object (or prefix) in a bucket.
#[derive(Clone)]
pub struct Object {
    store: Arc<dyn ObjectStore>,
    /// `scheme://bucket`.
    base: String,
    key: Key,
}

impl Object {
    /// The object's URL, as a path the rest of lakemeans names it by.
    pub fn url(&self) -> PathBuf {
        self.url_of(&self.key)
    }

    fn url_of(&self, key: &Key) -> PathBuf {
        if key.as_ref().is_empty() {
            PathBuf::from(&self.base)
        } else {
            PathBuf::from(format!("{}/{}", self.base, key.as_ref()))
        }
    }

    /// The key of the prefix the object lies in.
    fn parent(&self) -> Option<Key> {
        let parts: Vec<_> = self.key.parts().collect();
        (parts.len() > 1).then(|| Key::from_iter(parts[..parts.len() - 1].iter().cloned()))
    }

    /// A store error as one line naming the object: exit 2, as the causes (endpoint,
    /// credentials, bucket, network) are the user's to fix.
    fn error(&self, e: object_store::Error) -> Error {
        Error::input(&self.url(), explain(&e))
    }

    /// Whether the object exists (as an object, not as a prefix).
    fn exists(&self) -> Result<bool> {
        match block_on(self.store.head(&self.key))? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Whether any object lies below the object's key, as in a directory.
    fn is_prefix(&self) -> Result<bool> {
        let listed = block_on(self.store.list_with_delimiter(Some(&self.key)))?
            .map_err(|e| self.error(e))?;
        Ok(!listed.objects.is_empty() || !listed.common_prefixes.is_empty())
    }
}

/// Whether `path` is a directory, or for a URL a prefix with objects below it.
pub fn is_dir(path: &Path) -> Result<bool> {
    match Location::of(path)? {
        Location::Local(p) => Ok(p.is_dir()),
        Location::Object(o) => o.is_prefix(),
    }
}

/// What a named input is.
pub enum Kind {
    File,
    Dir,
}

/// Whether `path` is a file or a directory (an object or a prefix); exit 2 naming it when
/// it is neither.
pub fn kind(path: &Path) -> Result<Kind> {
    match Location::of(path)? {
        Location::Local(p) => {
            let meta = std::fs::metadata(&p).map_err(|e| Error::input(path, describe_io(&e)))?;
            Ok(if meta.is_dir() { Kind::Dir } else { Kind::File })
        }
        Location::Object(o) if !o.key.as_ref().is_empty() && o.exists()? => Ok(Kind::File),
        Location::Object(o) if o.is_prefix()? => Ok(Kind::Dir),
        Location::Object(o) => Err(Error::input(
            &o.url(),
            "no such object, and no objects below it",
        )),
    }
}

/// Every file below `dir`, at any depth, except those under a name that begins with `.` or
/// `_` (markers such as `_SUCCESS`, hidden `.crc` files, `_delta_log`); unsorted.
pub fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    match Location::of(dir)? {
        Location::Local(p) => {
            let mut out = Vec::new();
            walk_local(&p, &mut out)?;
            Ok(out)
        }
        Location::Object(o) => {
            let listed: Vec<_> = block_on(o.store.list(Some(&o.key)).try_collect::<Vec<_>>())?
                .map_err(|e| o.error(e))?;
            Ok(listed
                .into_iter()
                .filter(|m| {
                    m.location.prefix_match(&o.key).is_some_and(|mut rel| {
                        rel.all(|part| !part.as_ref().starts_with(['.', '_']))
                    })
                })
                .map(|m| o.url_of(&m.location))
                .collect())
        }
    }
}

fn walk_local(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::input(dir, describe_io(&e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::input(dir, describe_io(&e)))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        if path.is_dir() {
            walk_local(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The files directly in `dir` (not below its subdirectories); unsorted.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    match Location::of(dir)? {
        Location::Local(p) => {
            let entries = std::fs::read_dir(&p).map_err(|e| Error::input(dir, describe_io(&e)))?;
            let mut out = Vec::new();
            for e in entries {
                let e = e.map_err(|e| Error::input(dir, describe_io(&e)))?;
                out.push(e.path());
            }
            Ok(out)
        }
        Location::Object(o) => {
            let listed =
                block_on(o.store.list_with_delimiter(Some(&o.key)))?.map_err(|e| o.error(e))?;
            Ok(listed
                .objects
                .iter()
                .map(|m| o.url_of(&m.location))
                .collect())
        }
    }
}

/// A whole (small) file, such as a Delta commit.
pub fn read(path: &Path) -> Result<Bytes> {
    match Location::of(path)? {
        Location::Local(p) => std::fs::read(&p)
            .map(Bytes::from)
            .map_err(|e| Error::input(path, describe_io(&e))),
        Location::Object(o) => block_on(async {
            match o.store.get(&o.key).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            }
        })?
        .map_err(|e| o.error(e)),
    }
}

/// The form of `path` that two names of one file share: a local path canonicalised, an
/// object's URL as written (`s3a://` read as `s3://`, no trailing `/`).
pub fn canonical_input(path: &Path) -> Result<PathBuf> {
    match Location::of(path)? {
        Location::Local(p) => {
            std::fs::canonicalize(&p).map_err(|e| Error::input(path, describe_io(&e)))
        }
        Location::Object(o) => Ok(same_scheme(o.url())),
    }
}

/// `s3a://` and `s3://` name the same objects.
fn same_scheme(url: PathBuf) -> PathBuf {
    match url.to_str().and_then(|u| u.strip_prefix("s3a://")) {
        Some(rest) => PathBuf::from(format!("s3://{rest}")),
        None => url,
    }
}

/// Bytes fetched from storage for one table: footers, column chunks and any other range,
/// from objects and local files alike. Shared by every [`Blob`] the table's reader opens, so
/// a run can say how much travelled (`bytes_read`), and a test can see that only the
/// projected columns did.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<AtomicU64>);

impl Tally {
    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A file to read Parquet from: a local file, or an object read by byte ranges; every byte
/// fetched from either is counted in its [`Tally`].
pub struct Blob {
    held: Held,
    tally: Tally,
}

enum Held {
    Local(File),
    Object(Ranged),
}

/// An object whose footer and prefetched byte ranges are held in memory; anything else is
/// fetched when asked for.
struct Ranged {
    object: Object,
    size: u64,
    /// Fetched byte ranges: their offset in the object and their bytes.
    chunks: Vec<(u64, Bytes)>,
}

impl Blob {
    /// Opens `path`; for an object, fetches its size and its last [`TAIL_BYTES`] (the footer)
    /// in one request. What is fetched, then and later, counts in `tally`.
    pub fn open(path: &Path, tally: &Tally) -> Result<Blob> {
        let held = match Location::of(path)? {
            Location::Local(p) => File::open(&p)
                .map(Held::Local)
                .map_err(|e| Error::input(path, describe_io(&e)))?,
            Location::Object(o) => {
                let opts = GetOptions {
                    range: Some(GetRange::Suffix(TAIL_BYTES)),
                    ..Default::default()
                };
                let (size, start, tail) = block_on(async {
                    let got = o.store.get_opts(&o.key, opts).await?;
                    let (size, start) = (got.meta.size, got.range.start);
                    Ok::<_, object_store::Error>((size, start, got.bytes().await?))
                })?
                .map_err(|e| o.error(e))?;
                tally.add(tail.len());
                Held::Object(Ranged {
                    object: o,
                    size,
                    chunks: vec![(start, tail)],
                })
            }
        };
        Ok(Blob {
            held,
            tally: tally.clone(),
        })
    }

    /// Opens `path`, whose size is known from its footer read, fetching nothing yet.
    pub fn sized(path: &Path, size: u64, tally: &Tally) -> Result<Blob> {
        match Location::of(path)? {
            Location::Local(_) => Blob::open(path, tally),
            Location::Object(o) => Ok(Blob {
                held: Held::Object(Ranged {
                    object: o,
                    size,
                    chunks: Vec::new(),
                }),
                tally: tally.clone(),
            }),
        }
    }

    /// Fetches `ranges` of an object concurrently, ranges less than object_store's coalescing
    /// gap apart in one request (as its `get_ranges` does), so that the reads that follow are
    /// served from memory; nothing for a local file. The tally counts each request's bytes,
    /// gaps included: they travelled too.
    pub fn prefetch(&mut self, ranges: Vec<Range<u64>>) -> Result<()> {
        let Held::Object(r) = &mut self.held else {
            return Ok(());
        };
        let (o, tally) = (&r.object, &self.tally);
        let fetch = |range: Range<u64>| async move {
            let got = o.store.get_range(&o.key, range).await?;
            tally.add(got.len());
            Ok::<_, object_store::Error>(got)
        };
        let got = block_on(coalesce_ranges(
            &ranges,
            fetch,
            OBJECT_STORE_COALESCE_DEFAULT,
        ))?
        .map_err(|e| o.error(e))?;
        r.chunks.extend(ranges.iter().map(|g| g.start).zip(got));
        Ok(())
    }
}

impl Ranged {
    /// The held bytes from `start` to `end`, or to the end of the chunk holding `start`.
    fn held(&self, start: u64, end: Option<u64>) -> Option<Bytes> {
        self.chunks.iter().find_map(|(at, b)| {
            let stop = at + b.len() as u64;
            // Chunks abut: a read from where one ends belongs to the next.
            let holds = match end {
                Some(end) => *at <= start && end <= stop,
                None => *at <= start && start < stop,
            };
            holds.then(|| b.slice((start - at) as usize..(end.unwrap_or(stop) - at) as usize))
        })
    }

    fn fetch(&self, range: Range<u64>, tally: &Tally) -> parquet::errors::Result<Bytes> {
        let o = &self.object;
        let got = block_on(o.store.get_range(&o.key, range))
            .map_err(|e| ParquetError::External(Box::new(e)))?
            .map_err(|e| ParquetError::External(Box::new(o.error(e))))?;
        tally.add(got.len());
        Ok(got)
    }
}

/// A local file's reader that counts the bytes it takes from the file.
struct Counted {
    file: File,
    tally: Tally,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.tally.add(n);
        Ok(n)
    }
}

impl Length for Blob {
    fn len(&self) -> u64 {
        match &self.held {
            Held::Local(f) => f.len(),
            Held::Object(r) => r.size,
        }
    }
}

impl ChunkReader for Blob {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match &self.held {
            Held::Local(f) => {
                // As parquet's own reader of a `File` does, but counting below the buffer:
                // what the buffer pulls from the file is what was read.
                let mut file = f.try_clone()?;
                file.seek(SeekFrom::Start(start))?;
                Ok(Box::new(BufReader::new(Counted {
                    file,
                    tally: self.tally.clone(),
                })))
            }
            Held::Object(r) => {
                let b = match r.held(start, None) {
                    Some(b) => b,
                    None => r.fetch(start..r.size, &self.tally)?,
                };
                Ok(Box::new(b.reader()))
            }
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match &self.held {
            Held::Local(f) => {
                let got = f.get_bytes(start, length)?;
                self.tally.add(got.len());
                Ok(got)
            }
            Held::Object(r) => {
                let end = start + length as u64;
                match r.held(start, Some(end)) {
                    Some(b) => Ok(b),
                    None => r.fetch(start..end, &self.tally),
                }
            }
        }
    }
}

/// An output object being written as a multipart upload: completed by [`Upload::finish`],
/// aborted when dropped unfinished, so a failed run leaves no object (and no stray parts).
pub struct Upload {
    url: PathBuf,
    parts: Option<WriteMultipart>,
    written: u64,
    fail_after: Option<u64>,
}

impl Upload {
    /// Starts the upload of object `path`.
    pub fn start(path: &Path, object: &Object) -> Result<Upload> {
        let fail_after = match std::env::var(FAIL_UPLOAD_VAR) {
            Ok(v) => Some(v.parse::<u64>().map_err(|_| {
                Error::Usage(format!("{FAIL_UPLOAD_VAR}={v}: expected a number of bytes"))
            })?),
            Err(_) => None,
        };
        let upload = block_on(object.store.put_multipart(&object.key))?
            .map_err(|e| Error::output(path, explain(&e)))?;
        Ok(Upload {
            url: path.to_path_buf(),
            parts: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)),
            written: 0,
            fail_after,
        })
    }

    /// Uploads what is left and completes the upload: only now does the object appear.
    pub fn finish(mut self) -> Result<()> {
        let Some(parts) = self.parts.take() else {
            return Err(Error::Internal(format!(
                "{}: upload finished twice",
                self.url.display()
            )));
        };
        block_on(parts.finish())?
            .map(|_| ())
            .map_err(|e| Error::output(&self.url, explain(&e)))
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let parts = self
            .parts
            .as_mut()
            .ok_or_else(|| std::io::Error::other("upload already finished"))?;
        let rt = runtime().map_err(std::io::Error::other)?;
        // A full part is spawned as a task, which needs the runtime's context.
        let put = |parts: &mut WriteMultipart, bytes: &[u8]| {
            let _in = rt.enter();
            parts.write(bytes);
        };
        // Back pressure: wait while too many parts are on the wire.
        rt.block_on(parts.wait_for_capacity(PARTS_IN_FLIGHT))
            .map_err(std::io::Error::other)?;
        if let Some(limit) = self.fail_after
            && self.written + buf.len() as u64 > limit
        {
            put(parts, &buf[..(limit - self.written) as usize]);
            rt.block_on(parts.wait_for_capacity(0))
                .map_err(std::io::Error::other)?;
            return Err(std::io::Error::other(format!(
                "upload stopped after {limit} bytes by {FAIL_UPLOAD_VAR}"
            )));
        }
        put(parts, buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let (Some(parts), Ok(_)) = (self.parts.take(), runtime()) {
            // Nothing was completed, so no object appears either way; aborting also frees
            // the parts already stored. A failure to abort leaves parts only the bucket's
            // lifecycle rules see, never an object.
            let _ = block_on(parts.abort());
        }
    }
}

/// Checks before any work that object `path` can be an output: a URL ending in a name, in a
/// bucket that exists and takes these credentials, not a prefix with objects below it.
pub fn check_output(path: &Path, object: &Object) -> Result<()> {
    let url = path.display();
    let named = !path.to_str().is_some_and(|t| t.ends_with('/'));
    let Some(name) = object.key.filename().filter(|_| named) else {
        return Err(Error::Usage(format!(
            "{url}: expected an object URL that ends in a name, such as s3://bucket/out.parquet"
        )));
    };
    let parent = object.parent();
    let listed = block_on(object.store.list_with_delimiter(parent.as_ref()))?.map_err(|e| {
        Error::Usage(format!(
            "{url}: cannot write there: {}; check the bucket name and the credentials",
            explain(&e)
        ))
    })?;
    if listed
        .common_prefixes
        .iter()
        .any(|p| p.filename() == Some(name))
    {
        return Err(Error::Usage(format!(
            "{url}: objects lie below this name, as in a directory; expected an object path"
        )));
    }
    Ok(())
}

/// The runtime object-store calls block on, started on first use.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lakemeans-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Internal(format!("cannot start the I/O runtime: {e}")))
}

/// Runs `f` to completion on the runtime, from any thread outside it.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(f))
}

/// One client per bucket, built from the environment the first time the bucket is named.
fn store_for(scheme: &str, base: &str) -> Result<Arc<dyn ObjectStore>> {
    static STORES: Mutex<Option<HashMap<String, Arc<dyn ObjectStore>>>> = Mutex::new(None);
    let mut stores = STORES
        .lock()
        .map_err(|_| Error::Internal("the object-store registry is poisoned".into()))?;
    let stores = stores.get_or_insert_with(HashMap::new);
    if let Some(s) = stores.get(base) {
        return Ok(Arc::clone(s));
    }
    // reqwest is built without a TLS crypto provider (see Cargo.toml): ring's serves every
    // client. One already installed by the host process serves as well, so an error here,
    // which says only that, is no failure.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let retry = retry_config()?;
    // The connect timeout unless the environment names one; `from_env` read the rest.
    let connect = |var: &str| std::env::var_os(var).is_none();
    let timeout = ClientConfigKey::ConnectTimeout;
    let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(base).with_retry(retry);
            if connect("AWS_CONNECT_TIMEOUT") {
                b = b.with_config(AmazonS3ConfigKey::Client(timeout), CONNECT_TIMEOUT);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(base)
                .with_retry(retry);
            if connect("GOOGLE_CONNECT_TIMEOUT") {
                b = b.with_config(GoogleConfigKey::Client(timeout), CONNECT_TIMEOUT);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(base)
                .with_retry(retry);
            if connect("AZURE_CONNECT_TIMEOUT") {
                b = b.with_config(AzureConfigKey::Client(timeout), CONNECT_TIMEOUT);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
    };
    let store = built.map_err(|e| {
        Error::Usage(format!(
            "{base}: cannot set up the object store ({}); see the environment variables in \
             the README",
            answer(&innermost(&e))
        ))
    })?;
    stores.insert(base.to_string(), Arc::clone(&store));
    Ok(store)
}

/// How requests are retried: [`RETRIES`] times at most, within [`RETRY_SECONDS`] (or
/// [`RETRY_SECONDS_VAR`]) of the first attempt.
fn retry_config() -> Result<RetryConfig> {
    let seconds = match std::env::var(RETRY_SECONDS_VAR) {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{RETRY_SECONDS_VAR}={v}: expected a number of seconds, 0 or more"
                ))
            })?,
        Err(_) => RETRY_SECONDS,
    };
    Ok(RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: RETRIES,
        retry_timeout: Duration::from_secs_f64(seconds),
    })
}

/// A store error in one line: what went wrong, then its root cause. object_store's own
/// message nests the request, the retry counts and the server's whole XML or JSON answer;
/// a user needs the kind of failure, the endpoint when it could not be reached, and the
/// server's code and message.
fn explain(e: &object_store::Error) -> String {
    use object_store::Error as E;
    let root = answer(&innermost(e));
    let http = chain(e)
        .find_map(|e| e.downcast_ref::<HttpError>())
        .map(HttpError::kind);
    let text = e.to_string();
    // "Error performing GET http://host/bucket/key in 1.2s, after 4 retries, ...".
    let endpoint = text
        .split_once("Error performing ")
        .and_then(|(_, rest)| rest.split(' ').nth(1))
        .and_then(|uri| {
            let (scheme, rest) = uri.split_once("://")?;
            Some(format!("{scheme}://{}", rest.split('/').next()?))
        });
    let retried = text
        .split_once(", after ")
        .and_then(|(_, rest)| rest.split_once(" retries"))
        .map_or(String::new(), |(n, _)| format!(" after {n} retries"));
    let at = endpoint.map_or(String::new(), |u| format!(" at {u}"));
    let what = match (e, http) {
        _ if root.starts_with("NoSuchBucket") => return "no such bucket".into(),
        (E::NotFound { .. }, _) => return "no such object".into(),
        (E::PermissionDenied { .. }, _) => "access denied; check the credentials".into(),
        (E::Unauthenticated { .. }, _) => "not authenticated; check the credentials".into(),
        (_, Some(HttpErrorKind::Connect)) => format!("cannot connect to the store{at}"),
        (_, Some(HttpErrorKind::Timeout)) => format!("the store{at} did not answer in time"),
        _ => format!("the store{at} failed the request"),
    };
    format!("{what}{retried} ({root})")
}

/// `e` and its sources, outermost first.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// The message of the error at the bottom of `e`'s chain: the root cause.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    chain(e).last().map_or_else(String::new, |r| r.to_string())
}

/// An error's innermost message on one line: a server's XML or JSON answer as its code
/// and message, anything else as written, cut short.
fn answer(text: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let from = text.find(&open)? + open.len();
        let to = from + text[from..].find(&format!("</{name}>"))?;
        Some(text[from..to].trim().to_string())
    };
    let line = match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => match text.find('<') {
            // A body without the usual tags: the text before it.
            Some(i) if i > 0 => text[..i].trim_end_matches([' ', ':']).to_string(),
            _ => text.to_string(),
        },
    };
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line,
    }
}
