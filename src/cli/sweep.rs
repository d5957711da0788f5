//! `lakemeans sweep`: fit a range of k on the same loaded rows and recommend one.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::RunArgs;

use crate::backend;
use crate::error::{Error, Result};
use crate::html;
use crate::insight::sweep::{Segments, Sweep, sweep};
use crate::insight::{ExtraKind, ExtraValues, decode_extra, silhouette_rows};
use crate::io::{Outputs, Paths, ReadOptions, read_table};
use crate::kmeans::{self, Init, KMeansParams, Quiet};
use crate::prep::{ScaleMethod, Scaler};

#[derive(Debug, Args)]
#[command(after_help = "\
Every k is fitted with the same settings and seed on the rows loaded once, on one backend (the \
GPU when there is one). For each k the sweep reports inertia, silhouette (exact, on a seeded \
sample of at most 50,000 rows, the same sample for every k), Calinski-Harabasz and \
Davies-Bouldin, all in clustered space, plus ARI and NMI with --compare-with.

The recommended k is the one most criteria prefer: highest silhouette, highest \
Calinski-Harabasz, lowest Davies-Bouldin, and the elbow of the inertia curve (the k furthest \
below the straight line from the first to the last point). Ties go to the higher silhouette.

Example:
  lakemeans sweep customers.parquet --k 2..10 --exclude customer_id --report sweep.html")]
