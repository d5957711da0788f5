//! `lakemeans export`: argument translation only; the work is in [`crate::campaign::export`].

use std::path::PathBuf;

use clap::Args;

use crate::campaign::export::{ExportSpec, Format, Identifier, Names, export};
use crate::campaign::normalize::{Country, Platform};
use crate::error::{Error, Result};
use crate::io::Paths;

#[derive(Debug, Args)]
#[command(after_help = "\
Identifier kinds:
  email  trim surrounding whitespace, lowercase, SHA-256 (lowercase hex)
  phone  E.164 with the country code (national numbers read with --default-country), SHA-256;
         google and generic hash '+' and the digits, meta the digits alone; linkedin takes none
  raw    passed through unhashed (trimmed; lowercased for linkedin), for first-party
         ids and mobile advertising ids; may be a string or an integer column

Layouts (--platform):
  generic   segment, segment_name, then one column per identifier named like its source column
  google    Customer Match columns: Email, Phone, or Mobile Device ID (raw, in a list of its own)
  meta      customer list columns: email, phone, madid (raw)
  linkedin  contact list columns: email, googleaid (raw)

--min-size defaults: google 100, meta 100, linkedin 300, generic 0 (the platforms' documented
minimum list sizes; see docs/campaigns.md for the sources).

Rows whose identifiers are all null or empty after normalisation are dropped and counted in
the manifest; a phone number that is not a valid number counts as empty. Files are named
segment-<id>-<slug>.<ext>; DIR/manifest.json lists each written segment (id, name, rows, file,
sha256 of the file), each skipped one (id, rows, reason) and dropped_identifiers. DIR appears
complete or not at all; it must not exist yet, or be empty.

Example:
  lakemeans export clusters.parquet --identifier email:email --platform meta \\
      --model model.json --input customers.parquet --out-dir audiences")]
pub struct ExportArgs {
    /// Assignments written by `fit`, `refit` or `predict`, carrying the identifier columns
    /// (give them to `fit --id`).
    #[arg(value_name = "ASSIGNMENTS")]
    pub assignments: PathBuf,
    /// An identifier column and its kind: email, phone or raw (repeatable).
    #[arg(long = "identifier", value_name = "COL:KIND", required = true)]
    pub identifiers: Vec<String>,
    /// Directory to create with one file per segment and manifest.json.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Column names, layout and normalisation rules of the target platform.
    #[arg(long, value_enum, default_value_t = Platform::Generic)]
    pub platform: Platform,
    /// File type of the audience files.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Export only these segment ids [default: all]
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub segments: Option<Vec<u32>>,
    /// Skip segments with fewer exportable rows, and list them in the manifest
    /// [default: the platform's documented minimum]
    #[arg(long, value_name = "N")]
    pub min_size: Option<usize>,
    /// JSON object of segment id to name, such as {"0": "Loyal", "3": "Lapsed"}.
    #[arg(long, value_name = "NAMES.json", conflicts_with = "model")]
    pub names: Option<PathBuf>,
    /// Name segments by the profile's one-line descriptions: the model the assignments came
    /// from, with --input.
    #[arg(long, value_name = "PATH", requires = "input")]
    pub model: Option<PathBuf>,
    /// The table the assignments were made from (same rows, same order), with --model.
    #[arg(long = "input", value_name = "INPUT", requires = "model")]
    pub input: Vec<PathBuf>,
    /// ISO 3166 region of national phone numbers (such as US, GB, DE); without it only
    /// numbers written with '+' and the country code are usable.
    #[arg(long, value_name = "CC")]
    pub default_country: Option<String>,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &ExportArgs) -> Result<()> {
    Paths::new()
        .input("ASSIGNMENTS", Some(&a.assignments))
        .input("--names", a.names.as_deref())
        .input("--model", a.model.as_deref())
        .inputs("--input", &a.input)
        .output_dir("--out-dir", &a.out_dir)
        .check()?;
    let spec = ExportSpec {
        assignments: a.assignments.clone(),
        identifiers: a
            .identifiers
            .iter()
            .map(|s| s.parse::<Identifier>())
            .collect::<Result<_>>()?,
        out_dir: a.out_dir.clone(),
        platform: a.platform,
        format: a.format,
        segments: a.segments.clone(),
        min_size: a.min_size,
        names: match (&a.names, &a.model) {
            (Some(n), _) => Names::File(n.clone()),
            (None, Some(m)) => Names::Profile {
                model: m.clone(),
                inputs: a.input.clone(),
            },
            (None, None) => Names::Ids,
        },
        default_country: a
            .default_country
            .as_deref()
            .map(str::parse::<Country>)
            .transpose()?,
    };
    let m = export(&spec)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&m).map_err(|e| Error::Internal(e.to_string()))?
        );
        return Ok(());
    }
    for s in &m.segments {
        eprintln!(
            "  segment {:>3}: {:>9} rows  {}  ({})",
            s.id, s.rows, s.file, s.name
        );
    }
    for s in &m.skipped {
        eprintln!(
            "  segment {:>3}: skipped, {} rows: {}",
            s.id, s.rows, s.reason
        );
    }
    eprintln!(
        "exported {} segments to {} ({} skipped, {} rows dropped for lack of an identifier)",
        m.segments.len(),
        a.out_dir.display(),
        m.skipped.len(),
        m.dropped_identifiers
    );
    Ok(())
}
