//! `lakemeans refit`: argument translation only; the work is in [`crate::campaign::refit`].

use std::path::PathBuf;

use clap::Args;

use super::RunArgs;
use super::progress::Bar;
use crate::campaign::refit::{RefitSpec, refit};
use crate::error::{Error, Result};
use crate::io::Paths;

#[derive(Debug, Args)]
#[command(after_help = "\
Lloyd starts from the previous model's centroids, in its scaling unless --rescale. Each new \
cluster then takes the id of the previous cluster it matches best (a minimum-cost assignment on \
centroid distance in the previous model's clustered space), so segment ids stay stable from run \
to run. With a larger --k the extra clusters get fresh ids above the previous maximum; with a \
smaller one the unmatched ids are listed as vanished. The assignments' `cluster` column holds \
these ids, and the new model keeps them for `predict`.

--drift writes JSON with moved_share (customers in both runs whose segment changed, joined by \
--id), migration (previous id x new id counts), segments (id, previous_size, size, stayed, \
centroid_shift per feature in standard deviations, psi), new_ids and vanished_ids. --report \
writes the same as a self-contained HTML page.

Example:
  lakemeans refit customers-2024-06.parquet --model may.json --output june.parquet \\
      --model-out june.json --previous-assignments may.parquet --id customer_id \\
      --drift drift.json --report drift.html")]
pub struct RefitArgs {
    /// Parquet files or directories with the new rows.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// The previous model (`fit --model` or `refit --model-out`); its features must be in INPUT.
    #[arg(long, value_name = "PREVIOUS.json")]
    pub model: PathBuf,
    /// Assignments of the new rows: the --id columns, `cluster` (stable ids) and `distance`.
    #[arg(long, value_name = "PATH")]
    pub output: PathBuf,
    /// The refitted model.
    #[arg(long, value_name = "NEW.json")]
    pub model_out: PathBuf,
    /// Column carried into the assignments (repeatable); all of them together join customers
    /// with --previous-assignments.
    #[arg(long = "id", value_name = "COL")]
    pub ids: Vec<String>,
    /// Assignments of the previous run, with the --id columns, to measure who moved.
    #[arg(long, value_name = "PA.parquet", requires = "ids")]
    pub previous_assignments: Option<PathBuf>,
    /// Drift between the runs as JSON (needs --previous-assignments).
    #[arg(long, value_name = "PATH", requires = "previous_assignments")]
    pub drift: Option<PathBuf>,
    /// Drift between the runs as a self-contained HTML page (needs --previous-assignments).
    #[arg(long, value_name = "PATH", requires = "previous_assignments")]
    pub report: Option<PathBuf>,
    /// Number of clusters [default: the previous model's]
    #[arg(long, short)]
    pub k: Option<usize>,
    /// Refit the scaling on the new rows (same method) instead of keeping the previous one.
    #[arg(long)]
    pub rescale: bool,
    /// Lloyd iterations at most.
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub max_iter: usize,
    /// Stop when the squared centroid shift is below T times the mean feature variance.
    #[arg(long, default_value_t = 1e-4, value_name = "T")]
    pub tol: f64,
    /// Seed of the extra centroids with a larger --k and of empty-cluster re-seeding.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Skip rows with a null, NaN or infinite feature (and report how many).
    #[arg(long)]
    pub drop_invalid: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(a: &RefitArgs) -> Result<()> {
    Paths::new()
        .inputs("INPUT", &a.inputs)
        .input("--model", Some(&a.model))
        .input("--previous-assignments", a.previous_assignments.as_deref())
        .output("--output", Some(&a.output))
        .output("--model-out", Some(&a.model_out))
        .output("--drift", a.drift.as_deref())
        .output("--report", a.report.as_deref())
        .check()?;
    let spec = RefitSpec {
        inputs: a.inputs.clone(),
        model: a.model.clone(),
        output: a.output.clone(),
        model_out: a.model_out.clone(),
        ids: a.ids.clone(),
        previous_assignments: a.previous_assignments.clone(),
        drift: a.drift.clone(),
        report: a.report.clone(),
        k: a.k,
        rescale: a.rescale,
        max_iter: a.max_iter,
        tol: a.tol,
        seed: a.seed,
        drop_invalid: a.drop_invalid,
        device: a.run.device,
        adapter: a.run.adapter.clone(),
    };
    let bar = Bar::new(a.max_iter, 1);
    let result = refit(&spec, &bar);
    bar.finish();
    let (s, _) = result?;
    if a.run.json {
        println!(
            "{}",
            serde_json::to_string(&s).map_err(|e| Error::Internal(e.to_string()))?
        );
        return Ok(());
    }
    eprintln!(
        "refit: k = {} (previously {}), {} rows x {} features, {} iterations on {}{}",
        s.k,
        s.previous_k,
        s.rows,
        s.features.len(),
        s.iterations,
        s.device,
        if s.converged { "" } else { " (not converged)" }
    );
    for l in &s.segments {
        let from = l
            .previous_id
            .map_or("new".to_string(), |p| format!("from {p}"));
        eprintln!("  segment {:>3}: {:>9} rows  {from}", l.id, l.size);
    }
    if !s.vanished_ids.is_empty() {
        eprintln!("vanished ids: {:?}", s.vanished_ids);
    }
    if let Some(m) = s.moved_share {
        eprintln!("moved share: {:.4}", m);
    }
    Ok(())
}
