//! `lakemeans profile`: translates the flags into a [`ProfileJob`] and prints the result; the
//! insight flags and the terminal summary that `fit` shares with it.

use std::path::PathBuf;

use clap::Args;

use super::RunArgs;
use crate::error::{Error, Result};
use crate::insight::InsightSpec;
use crate::insight::analysis::sidecar;
use crate::insight::profile::Profile;
use crate::io::{Paths, ReadOptions};
use crate::job::{self, Clusters, ProfileJob};
use crate::model::Model;
use crate::prep::ScaleMethod;

/// Flags that describe clusters, shared by `fit` and `profile`.
#[derive(Debug, Args)]
pub struct InsightArgs {
    /// Columns not clustered on to describe per cluster: numeric ones like the features (mean,
    /// median, z, lift), strings, dictionaries and booleans as category shares. They are left
    /// out of the default feature set. Shown in the cluster profile and the HTML report.
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
    /// What the library is asked to compute, with `metrics` and the samples' `seed`.
    pub fn spec(&self, profile: bool, metrics: bool, seed: u64) -> InsightSpec {
        InsightSpec {
            describe: self.describe.clone(),
            compare_with: self.compare_with.clone(),
            metrics,
            profile: profile || self.report.is_some(),
            projection: self.report.is_some(),
            seed,
        }
    }

    /// The extra columns the reader must carry, each once.
    pub fn carry(&self) -> Vec<String> {
        self.spec(false, false, 0).carry()
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
share, population_share, rank, direction, sd, min, max, median_error, population_median_error) \
and the same profile as JSON beside it (PATH with the extension .json). --json prints that JSON \
on stdout. --report writes the HTML report.

Tables of any size: the profile streams from the files. Counts, weights, means, standard \
deviations, minima, maxima, shares, the crosstab and the Calinski-Harabasz and Davies-Bouldin \
indices are exact. Medians are exact when every value fits --memory-budget; otherwise a second \
pass fills 1,024-bin histograms over each cluster's range, and each median comes with its \
median_error, a bound on its distance from the exact median (at most 1/1,024 of the range). \
The JSON's `medians` says which. Silhouette and the report's map use seeded samples.

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
    #[arg(long, value_name = "PATH", conflicts_with = "model")]
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
    #[command(flatten)]
    pub rows: super::FilterArgs,
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

/// One line per cluster, for a person at a terminal, and a word on the medians when they are
/// approximate.
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
    if !p.medians.exact {
        s += &format!(
            "medians: approximate (the rows exceed --memory-budget; {}-bin histograms), each \
             within its median_error\n",
            p.medians.bins.unwrap_or(0)
        );
    }
    s
}

pub fn run(a: &ProfileArgs) -> Result<()> {
    let sidecar = a.output.as_deref().map(sidecar).transpose()?;
    Paths::new()
        .inputs("INPUT", &a.inputs)
        .input("--assignments", a.assignments.as_deref())
        .input("--model", a.model.as_deref())
        .output("--output", a.output.as_deref())
        .output("--output (its JSON)", sidecar.as_deref())
        .output("--report", a.insight.report.as_deref())
        .check()?;
    let model = a.model.as_ref().map(|m| Model::load(m)).transpose()?;
    let read = ReadOptions {
        features: match &model {
            Some(m) => Some(m.features.clone()),
            None => a.features.clone(),
        },
        exclude: a.exclude.clone(),
        ids: Vec::new(),
        weight: a.weight.clone(),
        drop_invalid: a.drop_invalid,
        carry: a.insight.carry(),
        filter: a.rows.filter.clone(),
        table_version: a.rows.table_version,
    };
    let clusters = match (model, &a.assignments) {
        (Some(m), _) => Clusters::Model(Box::new(m)),
        (None, Some(p)) => Clusters::Assignments(p.clone()),
        (None, None) => {
            return Err(Error::Usage(
                "say which cluster each row is in: give --model (a model from `fit --model`; \
                 rows are assigned as `predict` would) or --assignments (a file from \
                 `fit --output`)"
                    .into(),
            ));
        }
    };
    let run = job::profile(&ProfileJob {
        inputs: a.inputs.clone(),
        read,
        clusters,
        scale: a.scale,
        device: a.run.device,
        adapter: a.run.adapter.clone(),
        prepare: a.memory.prepare(),
        spec: a.insight.spec(true, a.metrics, a.seed),
        output: a.output.clone(),
        report: a.insight.report.clone(),
    })?;
    let profile = &run.profile;
    if a.run.json {
        println!(
            "{}",
            serde_json::to_string(profile).map_err(|e| Error::Internal(e.to_string()))?
        );
        return Ok(());
    }
    let mut s = format!(
        "profile: {} rows, {} clusters, {} features\n",
        profile.rows,
        run.k,
        profile.features.len()
    );
    s += &describe_lines(profile);
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
    let passes = run.insight_passes;
    eprintln!(
        "lakemeans: profiled in {:.2}s ({passes} {} over the files)",
        run.seconds,
        if passes == 1 { "pass" } else { "passes" }
    );
    Ok(())
}
