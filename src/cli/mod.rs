//! Command-line interface: argument definitions and one module per subcommand.

mod bench;
mod export;
mod fit;
mod passes;
mod predict;
mod profile;
mod progress;
mod refit;
mod sweep;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::backend::DeviceChoice;
use crate::error::{Error, Result};
use crate::prep::ScaleMethod;

#[derive(Debug, Parser)]
#[command(
    name = "lakemeans",
    version,
    about = "k-means clustering for Parquet feature tables, on the GPU or the CPU",
    long_about = "k-means clustering for Parquet feature tables, on the GPU or the CPU.\n\n\
        Reads one or more Parquet files, directories of them (key=value directories become \
        columns) or Delta Lake tables, clusters the rows, and writes per-row assignments, \
        centroids and a reusable model. No output may overwrite an input or another output. The same input, parameters and \
        seed give byte-identical outputs whatever the thread count.",
    after_help = "Exit status: 0 on success, 2 for bad usage or bad input, 1 for an internal failure."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster a table and write assignments, centroids and a model.
    Fit(FitArgs),
    /// Assign rows of a table to the clusters of a saved model.
    Predict(PredictArgs),
    /// Describe clusters: sizes, feature means and medians, z-scores, lifts, descriptions.
    Profile(profile::ProfileArgs),
    /// Fit every k of a range and recommend one (silhouette, Calinski-Harabasz, Davies-Bouldin, elbow).
    Sweep(sweep::SweepArgs),
    /// Write one upload-ready audience file per segment (hashed emails and phones, raw ids) for
    /// Google, Meta, LinkedIn or a DMP, with a manifest.
    Export(export::ExportArgs),
    /// Refit a saved model on newer rows, keeping segment ids stable, and report the drift.
    Refit(refit::RefitArgs),
    /// Write a synthetic audience (Gaussian mixture with known labels) to Parquet.
    Gen(GenArgs),
    /// List the GPU adapters lakemeans can use, with their key limits.
    Devices(DevicesArgs),
    /// Time Lloyd iterations over a fixed matrix of workloads, to compare hardware; `bench
    /// passes` times one pass over a real table from each place its rows can live.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print the adapters as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The default matrix is n in 100k, 1M, 10M; d in 8, 32, 128, 256; k in 8, 64, 1024, 20000. \
    Workloads run smallest first; one is skipped when its data would exceed --max-gb or when the \
    fastest throughput measured so far predicts more than --budget-seconds per iteration."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// Rows to test instead of the default matrix's.
    #[arg(long = "n", value_delimiter = ',', value_name = "N,...")]
    pub rows: Option<Vec<usize>>,
    /// Dimensions to test instead of the default matrix's.
    #[arg(long = "d", value_delimiter = ',', value_name = "D,...")]
    pub dims: Option<Vec<usize>>,
    /// Cluster counts to test instead of the default matrix's.
    #[arg(long = "k", value_delimiter = ',', value_name = "K,...")]
    pub ks: Option<Vec<usize>>,
    /// Timed iterations per workload, after one warm-up; the median is reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub iters: usize,
    /// Skip workloads predicted to take longer than this per iteration.
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub budget_seconds: f64,
    /// Largest generated feature matrix in GB [default: a quarter of memory]
    #[arg(long, value_name = "GB")]
    pub max_gb: Option<f64>,
    /// Also time a copy of each workload's feature matrix with every thread: the memory
    /// bandwidth that bounds a pass over it.
    #[arg(long)]
    pub copy: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Benchmarks other than the workload matrix.
#[derive(Debug, Subcommand)]
pub enum BenchMode {
    /// Time one pass over a table from Parquet, from the spill cache and from memory.
    Passes(passes::PassesArgs),
}

/// Which rows of a table to read, shared by every command that reads one.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Read only rows where COL=V, COL!=V or COL in (A,B) holds (repeatable; all must hold).
    /// On a Hive partition column (a key=value directory) whole directories are skipped
    /// unread; on other columns row groups whose statistics rule the value out are skipped,
    /// and every remaining row is filtered exactly. Nulls never match.
    #[arg(long, value_name = "EXPR", value_parser = parse_filter)]
    pub filter: Vec<crate::io::Filter>,
    /// Read version N of a Delta table instead of its latest snapshot.
    #[arg(long, value_name = "N")]
    pub table_version: Option<u64>,
}

