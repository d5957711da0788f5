//! `lakemeans profile`, and the profile, metrics, comparison and report steps that `fit`
//! shares with it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use clap::Args;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::RunArgs;
use crate::backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::html;
use crate::insight::compare::{Comparison, compare};
use crate::insight::metrics::{Quality, quality};
use crate::insight::profile::{Profile, ProfileInput, profile};
use crate::insight::{
    Extra, ExtraKind, ExtraValues, decode_extra, pca, projection_rows, silhouette_rows,
};
use crate::io::{Outputs, ReadOptions, check_target, read_table, resolve_inputs};
use crate::model::Model;
use crate::prep::{ScaleMethod, Scaler};

/// Flags that describe clusters, shared by `fit` and `profile`.
#[derive(Debug, Args)]
pub struct InsightArgs {
    /// Columns not clustered on to describe per cluster: numeric ones like the features (mean,
    /// median, z, lift), strings, dictionaries and booleans as category shares. They are left
    /// out of the default feature set. Needs --profile, --output or --report.
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub describe: Vec<String>,
    /// An existing segment or persona label (string, dictionary, boolean or integer column) to
    /// compare the clusters with: crosstab, Adjusted Rand Index, normalised mutual information,
    /// and the cluster holding most of each segment. Left out of the default feature set.
    #[arg(long, value_name = "COL")]
    pub compare_with: Option<String>,
    /// A self-contained HTML report (inline SVG charts, no network requests): summary, cluster
    /// sizes, z-score heatmap, PCA map, profile table, and the crosstab with --compare-with.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
}

impl InsightArgs {
    /// The extra columns the reader must carry, each once.
    pub fn carry(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for c in self.describe.iter().chain(&self.compare_with) {
            if !v.contains(c) {
                v.push(c.clone());
            }
        }
        v
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
Each row gets its cluster either from --assignments (a Parquet file with a `cluster` column and \
one row per kept input row, in input order, as `fit --output` writes it; use the same \
--drop-invalid as the fit) or from --model (rows are assigned as `predict` would).

Outputs: --output writes the profile as one tidy Parquet table (a row per cluster and variable, \
and per category for categorical columns: cluster, cluster_size, cluster_share, description, \
variable, kind, category, rows, mean, median, population_mean, population_median, z, lift, \
share, population_share, rank, direction) and the same profile as JSON beside it (PATH with the \
extension .json). --json prints that JSON on stdout. --report writes the HTML report.

Definitions: means, medians and shares are weighted by --weight when given; z = (cluster mean - \
population mean) / population standard deviation; lift = cluster mean / population mean. The \
3 to 5 features with the largest |z| are each marked high or low and make up the description. \
Metrics, the comparison scores and crosstab count rows, unweighted, as scikit-learn does.

Example:
  lakemeans profile customers.parquet --assignments clusters.parquet \\
      --describe cohort --output profile.parquet --report report.html")]
pub struct ProfileArgs {
    /// Parquet files or directories, the rows that were clustered.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Cluster of every row: a Parquet file with a `cluster` column.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "model",
        conflicts_with = "model"
    )]
    pub assignments: Option<PathBuf>,
    /// A model written by `fit --model`: its features are profiled and rows assigned by it.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Feature columns with --assignments [default: every numeric column except --weight,
    /// --exclude, --describe and --compare-with ones]
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "A,B,...",
        conflicts_with = "model"
    )]
    pub features: Option<Vec<String>>,
    /// Columns left out of the default feature set.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "A,B,...",
        conflicts_with = "model"
    )]
    pub exclude: Vec<String>,
    /// Column of non-negative row weights for means, medians and shares.
    #[arg(long, value_name = "COL")]
    pub weight: Option<String>,
    /// With --assignments: the scaling of the space where metrics and the PCA map are computed
    /// (a model brings its own).
    #[arg(long, value_enum, default_value_t = ScaleMethod::Standard, conflicts_with = "model")]
    pub scale: ScaleMethod,
    /// Skip rows with a null, NaN or infinite feature or weight.
    #[arg(long)]
    pub drop_invalid: bool,
    /// The profile as Parquet, plus JSON beside it (PATH with the extension .json).
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Also compute silhouette, Calinski-Harabasz and Davies-Bouldin.
    #[arg(long)]
    pub metrics: bool,
    /// Seed of the silhouette and PCA samples.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    #[command(flatten)]
    pub insight: InsightArgs,
    #[command(flatten)]
    pub memory: super::MemoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Where the JSON twin of a Parquet profile goes.
