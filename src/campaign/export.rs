//! Audience files from assignments: one upload-ready file per segment, with a manifest.
//!
//! Each row of the assignments becomes a row of its segment's file, in assignments order, with
//! its identifiers normalised and hashed as the platform asks. Rows with no usable identifier
//! are dropped and counted, never written as the hash of an empty string. The directory appears
//! whole or not at all.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;
use serde::Serialize;

use super::assignments::{Accept, Assignments, read_assignments};
use super::normalize::{Country, Kind, Normalizer, Platform};
use super::outdir::{HashingWriter, OutputDir, check_dir_target};
use super::source::read_model_features;
use crate::error::{Error, Result};
use crate::insight::profile::{ProfileInput, profile};
use crate::io::writer::writer_properties;
use crate::model::Model;

/// `COL:KIND`, one identifier column and how to treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    pub column: String,
    pub kind: Kind,
}

impl FromStr for Identifier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Identifier> {
        let (column, kind) = s.rsplit_once(':').ok_or_else(|| {
            Error::Usage(format!(
                "--identifier '{s}' must be COL:KIND, with KIND one of email, phone, raw"
            ))
        })?;
        if column.is_empty() {
            return Err(Error::Usage(format!("--identifier '{s}' names no column")));
        }
        Ok(Identifier {
            column: column.to_string(),
            kind: kind.parse()?,
        })
    }
}

/// The type of the audience files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }
}

/// Where segment names come from.
#[derive(Debug, Clone)]
pub enum Names {
    /// A JSON object mapping segment ids to names: `{"0": "Loyal", "3": "Lapsed"}`.
    File(PathBuf),
    /// The profile's one-line descriptions, computed from the model's features in `inputs`
    /// with the assignments' clusters (rows in the same order, as `fit` wrote them).
    Profile {
        model: PathBuf,
        inputs: Vec<PathBuf>,
    },
    /// `segment <id>`.
    Ids,
}

/// Everything `export` needs.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub assignments: PathBuf,
    pub identifiers: Vec<Identifier>,
    pub out_dir: PathBuf,
    pub platform: Platform,
    pub format: Format,
    /// `None`: every segment.
    pub segments: Option<Vec<u32>>,
    /// `None`: the platform's documented minimum.
    pub min_size: Option<usize>,
    pub names: Names,
    pub default_country: Option<Country>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WrittenSegment {
    pub id: u32,
    pub name: String,
    pub rows: usize,
    /// Relative to the output directory.
    pub file: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedSegment {
    pub id: u32,
    pub rows: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdentifierSummary {
    pub column: String,
    pub kind: Kind,
    /// The column's header in the files.
    pub header: String,
    /// Null or empty after normalisation.
    pub empty: usize,
    /// Present but unusable (a phone number that is not a valid number).
    pub invalid: usize,
}

/// `DIR/manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub platform: Platform,
    pub format: Format,
    pub assignments: String,
    pub rows: usize,
    pub min_size: usize,
    pub identifiers: Vec<IdentifierSummary>,
    pub segments: Vec<WrittenSegment>,
    pub skipped: Vec<SkippedSegment>,
    /// Rows dropped because none of their identifiers was usable.
    pub dropped_identifiers: usize,
}

/// Writes the audience files and the manifest; returns the manifest.
pub fn export(spec: &ExportSpec) -> Result<Manifest> {
    check_dir_target(&spec.out_dir)?;
    let headers = output_headers(spec)?;
    let accept = |k: Kind| match k {
        Kind::Raw => Accept::TextOrInteger,
        Kind::Email | Kind::Phone => Accept::Text,
    };
    let wanted: Vec<(String, Accept)> = spec
        .identifiers
        .iter()
        .map(|i| (i.column.clone(), accept(i.kind)))
        .collect();
    let a = read_assignments(
        &spec.assignments,
        &wanted,
        "asked for by --identifier; give `fit --id COL` to carry it into the assignments",
    )?;
    let present = a.segment_ids();
    let selected = select(&present, spec.segments.as_deref())?;
    let names = segment_names(&spec.names, &a, &present)?;
    let min_size = spec.min_size.unwrap_or(spec.platform.min_size());

    // Normalise every identifier column; a row is kept when any of its identifiers is usable.
    let mut summaries = Vec::new();
    let mut cells: Vec<Vec<Option<String>>> = Vec::new();
    for (ident, (col, header)) in spec.identifiers.iter().zip(a.columns.iter().zip(&headers)) {
        let n = Normalizer {
            kind: ident.kind,
            platform: spec.platform,
            default_country: spec.default_country,
        };
        let out: Vec<Option<String>> = col
            .values
            .par_iter()
            .map(|v| v.as_deref().and_then(|v| n.apply(v)))
            .collect();
        let empty = col
            .values
            .iter()
            .filter(|v| v.as_deref().is_none_or(|s| s.trim().is_empty()))
            .count();
        let unusable = out.iter().filter(|v| v.is_none()).count();
        summaries.push(IdentifierSummary {
            column: ident.column.clone(),
            kind: ident.kind,
            header: header.clone(),
            empty,
            invalid: unusable - empty,
        });
        cells.push(out);
    }
    let kept: Vec<bool> = (0..a.labels.len())
        .map(|r| cells.iter().any(|c| c[r].is_some()))
        .collect();
    let mut members: BTreeMap<u32, Vec<usize>> = present.iter().map(|&id| (id, vec![])).collect();
    for (r, &l) in a.labels.iter().enumerate() {
        if kept[r] {
            members.entry(l).or_default().push(r);
        }
    }

    let dir = OutputDir::new(&spec.out_dir)?;
    let mut written = Vec::new();
    let mut skipped = Vec::new();
    for (&id, rows) in &members {
        let reason = if !selected.contains(&id) {
            Some("not selected by --segments".to_string())
        } else if rows.is_empty() {
            Some("no row with a usable identifier".to_string())
        } else if rows.len() < min_size {
            Some(format!("fewer than --min-size {min_size} rows"))
        } else {
            None
        };
        if let Some(reason) = reason {
            skipped.push(SkippedSegment {
                id,
                rows: rows.len(),
                reason,
            });
            continue;
        }
        let name = names[&id].clone();
        let file = format!("segment-{id}-{}.{}", slug(&name), spec.format.ext());
        let table = SegmentTable {
            id,
            name: &name,
            headers: &headers,
            cells: &cells,
            rows,
            generic: spec.platform == Platform::Generic,
        };
        let w = dir.create(&file)?;
        let target = spec.out_dir.join(&file);
        let sha256 = match spec.format {
            Format::Csv => table.write_csv(w),
            Format::Parquet => table.write_parquet(w),
        }
        .map_err(|e| Error::output(&target, e))?;
        written.push(WrittenSegment {
            id,
            name,
            rows: rows.len(),
            file,
            sha256,
        });
    }
    let manifest = Manifest {
        platform: spec.platform,
        format: spec.format,
        assignments: spec.assignments.display().to_string(),
        rows: a.labels.len(),
        min_size,
        identifiers: summaries,
        segments: written,
        skipped,
        dropped_identifiers: kept.iter().filter(|k| !**k).count(),
    };
    let json =
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let mut w = dir.create("manifest.json")?;
    w.write_all(json.as_bytes())
        .and_then(|_| w.write_all(b"\n"))
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| Error::output(&spec.out_dir.join("manifest.json"), e))?;
    dir.commit()?;
    Ok(manifest)
}