fn parse_filter(s: &str) -> std::result::Result<crate::io::Filter, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// Options shared by every command that runs k-means passes.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where the passes over the data run: a GPU when one exists (auto), or the one named.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// GPU adapter to use: a case-insensitive part of its name (see `lakemeans devices`).
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Worker threads for the CPU [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON object with the results and timings on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// Parquet files or directories (every *.parquet below, in sorted path order; key=value
    /// directories below a directory given become columns of its rows).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Number of clusters.
    #[arg(long, short, allow_negative_numbers = true, value_parser = at_least_one)]
    pub k: usize,
    /// Feature columns [default: every numeric column except --id, --weight and --exclude ones]
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub features: Option<Vec<String>>,
    /// Columns left out of the default feature set.
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub exclude: Vec<String>,
    /// Column carried through unchanged to the assignments (repeatable); Hive partition
    /// columns (key=value directories) count as columns.
    #[arg(long = "id", value_name = "COL")]
    pub ids: Vec<String>,
    /// Column of non-negative sample weights, used in init, update and inertia.
    #[arg(long, value_name = "COL")]
    pub weight: Option<String>,
    #[command(flatten)]
    pub kmeans: KMeansArgs,
    /// Train on a uniform seeded sample of N rows, then assign every row in one final pass
    /// (the practical way to cluster 100 M rows; FAISS samples 256 rows per centroid).
    #[arg(long, value_name = "N")]
    pub train_sample: Option<usize>,
    /// Skip rows with a null, NaN or infinite feature or weight (and report how many).
    #[arg(long)]
    pub drop_invalid: bool,
    #[command(flatten)]
    pub rows: FilterArgs,
    /// Assignments: the --id columns, `cluster` (int32) and `distance` (float32, squared, in
    /// clustered space), one row per kept input row, in input order.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Centroids: `cluster`, `size`, `weight`, then one float64 column per feature in input units.
    #[arg(long, value_name = "PATH")]
    pub centroids: Option<PathBuf>,
    /// JSON model with everything `predict` needs.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Cluster profiles as a Parquet table at PATH, and as JSON beside it (PATH with the
    /// extension .json); see `lakemeans profile --help` for what they hold.
    #[arg(long, value_name = "PATH")]
    pub profile: Option<PathBuf>,
    /// Add silhouette (on a seeded sample of at most 50,000 rows), Calinski-Harabasz and
    /// Davies-Bouldin, all in clustered space, to the summary.
    #[arg(long)]
    pub metrics: bool,
    #[command(flatten)]
    pub insight: profile::InsightArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The k-means settings, defined once for `fit` and `sweep`.
#[derive(Debug, Args)]
pub struct KMeansArgs {
    /// Feature scaling before clustering; centroids are always reported in input units.
    #[arg(long, value_enum, default_value_t = ScaleMethod::Standard)]
    pub scale: ScaleMethod,
    /// auto (greedy k-means++ when the rows fit in memory, k-means|| when the fit streams),
    /// k-means++, k-means||, random, or a Parquet file of k centroids (columns named like the
    /// features, in input units; `fit` only, as a sweep fits several k).
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|k-means++|k-means|||random|PATH"
    )]
    pub init: String,
    /// k-means|| sampling rounds, each one pass over the rows (Spark MLlib's initSteps).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub init_rounds: usize,
    /// k-means|| candidates drawn per round, as a multiple of k (the l = 2k of Bahmani et al.).
    #[arg(long, default_value_t = 2.0, value_name = "F")]
    pub oversampling: f64,
    /// Runs from different seeds; the one with the lowest inertia is kept.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub n_init: usize,
    /// Lloyd iterations per run at most.
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub max_iter: usize,
    /// Stop when the squared centroid shift is below T times the mean feature variance;
    /// 0 runs to --max-iter unless no label changes.
    #[arg(long, default_value_t = 1e-4, value_name = "T")]
    pub tol: f64,
    /// Seed of every random choice (init, samples).
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
}

impl KMeansArgs {
    /// The parameters of a fit with `k` clusters; the init comes from [`KMeansArgs::init`].
    pub fn params(&self, k: usize) -> crate::kmeans::KMeansParams {
        crate::kmeans::KMeansParams {
            n_init: self.n_init,
            max_iter: self.max_iter,
            tol: self.tol,
            seed: self.seed,
            init_rounds: self.init_rounds,
            oversampling: self.oversampling,
            ..crate::kmeans::KMeansParams::new(k)
        }
    }

