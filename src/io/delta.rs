//! Delta Lake tables, read as one snapshot of their log.
//!
//! A Delta table is a directory of Parquet files plus `_delta_log/`, whose numbered commits
//! (`00000000000000000007.json`, one action per line) add and remove data files; a Parquet
//! checkpoint (`…07.checkpoint.parquet`, possibly in parts) holds the files live at its
//! version, so replay starts from the newest checkpoint at or below the version asked for and
//! applies the commits after it. The live files of a snapshot, with their `partitionValues`,
//! become the table's [`InputFile`]s; from there a Delta table reads like any other.
//!
//! Features that change how rows are read are refused rather than read wrongly: deletion
//! vectors (rows deleted without rewriting a file) and column mapping (physical column names
//! that differ from the logical ones), and any reader feature this reader does not know.
//! Reference: the Delta transaction log protocol, `PROTOCOL.md` in the delta-io/delta
//! repository (actions "Add File and Remove File", "Protocol Evolution", "Checkpoints").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, MapArray, RecordBatch, StructArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::partition::{InputFile, unescape};
use super::store::{self, Blob, Location};
use crate::error::{Error, Result};

/// Reader features whose only effect is on writers or on metadata this reader ignores.
const HARMLESS_FEATURES: &[&str] = &["timestampNtz", "vacuumProtocolCheck", "typeWidening"];

/// Whether `dir` (a local directory or an object prefix) is a Delta table.
pub fn is_delta(dir: &Path) -> Result<bool> {
    store::is_dir(&dir.join("_delta_log"))
}

/// The live files of table `dir` at `version` (the latest without one), sorted by path.
pub fn snapshot(dir: &Path, version: Option<u64>) -> Result<Vec<InputFile>> {
    let log = dir.join("_delta_log");
    let (commits, checkpoints) = list_log(&log)?;
    let latest = commits
        .keys()
        .chain(checkpoints.keys())
        .max()
        .copied()
        .ok_or_else(|| Error::input(&log, "the Delta log holds no commits"))?;
    let target = version.unwrap_or(latest);
    if target > latest {
        return Err(Error::Usage(format!(
            "--table-version {target}: {} has versions up to {latest}",
            dir.display()
        )));
    }
    let mut state = State::default();
    let start = match checkpoints.range(..=target).next_back() {
        Some((&v, parts)) => {
            for p in parts {
                state.checkpoint(p)?;
            }
            v + 1
        }
        None => 0,
    };
    for v in start..=target {
        let path = commits.get(&v).ok_or_else(|| {
            Error::input(
                &log,
                format!(
                    "commit {v} is missing (removed by log cleanup?), so version {target} \
                     cannot be rebuilt"
                ),
            )
        })?;
        let bytes = store::read(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::input(path, "a commit that is not UTF-8 text"))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let action: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::input(path, format!("line {}: not JSON ({e})", i + 1)))?;
            state.apply(&action, path)?;
        }
    }
    state.check(dir)?;
    let columns = state.partition_columns.clone();
    state
        .live
        .into_iter()
        .map(|(rel, values)| {
            Ok(InputFile {
                path: data_path(dir, &rel)?,
                partitions: columns
                    .iter()
                    .map(|c| (c.clone(), values.get(c).cloned().flatten()))
                    .collect(),
            })
        })
        .collect()
}

/// Commit files and checkpoint parts of a log, by version.
type Listing = (BTreeMap<u64, PathBuf>, BTreeMap<u64, Vec<PathBuf>>);

fn list_log(log: &Path) -> Result<Listing> {
    let mut commits = BTreeMap::new();
    let mut parts: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    for path in store::list_dir(log)? {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let Some((num, rest)) = name.split_once('.') else {
            continue;
        };
        let Ok(v) = num.parse::<u64>() else {
            continue;
        };
        if rest == "json" {
            commits.insert(v, path);
        } else if rest.starts_with("checkpoint") && rest.ends_with(".parquet") {
            parts.entry(v).or_default().push(path);
        }
    }
    // A multi-part checkpoint counts only when all its parts are there.
    parts.retain(|_, ps| {
        ps.sort();
        let expected = ps.first().and_then(|p| {
            let n = p.file_name()?.to_string_lossy().into_owned();
            let fields: Vec<&str> = n.split('.').collect();
            // NNN.checkpoint.parquet or NNN.checkpoint.PART.OF.parquet
            (fields.len() == 5).then(|| fields[3].parse::<usize>().ok())?
        });
        expected.is_none_or(|n| n == ps.len())
    });
    Ok((commits, parts))
}

