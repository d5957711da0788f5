//! `lakemeans sweep`: fit a range of k on the same loaded rows and recommend one.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::RunArgs;

use crate::error::{Error, Result};
use crate::html;
use crate::insight::sweep::Sweep;
use crate::io::{Outputs, Paths, ReadOptions};
use crate::job::{self, Mode, SweepJob};
use crate::kmeans::Quiet;

#[derive(Debug, Args)]
#[command(after_help = "\
Every k is fitted with the same settings and seed on the rows prepared once, on one backend \
(the GPU when there is one). The rows are held in memory when they fit --memory-budget and \
otherwise stream from a spill cache on local disk, with the same results; only 8 bytes a row \
(label and distance, 4 more with --compare-with) stay in memory then. For each k the sweep reports inertia, silhouette (exact, on a seeded \
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
    /// Skip rows with a null, NaN or infinite feature or weight.
    #[arg(long)]
    pub drop_invalid: bool,
    #[command(flatten)]
    pub kmeans: super::KMeansArgs,
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
    Paths::new()
        .inputs("INPUT", &a.inputs)
        .output("--report", a.report.as_deref())
        .check()?;
    let km = &a.kmeans;
    let job = SweepJob {
        inputs: a.inputs.clone(),
        read: ReadOptions {
            features: a.features.clone(),
            exclude: a.exclude.clone(),
            ids: Vec::new(),
            weight: a.weight.clone(),
            drop_invalid: a.drop_invalid,
            carry: Vec::new(),
            filter: a.rows.filter.clone(),
            table_version: a.rows.table_version,
        },
        scale: km.scale,
        init: km.init(),
        params: km.params(1),
        ks: parse_ks(&a.k)?,
        compare_with: a.compare_with.clone(),
        device: a.run.device,
        adapter: a.run.adapter.clone(),
        prepare: a.memory.prepare(),
    };
    let quiet = a.run.json;
    let run = job::sweep(&job, a.report.as_deref(), &Quiet, |p| {
        if !quiet {
            eprintln!(
                "lakemeans: k = {:>3}: inertia {:.6e}, {} iterations ({:.1}s)",
                p.k,
                p.inertia,
                p.iterations,
                t0.elapsed().as_secs_f64()
            );
        }
    })?;
    let mut out = Outputs::default();
    if let Some(r) = &a.report {
        let inputs = html::file_names(&run.files);
        let title = format!(
            "Choosing k for {}",
            run.files
                .first()
                .and_then(|f| f.file_stem())
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
        let doc = html::sweep_report(&title, &inputs, run.rows, &run.features, &run.sweep);
        out.bytes(r, doc.as_bytes())?;
    }
    out.commit()?;
    if a.run.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            rows: usize,
            files_read: usize,
            bytes_read: u64,
            features: &'a [String],
            device: &'a str,
            adapter: &'a str,
            init: &'a str,
            mode: Mode,
            passes: usize,
            seconds: f64,
            #[serde(flatten)]
            sweep: &'a Sweep,
        }
        let j = Json {
            rows: run.rows,
            files_read: run.files_read,
            bytes_read: run.bytes_read,
            features: &run.features,
            device: &run.info.kind,
            adapter: &run.info.name,
            init: run.init,
            mode: run.mode,
            passes: run.passes,
            seconds: t0.elapsed().as_secs_f64(),
            sweep: &run.sweep,
        };
        println!(
            "{}",
            serde_json::to_string(&j).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        print!("{}", table_text(&run.sweep));
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