pub struct SweepArgs {
    /// Parquet files or directories.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// The values of k: an inclusive range A..B, or a list A,B,C.
    #[arg(long, short, value_name = "A..B")]
    pub k: String,
    /// Feature columns [default: every numeric column except --weight, --exclude and
    /// --compare-with ones]
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub features: Option<Vec<String>>,
    /// Columns left out of the default feature set.
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub exclude: Vec<String>,
    /// Column of non-negative sample weights.
    #[arg(long, value_name = "COL")]
    pub weight: Option<String>,
    /// Feature scaling before clustering.
    #[arg(long, value_enum, default_value_t = ScaleMethod::Standard)]
    pub scale: ScaleMethod,
    /// k-means++ or random.
    #[arg(long, default_value = "k-means++", value_name = "k-means++|random")]
    pub init: String,
    /// Runs per k from different seeds; the lowest inertia is kept.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub n_init: usize,
    /// Lloyd iterations per run at most.
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub max_iter: usize,
    /// Convergence threshold, as for `fit`.
    #[arg(long, default_value_t = 1e-4, value_name = "T")]
    pub tol: f64,
    /// Seed of every random choice, the silhouette sample included.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Skip rows with a null, NaN or infinite feature or weight.
    #[arg(long)]
    pub drop_invalid: bool,
    #[command(flatten)]
    pub rows: super::FilterArgs,
    /// An existing segment label to score every k against (ARI, NMI).
    #[arg(long, value_name = "COL")]
    pub compare_with: Option<String>,
    /// A self-contained HTML report with the elbow, silhouette, Calinski-Harabasz and
    /// Davies-Bouldin curves and the table of every k.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub memory: super::MemoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Parses `A..B` / `A..=B` (inclusive) or `A,B,C` into sorted, distinct values of k.
pub fn parse_ks(s: &str) -> Result<Vec<usize>> {
    let bad = || {
        Error::Usage(format!(
            "--k '{s}': expected an inclusive range such as 2..20 or a list such as 2,4,8"
        ))
    };
    let num = |t: &str| t.trim().parse::<usize>().map_err(|_| bad());
    let mut ks: Vec<usize> = if let Some((a, b)) = s.split_once("..") {
        let b = b.strip_prefix('=').unwrap_or(b);
        let (a, b) = (num(a)?, num(b)?);
        if b < a {
            return Err(bad());
        }
        (a..=b).collect()
    } else {
        s.split(',').map(num).collect::<Result<_>>()?
    };
    ks.sort_unstable();
    ks.dedup();
    if ks.is_empty() {
        return Err(bad());
    }
    if ks[0] == 0 {
        return Err(Error::Usage("--k: every k must be at least 1".into()));
    }
    if ks.len() > 200 {
        return Err(Error::Usage(format!(
            "--k '{s}' asks for {} fits; a sweep takes 200 values at most",
            ks.len()
        )));
    }
    Ok(ks)
}

pub fn run(a: &SweepArgs) -> Result<()> {
    let t0 = Instant::now();
    let ks = parse_ks(&a.k)?;
    Paths::new()
        .inputs("INPUT", &a.inputs)
        .output("--report", a.report.as_deref())
        .check()?;
    let init = match a.init.as_str() {
        "k-means++" | "kmeans++" => Init::KMeansPlusPlus,
        "random" => Init::Random,
        other => {
            return Err(Error::Usage(format!(
                "--init '{other}': a sweep takes k-means++ or random"
            )));
        }
    };
    let opts = ReadOptions {
        features: a.features.clone(),
        exclude: a.exclude.clone(),
        ids: Vec::new(),
        weight: a.weight.clone(),
        drop_invalid: a.drop_invalid,
        carry: a.compare_with.iter().cloned().collect(),
        filter: a.rows.filter.clone(),
        table_version: a.rows.table_version,
    };
    crate::job::check_in_memory(&a.inputs, &opts, a.memory.budget())?;
    let mut table = read_table(&a.inputs, &opts)?;
    // Decoded right after reading, so that a bad segment column fails before any fit.
    let file = table.files.first().cloned().unwrap_or_default();
    let segment = a
        .compare_with
        .as_ref()
        .map(|c| decode_extra(&table.carry, c, ExtraKind::Segment, &file))
        .transpose()?;
    let scaler = Scaler::fit(a.scale, &table.data);
    table.data = scaler.transform_dataset(&table.data);
    let base = KMeansParams {
        k: ks[ks.len() - 1],
        init,
        n_init: a.n_init,
        max_iter: a.max_iter,
        tol: a.tol,
        seed: a.seed,
        ..KMeansParams::new(ks[ks.len() - 1])
    };
    // Checks the largest k against the rows (and the rest of the settings) before any work.
    kmeans::validate(&base, &table.data)?;
    let seg = match &segment {
        Some(e) => match &e.values {
            ExtraValues::Categorical { codes, levels } => Some(Segments {
                column: &e.name,
                codes,
                count: levels.len(),
            }),
            ExtraValues::Numeric(_) => None,
        },
        None => None,
    };
    let sample = silhouette_rows(table.data.rows(), a.seed);
    let mut be = backend::create(a.run.device, &table.data, a.run.adapter.as_deref())?;
    let quiet = a.run.json;
    let result: Sweep = sweep(
        &table.data,
        be.as_mut(),
        &base,
        &ks,
        &sample,
        seg.as_ref(),
        &Quiet,
        |p| {
            if !quiet {
                eprintln!(
                    "lakemeans: k = {:>3}: inertia {:.6e}, {} iterations ({:.1}s)",
                    p.k,
                    p.inertia,
                    p.iterations,
                    t0.elapsed().as_secs_f64()
                );
            }
        },
    )?;
    let info = be.info();
    drop(be);
    let mut out = Outputs::default();
    if let Some(r) = &a.report {
        let inputs = html::file_names(&table.files);
        let title = format!(
            "Choosing k for {}",
            table
                .files
                .first()
                .and_then(|f| f.file_stem())
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
        let doc = html::sweep_report(&title, &inputs, table.data.rows(), &table.features, &result);
        out.bytes(r, doc.as_bytes())?;
    }
    out.commit()?;
    if a.run.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            rows: usize,
            files_read: usize,
            features: &'a [String],
            device: &'a str,
            adapter: &'a str,
            seconds: f64,
            #[serde(flatten)]
            sweep: &'a Sweep,
        }
        let j = Json {
            rows: table.data.rows(),
            files_read: table.files.len(),
            features: &table.features,
            device: &info.kind,
            adapter: &info.name,
            seconds: t0.elapsed().as_secs_f64(),
            sweep: &result,
        };
        println!(
            "{}",
            serde_json::to_string(&j).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        print!("{}", table_text(&result));
    }
    Ok(())
}

/// The sweep as a fixed-width table with the recommendation under it.
pub fn table_text(s: &Sweep) -> String {
    let cmp = s.compare_with.is_some();
    let mut t = format!(
        "{:>4}  {:>14}  {:>10}  {:>17}  {:>14}",
        "k", "inertia", "silhouette", "calinski_harabasz", "davies_bouldin"
    );
    if cmp {
        t += &format!("  {:>7}  {:>7}", "ari", "nmi");
    }
    t += "\n";
    let f = |v: Option<f64>, p: usize| v.map_or("n/a".to_string(), |x| format!("{x:.p$}"));
    for p in &s.points {
        t += &format!(
            "{:>4}  {:>14.2}  {:>10}  {:>17}  {:>14}",
            p.k,
            p.inertia,
            f(p.silhouette, 4),
            f(p.calinski_harabasz, 1),
            f(p.davies_bouldin, 4)
        );
        if cmp {
            t += &format!("  {:>7}  {:>7}", f(p.ari, 4), f(p.nmi, 4));
        }
        t += if p.k == s.recommended_k {
            "  <- recommended\n"
        } else {
            "\n"
        };
    }
    t += &format!(
        "silhouette on {} rows\nrecommended k = {}: {}\n",
        s.silhouette_rows, s.recommended_k, s.reason
    );
    t
}