pub fn sidecar(path: &Path) -> Result<PathBuf> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return Err(Error::Usage(format!(
            "{}: the profile path is the Parquet table; its JSON goes beside it with the \
             extension .json, so give a path such as profile.parquet",
            path.display()
        )));
    }
    Ok(path.with_extension("json"))
}

/// Checks every output path of the insight steps before any work.
/// `shown`: the profile reaches the user anyway (the `profile` command prints it).
pub fn check_insight_targets(
    profile_path: Option<&Path>,
    insight: &InsightArgs,
    shown: bool,
) -> Result<()> {
    if let Some(p) = profile_path {
        check_target(p)?;
        check_target(&sidecar(p)?)?;
    }
    if let Some(r) = &insight.report {
        check_target(r)?;
    }
    if !shown && !insight.describe.is_empty() && profile_path.is_none() && insight.report.is_none()
    {
        return Err(Error::Usage(
            "--describe needs somewhere to show the result: give --profile/--output or --report"
                .into(),
        ));
    }
    Ok(())
}

/// Extra columns decoded once, right after reading, so that a bad one fails before any work.
pub struct Extras {
    pub describe: Vec<Extra>,
    pub segment: Option<Extra>,
}

pub fn decode_extras(
    carry: &[RecordBatch],
    files: &[PathBuf],
    insight: &InsightArgs,
) -> Result<Extras> {
    let file = files.first().cloned().unwrap_or_default();
    let describe = insight
        .describe
        .iter()
        .map(|c| decode_extra(carry, c, ExtraKind::Describe, &file))
        .collect::<Result<_>>()?;
    let segment = insight
        .compare_with
        .as_ref()
        .map(|c| decode_extra(carry, c, ExtraKind::Segment, &file))
        .transpose()?;
    Ok(Extras { describe, segment })
}

/// What the insight steps work from, after the rows have their clusters.
pub struct Analysis<'a> {
    /// Rows in clustered space.
    pub data: &'a Dataset,
    pub features: &'a [String],
    pub files: &'a [PathBuf],
    /// The same rows in input units, when a profile or report is wanted.
    pub raw: Option<&'a Dataset>,
    pub labels: &'a [u32],
    pub k: usize,
    pub seed: u64,
    pub metrics: bool,
    pub extras: &'a Extras,
    pub insight: &'a InsightArgs,
    pub profile_path: Option<&'a Path>,
    pub title: String,
    pub facts: Vec<(String, String)>,
}

#[derive(Default)]
pub struct Analysed {
    pub quality: Option<Quality>,
    pub comparison: Option<Comparison>,
    pub profile: Option<Profile>,
}

