//! The heavy steps of k-means, behind one trait.
//!
//! The driver in [`crate::kmeans`] owns the centroids and every decision (init, convergence,
//! empty clusters); a backend owns the rows and does the passes over them. This is the split
//! FAISS makes between its clustering loop and its index.

pub mod cpu;
pub mod gpu;
pub mod seeding;

use crate::data::Rows;
use crate::error::{Error, Result};
pub use seeding::{SEED_BLOCK_ROWS, Seeder};

/// What one assignment pass produced, reduced over all rows in a fixed order.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Weighted per-cluster sums of member rows, `k * dim`, row-major (empty without update).
    pub sums: Vec<f64>,
    /// Total weight per cluster (empty without update).
    pub weights: Vec<f64>,
    /// Member count per cluster (empty without update).
    pub counts: Vec<u64>,
    /// Sum over rows of weight × squared distance to the assigned centroid.
    pub inertia: f64,
    /// Rows whose label differs from the previous pass (every row on the first pass).
    pub changed: u64,
}

/// A row far from its centroid, a candidate to re-seed an empty cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct FarPoint {
    pub row: usize,
    pub label: u32,
    pub distance: f32,
    pub weight: f32,
    pub values: Vec<f32>,
}

/// Final per-row results, in row order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    pub labels: Vec<u32>,
    /// Exact squared Euclidean distance to the assigned centroid (not the expanded score).
    pub distances: Vec<f32>,
}

/// Which hardware did the work, for summaries and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// `cpu` or `gpu`.
    pub kind: String,
    /// Adapter name for a GPU, thread count for the CPU.
    pub name: String,
    /// Graphics API behind a GPU adapter (Vulkan, Metal, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

/// The passes of a fit; [`Seeder`] adds the k-means++ pass, so init runs where Lloyd does.
pub trait Backend: Seeder {
    fn info(&self) -> DeviceInfo;

    /// Assigns every row to its nearest centroid (`centroids` is `k * dim`, row-major; ties go
    /// to the lowest index) and, when `update` is set, accumulates the weighted per-cluster sums.
    fn step(&mut self, centroids: &[f32], k: usize, update: bool) -> Result<Step>;

    /// The `m` rows farthest from their centroid at the last step: farthest first, ties to the
    /// lowest row.
    fn farthest(&mut self, m: usize) -> Result<Vec<FarPoint>>;

    /// Labels and distances (‖x − c‖², not the expanded score) of the last step, handed over (a backend may give up its
    /// copy: call it once, after the last step that matters).
    fn assignment(&mut self) -> Result<Assignment>;
}

/// Where `--device` asks the work to run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A GPU when an adapter exists, otherwise the CPU (said on stderr).
    Auto,
    Cpu,
    Gpu,
}

/// Builds the backend `choice` asks for over `data`; `adapter` picks a GPU by a
/// case-insensitive substring of its name.
///
/// `Gpu` fails with [`Error::NoAdapter`] when there is no usable adapter. `Auto` takes a
/// hardware GPU when there is one (software rasterizers are slower than the CPU backend) and
/// otherwise says so on stderr and runs on the CPU; a GPU failure later in the fit moves the
/// work to the CPU as well (see [`Fallback`]).
pub fn create<'a>(
    choice: DeviceChoice,
    data: &'a dyn Rows,
    adapter: Option<&str>,
) -> Result<Box<dyn Backend + 'a>> {
    match choice {
        DeviceChoice::Cpu => Ok(Box::new(cpu::CpuBackend::new(data))),
        DeviceChoice::Gpu => Ok(Box::new(gpu::GpuBackend::new(data, adapter)?)),
        DeviceChoice::Auto => {
            let mut opts = gpu::GpuOptions::from_env(adapter);
            // Naming an adapter is an explicit request, even for a software one.
            opts.allow_software = adapter.is_some();
            match gpu::GpuBackend::with_options(data, opts) {
                Ok(g) => Ok(Box::new(Fallback::new(data, Box::new(g)))),
                Err(Error::NoAdapter(_)) => {
                    eprintln!("lakemeans: no GPU adapter found, running on the CPU");
                    Ok(Box::new(cpu::CpuBackend::new(data)))
                }
                Err(Error::SoftwareOnly(names)) => {
                    eprintln!(
                        "lakemeans: {}; running on the CPU, which is faster",
                        crate::error::software_only(&names)
                    );
                    Ok(Box::new(cpu::CpuBackend::new(data)))
                }
                Err(e) => {
                    eprintln!("lakemeans: {e}; running on the CPU");
                    Ok(Box::new(cpu::CpuBackend::new(data)))
                }
            }
        }
    }
}

/// Runs on a GPU backend and, when it fails with [`Error::Device`], continues on the CPU.
///
/// The CPU backend first replays the last successful step's centroids so that its labels,
/// and thus the next step's `changed` count, farthest rows and assignment, pick up exactly
/// where the GPU left off. A seeding in progress is replayed the same way (see
/// [`seeding::SeedLog`]).
pub struct Fallback<'a> {
    data: &'a dyn Rows,
    inner: Box<dyn Backend + 'a>,
    on_gpu: bool,
    /// Centroids and k of the last step the GPU completed.
    last: Option<(Vec<f32>, usize)>,
    seed_log: seeding::SeedLog,
}

impl<'a> Fallback<'a> {
    pub fn new(data: &'a dyn Rows, gpu: Box<dyn Backend + 'a>) -> Self {
        Fallback {
            data,
            inner: gpu,
            on_gpu: true,
            last: None,
            seed_log: seeding::SeedLog::default(),
        }
    }

    /// Whether a GPU failure moved the work to the CPU.
    pub fn fell_back(&self) -> bool {
        !self.on_gpu
    }

    /// Swaps in the CPU backend after a GPU failure, replaying the last step.
    fn switch(&mut self, err: &Error) -> Result<()> {
        eprintln!("lakemeans: {err}; continuing on the CPU");
        let mut cpu = cpu::CpuBackend::new(self.data);
        if let Some((c, k)) = self.last.take() {
            cpu.step(&c, k, false)?;
        }
        self.seed_log.replay(&mut cpu, self.data.dim())?;
        self.inner = Box::new(cpu);
        self.on_gpu = false;
        Ok(())
    }

    fn run<T>(&mut self, mut f: impl FnMut(&mut dyn Backend) -> Result<T>) -> Result<T> {
        match f(self.inner.as_mut()) {
            Err(e @ Error::Device(_)) if self.on_gpu => {
                self.switch(&e)?;
                f(self.inner.as_mut())
            }
            r => r,
        }
    }
}

impl Backend for Fallback<'_> {
    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }

    fn step(&mut self, centroids: &[f32], k: usize, update: bool) -> Result<Step> {
        let s = self.run(|b| b.step(centroids, k, update))?;
        if self.on_gpu {
            self.last = Some((centroids.to_vec(), k));
        }
        Ok(s)
    }

    fn farthest(&mut self, m: usize) -> Result<Vec<FarPoint>> {
        self.run(|b| b.farthest(m))
    }

    fn assignment(&mut self) -> Result<Assignment> {
        self.run(|b| b.assignment())
    }
}
