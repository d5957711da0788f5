//! What a run tells its user: the `--json` summary and the human one.

use serde::Serialize;

/// Wall-clock seconds per phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seconds {
    pub read: f64,
    pub fit: f64,
    /// Choosing the starting centroids, a part of `fit` (fit only; 0 for given centroids).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<f64>,
    /// Writing assignments, centroids and model.
    pub write: f64,
    /// Profiles, quality metrics and the report, when asked for (the exact silhouette can
    /// dominate this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<f64>,
    pub total: f64,
}

/// The `fit --json` object.
#[derive(Debug, Clone, Serialize)]
pub struct FitSummary {
    pub k: usize,
    pub rows: usize,
    /// Parquet files opened: those left after `--filter` pruned partitions.
    pub files_read: usize,
    /// Bytes fetched from those files over the whole run: footers and the column chunks of
    /// the projected columns, once per pass that decodes them.
    pub bytes_read: u64,
    pub features: Vec<String>,
    pub iterations: usize,
    pub converged: bool,
    /// Weighted, in clustered space.
    pub inertia: f64,
    /// `cpu` or `gpu`.
    pub device: String,
    /// Adapter name for a GPU, thread count for the CPU.
    pub adapter: String,
    pub seconds: Seconds,
    /// `in-memory`, or `streaming` when the rows exceeded the memory budget.
    pub mode: crate::job::Mode,
    /// Full passes over the rows (Parquet decodes and scans of the prepared rows).
    pub passes: usize,
    /// Rows the centroids were trained on (`--train-sample`; all rows otherwise).
    pub train_rows: usize,
    /// The initialisation that ran: `k-means++`, `k-means||`, `random` or `file`.
    pub init: String,
    pub n_init: usize,
    pub best_run: usize,
    pub run_inertias: Vec<f64>,
    pub seed: u64,
    pub scale: String,
    pub dropped_rows: usize,
    pub empty_clusters: usize,
    /// Times a cluster left empty by an update was moved onto a far row (scikit-learn's
    /// relocation), over the best run; plain Lloyd loops leave such clusters where they were.
    pub relocated_clusters: usize,
    pub cluster_sizes: Vec<u64>,
    /// `--metrics`: mean silhouette on a seeded sample of at most 50,000 rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silhouette: Option<f64>,
    /// `--metrics`: rows in the silhouette sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silhouette_rows: Option<usize>,
    /// `--metrics`: Calinski-Harabasz index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calinski_harabasz: Option<f64>,
    /// `--metrics`: Davies-Bouldin index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub davies_bouldin: Option<f64>,
    /// `--compare-with`: Adjusted Rand Index against the segment column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ari: Option<f64>,
    /// `--compare-with`: normalised mutual information against the segment column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nmi: Option<f64>,
}

/// The `predict --json` object.
#[derive(Debug, Clone, Serialize)]
pub struct PredictSummary {
    pub k: usize,
    pub rows: usize,
    /// Parquet files opened, as for fit.
    pub files_read: usize,
    /// Bytes fetched from them, as for fit.
    pub bytes_read: u64,
    pub inertia: f64,
    pub device: String,
    pub adapter: String,
    pub dropped_rows: usize,
    pub cluster_sizes: Vec<u64>,
    /// `streaming` for the one-pass CPU predict, otherwise as for fit.
    pub mode: crate::job::Mode,
    pub passes: usize,
    pub seconds: Seconds,
}

impl FitSummary {
    /// A few lines for a person at a terminal.
    pub fn human(&self) -> String {
        let mut s = format!(
            "k-means: k = {}, {} rows x {} features, {} on {} ({})\n",
            self.k,
            self.rows,
            self.features.len(),
            if self.converged {
                format!("converged in {} iterations", self.iterations)
            } else {
                format!("stopped after {} iterations", self.iterations)
            },
            self.device,
            self.adapter
        );
        s += &format!("inertia {:.6e} (clustered space)\n", self.inertia);
        if self.dropped_rows > 0 {
            s += &format!("dropped {} invalid rows\n", self.dropped_rows);
        }
        if self.empty_clusters > 0 {
            s += &format!(
                "warning: {} clusters ended empty (fewer distinct rows than k?)\n",
                self.empty_clusters
            );
        }
        s += "cluster sizes:";
        let total: u64 = self.cluster_sizes.iter().sum();
        for (c, &n) in self.cluster_sizes.iter().enumerate() {
            if c % 6 == 0 {
                s += "\n ";
            }
            s += &format!(
                " {c:>3}: {n:>9} ({:>4.1}%)",
                100.0 * n as f64 / total.max(1) as f64
            );
        }
        let f3 = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.4}"));
        if self.silhouette_rows.is_some() {
            s += &format!(
                "\nsilhouette {} (on {} rows), Calinski-Harabasz {}, Davies-Bouldin {}",
                f3(self.silhouette),
                self.silhouette_rows.unwrap_or(0),
                self.calinski_harabasz
                    .map_or("n/a".to_string(), |x| format!("{x:.1}")),
                f3(self.davies_bouldin)
            );
        }
        if let (Some(ari), Some(nmi)) = (self.ari, self.nmi) {
            s += &format!("\nagainst the segments: ARI {ari:.4}, NMI {nmi:.4}");
        }
        let init = self
            .seconds
            .init
            .map_or(String::new(), |i| format!(" of which init {i:.2}s"));
        s += &format!(
            "\ntime: {:.2}s (read {:.2}s, fit {:.2}s{init}, write {:.2}s{})\n",
            self.seconds.total,
            self.seconds.read,
            self.seconds.fit,
            self.seconds.write,
            self.seconds
                .analysis
                .map_or(String::new(), |t| format!(", analysis {t:.2}s"))
        );
        s
    }
}