/// Runs the metrics, comparison, profile and report that were asked for, adding every file to
/// `out` (nothing is visible until the caller commits).
pub fn analyse(a: &Analysis, out: &mut Outputs) -> Result<Analysed> {
    let data = a.data;
    let quality = a
        .metrics
        .then(|| quality(data, a.labels, a.k, &silhouette_rows(data.rows(), a.seed)));
    let comparison = match &a.extras.segment {
        Some(Extra {
            name,
            values: ExtraValues::Categorical { codes, levels },
        }) => Some(compare(name, a.labels, a.k, codes, levels)),
        Some(e) => {
            return Err(Error::Internal(format!(
                "segment column '{}' was not decoded as categories",
                e.name
            )));
        }
        None => None,
    };
    let want_profile = a.profile_path.is_some() || a.insight.report.is_some();
    let profile = match (want_profile, a.raw) {
        (false, _) => None,
        (true, None) => return Err(Error::Internal("profile without input-unit rows".into())),
        (true, Some(raw)) => Some(raw),
    }
    .map(|raw| {
        let mut p = profile(&ProfileInput {
            data: raw,
            features: a.features,
            labels: a.labels,
            k: a.k,
            describe: &a.extras.describe,
        });
        p.metrics = quality.clone();
        p.compare = comparison.clone();
        p
    });
    if let (Some(path), Some(p)) = (a.profile_path, &profile) {
        let batch = p.to_record_batch()?;
        out.parquet(path, batch.schema(), [Ok(batch)], &[])?;
        let json = serde_json::to_string_pretty(p).map_err(|e| Error::Internal(e.to_string()))?;
        out.bytes(&sidecar(path)?, json.as_bytes())?;
    }
    if let (Some(path), Some(p)) = (&a.insight.report, &profile) {
        let proj = pca::project(data, a.labels, a.k, &projection_rows(data.rows(), a.seed));
        let inputs: Vec<String> = a
            .files
            .iter()
            .map(|f| {
                f.file_name().map_or_else(
                    || f.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let doc = html::cluster_report(&html::ClusterReport {
            title: &a.title,
            inputs: &inputs,
            profile: p,
            projection: Some(&proj),
            facts: a.facts.clone(),
        });
        out.bytes(path, doc.as_bytes())?;
    }
    Ok(Analysed {
        quality,
        comparison,
        profile,
    })
}

/// The report title for `k` clusters of `files`.
pub fn title(k: usize, files: &[PathBuf]) -> String {
    let name = files
        .first()
        .and_then(|f| f.file_stem())
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if files.len() > 1 {
        format!("{k} clusters of {name} and {} more files", files.len() - 1)
    } else {
        format!("{k} clusters of {name}")
    }
}

/// One line per cluster, for a person at a terminal.
pub fn describe_lines(p: &Profile) -> String {
    let mut s = String::new();
    for c in &p.clusters {
        s += &format!(
            "  cluster {:>2}: {:>5.1}%  {}\n",
            c.cluster,
            100.0 * c.share,
            c.description
        );
    }
    s
}

/// Reads the `cluster` column of an assignments file.
fn read_labels(path: &Path) -> Result<Vec<u32>> {
    let files = resolve_inputs(&[path.to_path_buf()])?;
    let mut labels = Vec::new();
    for f in &files {
        let file = std::fs::File::open(f).map_err(|e| Error::input(f, e))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Error::input(f, format!("not a readable Parquet file ({e})")))?;
        if b.schema().field_with_name("cluster").is_err() {
            return Err(Error::input(
                f,
                "no column 'cluster' (expected assignments as `lakemeans fit --output` writes them)",
            ));
        }
        let reader = b
            .build()
            .map_err(|e| Error::input(f, format!("cannot read ({e})")))?;
        for rb in reader {
            let rb = rb.map_err(|e| Error::input(f, format!("cannot decode ({e})")))?;
            let col = rb
                .column_by_name("cluster")
                .ok_or_else(|| Error::input(f, "no column 'cluster'"))?;
            if !col.data_type().is_integer() {
                return Err(Error::input(
                    f,
                    format!("column 'cluster' is {}, not an integer", col.data_type()),
                ));
            }
            let cast = arrow_cast::cast(col, &DataType::Int64)
                .map_err(|e| Error::input(f, format!("column 'cluster': {e}")))?;
            let a = cast.as_primitive::<Int64Type>();
            for i in 0..a.len() {
                if a.is_null(i) || a.value(i) < 0 || a.value(i) > u32::MAX as i64 / 2 {
                    return Err(Error::input(
                        f,
                        format!(
                            "column 'cluster' has a missing or negative value at row {}",
                            labels.len()
                        ),
                    ));
                }
                labels.push(a.value(i) as u32);
            }
        }
    }
    Ok(labels)
}

pub fn run(a: &ProfileArgs) -> Result<()> {
    let t0 = Instant::now();
    check_insight_targets(a.output.as_deref(), &a.insight, true)?;
    let model = a.model.as_ref().map(|m| Model::load(m)).transpose()?;
    let opts = ReadOptions {
        features: match &model {
            Some(m) => Some(m.features.clone()),
            None => a.features.clone(),
        },
        exclude: a.exclude.clone(),
        ids: Vec::new(),
        weight: a.weight.clone(),
        drop_invalid: a.drop_invalid,
        carry: a.insight.carry(),
    };
    crate::job::check_in_memory(&a.inputs, &opts, a.memory.budget())?;
    let mut table = read_table(&a.inputs, &opts)?;
    let extras = decode_extras(&table.carry, &table.files, &a.insight)?;
    let raw = table.data.clone();
    let (scaler, labels, k, device) = match &model {
        Some(m) => {
            table.data = m.scaling.transform_dataset(&table.data);
            let mut be = backend::create(a.run.device, &table.data, a.run.adapter.as_deref())?;
            be.step(&m.flat_centroids(), m.k, false)?;
            let labels = be.assignment()?.labels;
            let info = be.info();
            (m.scaling.clone(), labels, m.k, Some(info))
        }
        None => {
            let path = a
                .assignments
                .as_ref()
                .ok_or_else(|| Error::Usage("give --assignments or --model".into()))?;
            let labels = read_labels(path)?;
            if labels.len() != table.data.rows() {
                return Err(Error::input(
                    path,
                    format!(
                        "has {} rows but the input has {} (kept) rows; assignments must hold one \
                         row per input row, in input order (and the fit's --drop-invalid)",
                        labels.len(),
                        table.data.rows()
                    ),
                ));
            }
            let k = labels.iter().max().map_or(1, |&m| m as usize + 1);
            let scaler = Scaler::fit(a.scale, &table.data);
            table.data = scaler.transform_dataset(&table.data);
            (scaler, labels, k, None)
        }
    };
    let mut facts = vec![(
        "scaling".to_string(),
        format!("{:?}", scaler.method).to_lowercase(),
    )];
    if let Some(info) = &device {
        facts.push(("assigned on".to_string(), info.kind.clone()));
    }
    let mut out = Outputs::default();
    let done = analyse(
        &Analysis {
            data: &table.data,
            features: &table.features,
            files: &table.files,
            raw: Some(&raw),
            labels: &labels,
            k,
            seed: a.seed,
            metrics: a.metrics,
            extras: &extras,
            insight: &a.insight,
            profile_path: a.output.as_deref(),
            title: title(k, &table.files),
            facts,
        },
        &mut out,
    )?;
    // The profile is needed for stdout too when nothing else asked for it.
    let profile = match done.profile {
        Some(p) => p,
        None => {
            let mut p = profile(&ProfileInput {
                data: &raw,
                features: &table.features,
                labels: &labels,
                k,
                describe: &extras.describe,
            });
            p.metrics = done.quality.clone();
            p.compare = done.comparison.clone();
            p
        }
    };
    out.commit()?;
    if a.run.json {
        println!(
            "{}",
            serde_json::to_string(&profile).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        let mut s = format!(
            "profile: {} rows, {} clusters, {} features\n",
            profile.rows,
            k,
            profile.features.len()
        );
        s += &describe_lines(&profile);
        if let Some(q) = &profile.metrics {
            let f = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.4}"));
            s += &format!(
                "silhouette {} (on {} rows), Calinski-Harabasz {}, Davies-Bouldin {}\n",
                f(q.silhouette),
                q.silhouette_rows,
                q.calinski_harabasz
                    .map_or("n/a".to_string(), |x| format!("{x:.1}")),
                f(q.davies_bouldin)
            );
        }
        if let Some(c) = &profile.compare {
            s += &format!("against {}: ARI {:.4}, NMI {:.4}\n", c.column, c.ari, c.nmi);
        }
        print!("{s}");
        eprintln!("lakemeans: profiled in {:.2}s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