/// The snapshot as replay builds it.
#[derive(Default)]
struct State {
    /// Live data files (relative paths as the log writes them) and their partition values.
    live: BTreeMap<String, BTreeMap<String, Option<String>>>,
    partition_columns: Vec<String>,
    /// Reader features this reader cannot honour, each with where it was seen.
    refused: Vec<String>,
}

impl State {
    fn apply(&mut self, a: &serde_json::Value, from: &Path) -> Result<()> {
        if let Some(add) = a.get("add") {
            let path = json_str(add, "path", from)?;
            if add.get("deletionVector").is_some_and(|d| !d.is_null()) {
                self.refuse("deletion vectors");
            }
            let values = add
                .get("partitionValues")
                .and_then(|v| v.as_object())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                        .collect()
                })
                .unwrap_or_default();
            self.live.insert(path, values);
        }
        if let Some(rm) = a.get("remove") {
            self.live.remove(&json_str(rm, "path", from)?);
        }
        if let Some(p) = a.get("protocol") {
            let min_reader = p
                .get("minReaderVersion")
                .and_then(|v| v.as_u64())
                .unwrap_or(1);
            let features: Vec<String> = p
                .get("readerFeatures")
                .and_then(|f| f.as_array())
                .map(|f| {
                    f.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            self.protocol(min_reader, &features);
        }
        if let Some(m) = a.get("metaData") {
            self.partition_columns = m
                .get("partitionColumns")
                .and_then(|c| c.as_array())
                .map(|c| {
                    c.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let mode = m
                .get("configuration")
                .and_then(|c| c.get("delta.columnMapping.mode"))
                .and_then(|v| v.as_str());
            self.column_mapping(mode);
        }
        Ok(())
    }

    fn protocol(&mut self, min_reader: u64, features: &[String]) {
        if min_reader > 3 {
            self.refuse(&format!("reader version {min_reader}"));
        }
        for f in features {
            match f.as_str() {
                "deletionVectors" => self.refuse("deletion vectors"),
                "columnMapping" => self.refuse("column mapping"),
                known if HARMLESS_FEATURES.contains(&known) => {}
                other => self.refuse(&format!("the reader feature '{other}'")),
            }
        }
    }

    fn column_mapping(&mut self, mode: Option<&str>) {
        if mode.is_some_and(|m| m != "none") {
            self.refuse("column mapping");
        }
    }

    fn refuse(&mut self, what: &str) {
        if !self.refused.iter().any(|r| r == what) {
            self.refused.push(what.to_string());
        }
    }

    /// Fails naming every feature the table uses that this reader cannot honour.
    fn check(&self, dir: &Path) -> Result<()> {
        if self.refused.is_empty() {
            return Ok(());
        }
        Err(Error::input(
            dir,
            format!(
                "this Delta table uses {}, which lakemeans cannot read correctly yet; \
                 export the snapshot to plain Parquet first",
                self.refused.join(" and ")
            ),
        ))
    }

    /// Takes the live files, protocol and metadata of one checkpoint part.
    fn checkpoint(&mut self, path: &Path) -> Result<()> {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(Blob::open(path, &Default::default())?)
                .and_then(|b| b.build())
                .map_err(|e| Error::input(path, format!("not a readable checkpoint ({e})")))?;
        for b in reader {
            let b = b.map_err(|e| Error::input(path, format!("cannot decode ({e})")))?;
            self.checkpoint_batch(&b, path)?;
        }
        Ok(())
    }

    fn checkpoint_batch(&mut self, b: &RecordBatch, path: &Path) -> Result<()> {
        let bad = |what: &str| Error::input(path, format!("unexpected checkpoint layout: {what}"));
        if let Some(add) = struct_col(b, "add") {
            let paths = add
                .column_by_name("path")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| bad("add.path"))?;
            let values = add
                .column_by_name("partitionValues")
                .and_then(|c| c.as_map_opt())
                .ok_or_else(|| bad("add.partitionValues"))?;
            let dv = add.column_by_name("deletionVector");
            for r in 0..add.len() {
                if add.is_null(r) {
                    continue;
                }
                if dv.is_some_and(|d| d.is_valid(r)) {
                    self.refuse("deletion vectors");
                }
                let pv = map_row(values, r).ok_or_else(|| bad("partitionValues entries"))?;
                self.live.insert(paths.value(r).to_string(), pv);
            }
        }
        if let Some(p) = struct_col(b, "protocol") {
            let min = p.column_by_name("minReaderVersion");
            let feats = p
                .column_by_name("readerFeatures")
                .and_then(|c| c.as_list_opt::<i32>());
            for r in (0..p.len()).filter(|&r| p.is_valid(r)) {
                let v = min
                    .and_then(|m| arrow_cast::cast(m, &arrow_schema::DataType::Int64).ok())
                    .map(|m| m.as_primitive::<arrow_array::types::Int64Type>().value(r))
                    .unwrap_or(1);
                let names: Vec<String> = feats
                    .filter(|f| f.is_valid(r))
                    .and_then(|f| {
                        let v = f.value(r);
                        v.as_string_opt::<i32>()
                            .map(|s| s.iter().flatten().map(str::to_string).collect())
                    })
                    .unwrap_or_default();
                self.protocol(v.max(0) as u64, &names);
            }
        }
        if let Some(m) = struct_col(b, "metaData") {
            let cols = m
                .column_by_name("partitionColumns")
                .and_then(|c| c.as_list_opt::<i32>());
            let conf = m
                .column_by_name("configuration")
                .and_then(|c| c.as_map_opt());
            for r in (0..m.len()).filter(|&r| m.is_valid(r)) {
                if let Some(c) = cols {
                    let v = c.value(r);
                    self.partition_columns = v
                        .as_string_opt::<i32>()
                        .map(|s| s.iter().flatten().map(str::to_string).collect())
                        .unwrap_or_default();
                }
                if let Some(conf) = conf
                    && let Some(entries) = map_row(conf, r)
                {
                    let mode = entries.get("delta.columnMapping.mode").cloned().flatten();
                    self.column_mapping(mode.as_deref());
                }
            }
        }
        Ok(())
    }
}

fn struct_col<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a StructArray> {
    b.column_by_name(name).and_then(|c| c.as_struct_opt())
}

/// Row `r` of a string-to-string map column.
fn map_row(m: &MapArray, r: usize) -> Option<BTreeMap<String, Option<String>>> {
    if m.is_null(r) {
        return Some(BTreeMap::new());
    }
    let entries = m.value(r);
    let keys = entries.column(0).as_string_opt::<i32>()?;
    let vals = entries.column(1).as_string_opt::<i32>()?;
    Some(
        (0..keys.len())
            .map(|i| {
                let v = vals.is_valid(i).then(|| vals.value(i).to_string());
                (keys.value(i).to_string(), v)
            })
            .collect(),
    )
}

fn json_str(v: &serde_json::Value, key: &str, from: &Path) -> Result<String> {
    v.get(key)
        .and_then(|p| p.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::input(from, format!("an action has no '{key}'")))
}

/// A data file's path: the log stores it relative to the table and percent-encoded, or as
/// an absolute URL.
fn data_path(dir: &Path, rel: &str) -> Result<PathBuf> {
    if let Some(abs) = rel.strip_prefix("file://") {
        return Ok(PathBuf::from(unescape(abs)));
    }
    if rel.contains("://") {
        let url = PathBuf::from(unescape(rel));
        return match Location::of(&url) {
            Ok(Location::Object(_)) => Ok(url),
            _ => Err(Error::input(
                dir,
                format!("data file {rel} is on a file system lakemeans cannot read"),
            )),
        };
    }
    Ok(dir.join(unescape(rel)))
}