/// The header of each identifier column, after checking the combination suits the platform.
fn output_headers(spec: &ExportSpec) -> Result<Vec<String>> {
    if spec.identifiers.is_empty() {
        return Err(Error::Usage(
            "give at least one --identifier COL:KIND".into(),
        ));
    }
    let mut headers = Vec::new();
    for i in &spec.identifiers {
        let h = match spec.platform.header(i.kind)? {
            Some(h) => h.to_string(),
            None => i.column.clone(),
        };
        headers.push(h);
    }
    if spec.platform == Platform::Generic {
        for (i, h) in headers.iter().enumerate() {
            if h == "segment" || h == "segment_name" || headers[..i].contains(h) {
                return Err(Error::Usage(format!(
                    "--identifier column '{h}' is given twice or clashes with the generic \
                     layout's own columns (segment, segment_name)"
                )));
            }
        }
    }
    if spec.format == Format::Parquet {
        for (i, h) in headers.iter().enumerate() {
            if headers[..i].contains(h) {
                return Err(Error::Usage(format!(
                    "two identifiers would both be written as column '{h}'; the platform's CSV \
                     allows repeated columns but a Parquet file does not (use --format csv)"
                )));
            }
        }
    }
    let kinds: Vec<Kind> = spec.identifiers.iter().map(|i| i.kind).collect();
    if spec.platform == Platform::Google
        && kinds.contains(&Kind::Raw)
        && kinds.iter().any(|k| *k != Kind::Raw)
    {
        return Err(Error::Usage(
            "--platform google takes mobile device ids (raw) and contact information (email, \
             phone) in separate lists; export them in two runs"
                .into(),
        ));
    }
    Ok(headers)
}

/// The selected ids, each checked against the ids present.
fn select(present: &[u32], asked: Option<&[u32]>) -> Result<Vec<u32>> {
    let Some(asked) = asked else {
        return Ok(present.to_vec());
    };
    for id in asked {
        if !present.contains(id) {
            return Err(Error::Usage(format!(
                "--segments {id}: no such segment in the assignments (valid: {})",
                join_ids(present)
            )));
        }
    }
    Ok(asked.to_vec())
}

