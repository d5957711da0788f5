//! `lakemeans bench passes`: times one pass over a table from Parquet, from the spill cache and from
//! memory, in one run (see [`crate::passes`]).

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::io::ReadOptions;
use crate::passes::{PassesJob, time_passes};
use crate::prep::ScaleMethod;

#[derive(Debug, Args)]
#[command(after_help = "\
Every pass assigns each slab of 65,536 rows to the nearest of k centroids with the CPU kernel \
that `predict` uses; only where the rows come from differs: the Parquet files (decode, checks, \
scaling), the spill cache a streamed fit reads, or memory. A full Lloyd step through the CPU \
backend is timed on the spill cache and in memory too. Spill and memory passes alternate; the \
Parquet pass runs at most twice. The table must fit in memory, and its f32 rows on disk in \
--spill-dir. Prints one JSON object.

Example:
  lakemeans bench passes g30m.parquet --exclude label,customer_id --k 64 --init init64.parquet")]
pub struct PassesArgs {
    /// Parquet files or directories.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Number of centroids each row is compared with.
    #[arg(long, short)]
    pub k: usize,
    /// Feature columns [default: every numeric column except --exclude ones]
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub features: Option<Vec<String>>,
    /// Columns left out of the default feature set.
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub exclude: Vec<String>,
    /// A Parquet file of k centroids in input units [default: k rows spread over the table]
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ScaleMethod::Standard)]
    pub scale: ScaleMethod,
    /// Timed spill and in-memory passes of each kind.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeats: usize,
    /// Directory of the spill cache [default: the system's temporary directory]
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Worker threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

pub fn run(a: &PassesArgs) -> Result<()> {
    let t = time_passes(&PassesJob {
        inputs: a.inputs.clone(),
        read: ReadOptions {
            features: a.features.clone(),
            exclude: a.exclude.clone(),
            ..Default::default()
        },
        k: a.k,
        init: a.init.clone(),
        scale: a.scale,
        spill_dir: a.spill_dir.clone(),
        repeats: a.repeats,
    })?;
    println!(
        "{}",
        serde_json::to_string_pretty(&t).map_err(|e| Error::Internal(e.to_string()))?
    );
    Ok(())
}