    pub fn init(&self) -> crate::job::InitChoice {
        crate::job::InitChoice::parse(&self.init)
    }
}

/// How much memory the rows may take, and where they go when they do not fit.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Memory the rows and per-row state may take, such as 4GiB or 500MB [default: half of
    /// physical memory]. A table whose clustered f32 matrix fits is held in memory; a larger
    /// one streams every pass from a spill cache on local disk, with the same results (a
    /// profile's medians then come from histograms, each with its error bound).
    #[arg(long, value_name = "SIZE", value_parser = crate::job::parse_size)]
    pub memory_budget: Option<u64>,
    /// Directory for the spill cache of a streamed fit (the f32 rows; deleted when the run
    /// ends, fails or is interrupted) [default: the system's temporary directory]
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
}

impl MemoryArgs {
    pub fn budget(&self) -> u64 {
        self.memory_budget
            .unwrap_or_else(crate::job::default_budget)
    }

    /// How a job prepares its rows under these flags (id columns kept for the outputs).
    pub fn prepare(&self) -> crate::job::Prepare {
        crate::job::Prepare {
            budget: self.budget(),
            spill_dir: self.spill_dir.clone(),
            extras: true,
        }
    }
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Parquet files or directories.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// A model written by `lakemeans fit --model`.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Assignments, as for `fit --output`.
    #[arg(long, value_name = "PATH")]
    pub output: PathBuf,
    /// Column carried through unchanged to the assignments (repeatable).
    #[arg(long = "id", value_name = "COL")]
    pub ids: Vec<String>,
    /// Skip rows with a null, NaN or infinite feature (and report how many).
    #[arg(long)]
    pub drop_invalid: bool,
    #[command(flatten)]
    pub rows: FilterArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Rows to write.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least_one)]
    pub rows: usize,
    /// Feature columns f0..f{D-1}.
    #[arg(long, value_name = "D")]
    pub features: usize,
    /// Mixture components; each row's true one is in `label`.
    #[arg(long, value_name = "K")]
    pub clusters: usize,
    /// Seed of the centres and the points.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Standard deviation of the cluster centres (points have unit variance around them).
    #[arg(long, default_value_t = 4.0)]
    pub spread: f64,
    /// The Parquet file to write: `customer_id`, the features f0.., and the true `label`.
    #[arg(long, value_name = "PATH")]
    pub output: PathBuf,
}

/// A count given on the command line: a whole number of at least 1 (a negative one gets this
/// message rather than clap's advice on values that start with '-').
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|_| format!("{n} is too large")),
        Ok(_) => Err("must be at least 1".into()),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fit(a) => {
            init_threads(a.run.threads)?;
            crate::io::cleanup::install_handler();
            fit::run(&a)
        }
        Command::Predict(a) => {
            init_threads(a.run.threads)?;
            crate::io::cleanup::install_handler();
            predict::run(&a)
        }
        Command::Profile(a) => {
            init_threads(a.run.threads)?;
            profile::run(&a)
        }
        Command::Sweep(a) => {
            init_threads(a.run.threads)?;
            sweep::run(&a)
        }
        Command::Export(a) => export::run(&a),
        Command::Refit(a) => {
            init_threads(a.run.threads)?;
            refit::run(&a)
        }
        Command::Devices(a) => bench::devices(&a),
        Command::Bench(BenchArgs {
            mode: Some(BenchMode::Passes(a)),
            ..
        }) => {
            init_threads(a.threads)?;
            crate::io::cleanup::install_handler();
            passes::run(&a)
        }
        Command::Bench(a) => {
            init_threads(a.run.threads)?;
            bench::run(&a)
        }
        Command::Gen(a) => {
            crate::io::Paths::new()
                .output("--output", Some(&a.output))
                .check()?;
            let spec = crate::synth::GenSpec {
                rows: a.rows,
                features: a.features,
                clusters: a.clusters,
                seed: a.seed,
                spread: a.spread,
            };
            crate::synth::generate(&spec, &a.output)?;
            eprintln!(
                "wrote {} rows x {} features in {} clusters to {}",
                a.rows,
                a.features,
                a.clusters,
                a.output.display()
            );
            Ok(())
        }
    }
}

fn init_threads(threads: Option<usize>) -> Result<()> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
        b = b.num_threads(n);
    }
    b.build_global()
        .map_err(|e| Error::Internal(format!("thread pool: {e}")))
}