pub fn join_ids(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn segment_names(names: &Names, a: &Assignments, present: &[u32]) -> Result<BTreeMap<u32, String>> {
    let mut out: BTreeMap<u32, String> = present
        .iter()
        .map(|&id| (id, format!("segment {id}")))
        .collect();
    match names {
        Names::Ids => {}
        Names::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::input(path, format!("cannot read names ({e})")))?;
            let map: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
                Error::input(
                    path,
                    format!("expected a JSON object of segment id to name ({e})"),
                )
            })?;
            for (k, v) in map {
                let id: u32 = k
                    .trim()
                    .parse()
                    .map_err(|_| Error::input(path, format!("key '{k}' is not a segment id")))?;
                if !present.contains(&id) {
                    return Err(Error::input(
                        path,
                        format!(
                            "names segment {id}, which is not in the assignments (segments: {})",
                            join_ids(present)
                        ),
                    ));
                }
                out.insert(id, v);
            }
        }
        Names::Profile { model, inputs } => {
            let m = Model::load(model)?;
            let table = read_model_features(inputs, &m, &[], true)?;
            if table.data.rows() != a.labels.len() {
                return Err(Error::Input(format!(
                    "{} has {} rows but the input has {} rows with valid features; the names \
                     come from profiling the input with the assignments' clusters, so both \
                     must hold the same rows in the same order (or give --names)",
                    a.files[0].display(),
                    a.labels.len(),
                    table.data.rows()
                )));
            }
            let k = present.last().map_or(1, |&m| m as usize + 1);
            let p = profile(&ProfileInput {
                data: &table.data,
                features: &table.features,
                labels: &a.labels,
                k,
                describe: &[],
            });
            for c in p.clusters {
                if let Some(n) = out.get_mut(&(c.cluster as u32)) {
                    *n = c.description;
                }
            }
        }
    }
    Ok(out)
}

/// A name as it can appear in a file name: lowercase ASCII letters and digits, runs of
/// anything else as one '-', at most 48 characters.
pub fn slug(name: &str) -> String {
    let mut s = String::new();
    for ch in name.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_alphanumeric() {
            s.push(ch);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s: String = s.trim_matches('-').chars().take(48).collect();
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() { "segment".into() } else { s }
}

/// One segment's rows, ready to write.
struct SegmentTable<'a> {
    id: u32,
    name: &'a str,
    headers: &'a [String],
    cells: &'a [Vec<Option<String>>],
    rows: &'a [usize],
    /// The generic layout leads with `segment` and `segment_name`.
    generic: bool,
}

impl SegmentTable<'_> {
    fn write_csv<W: Write>(&self, mut w: HashingWriter<W>) -> std::io::Result<String> {
        let mut head: Vec<String> = Vec::new();
        if self.generic {
            head.extend(["segment".to_string(), "segment_name".to_string()]);
        }
        head.extend(self.headers.iter().map(|h| csv_cell(h)));
        writeln!(w, "{}", head.join(","))?;
        let name = csv_cell(self.name);
        let mut line = String::new();
        for &r in self.rows {
            line.clear();
            if self.generic {
                line += &format!("{},{name},", self.id);
            }
            for (j, c) in self.cells.iter().enumerate() {
                if j > 0 {
                    line.push(',');
                }
                if let Some(v) = &c[r] {
                    line += &csv_cell(v);
                }
            }
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        w.finish()
    }

    fn write_parquet<W: Write + Send>(&self, w: HashingWriter<W>) -> std::io::Result<String> {
        let io = |e: parquet::errors::ParquetError| std::io::Error::other(e.to_string());
        let mut fields = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        if self.generic {
            fields.push(Field::new("segment", DataType::Int32, false));
            fields.push(Field::new("segment_name", DataType::Utf8, false));
            cols.push(Arc::new(Int32Array::from(vec![
                self.id as i32;
                self.rows.len()
            ])));
            cols.push(Arc::new(StringArray::from(vec![
                self.name;
                self.rows.len()
            ])));
        }
        for (h, c) in self.headers.iter().zip(self.cells) {
            fields.push(Field::new(h, DataType::Utf8, true));
            cols.push(Arc::new(StringArray::from_iter(
                self.rows.iter().map(|&r| c[r].as_deref()),
            )));
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut aw = ArrowWriter::try_new(w, schema, Some(writer_properties(&[]))).map_err(io)?;
        aw.write(&batch).map_err(io)?;
        aw.into_inner().map_err(io)?.finish()
    }
}

/// RFC 4180: quoted when it holds a comma, quote or line break, quotes doubled.
fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_parse() {
        let i: Identifier = "email:email".parse().unwrap();
        assert_eq!(i.kind, Kind::Email);
        let i: Identifier = "a:b:phone".parse().unwrap();
        assert_eq!((i.column.as_str(), i.kind), ("a:b", Kind::Phone));
        assert!("email".parse::<Identifier>().is_err());
        assert!("email:md5".parse::<Identifier>().is_err());
        assert!(":raw".parse::<Identifier>().is_err());
    }

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(
            slug("high log_frequency, high log_monetary"),
            "high-log-frequency-high-log-monetary"
        );
        assert_eq!(slug("  Été / VIP!! "), "t-vip");
        assert_eq!(slug("***"), "segment");
        assert!(slug(&"x".repeat(100)).len() <= 48);
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_cell("abc"), "abc");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
