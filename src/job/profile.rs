//! The `profile` job: give every row of a table its cluster (from an assignments file or by a
//! saved model), then describe the clusters, in bounded memory whatever the table's size.

use std::path::PathBuf;
use std::time::Instant;

use super::{Prepare, Prepared, Scaling, prepare, window_bytes};
use crate::backend::{self, DeviceChoice, DeviceInfo};
use crate::error::{Error, Result};
use crate::insight::analysis::{InsightOutputs, assignments_mismatch, check_targets, title, write};
use crate::insight::profile::Profile;
use crate::insight::{Clustered, Insight, InsightSpec, analyse};
use crate::io::results::read_labels;
use crate::io::{Outputs, ReadOptions, Source};
use crate::model::Model;
use crate::prep::ScaleMethod;

/// Where the rows' clusters come from.
#[derive(Debug, Clone)]
pub enum Clusters {
    /// A Parquet file with a `cluster` column, one row per kept input row, in input order.
    Assignments(PathBuf),
    /// A saved model: its features are profiled and every row is assigned by it.
    Model(Box<Model>),
}

/// Everything a profile needs.
#[derive(Debug, Clone)]
pub struct ProfileJob {
    pub inputs: Vec<PathBuf>,
    /// Features (a model's, with [`Clusters::Model`]), weight, `--drop-invalid`; the carried
    /// columns are set from `spec`.
    pub read: ReadOptions,
    pub clusters: Clusters,
    /// With assignments: the scaling of the space where metrics and the map are computed.
    pub scale: ScaleMethod,
    pub device: DeviceChoice,
    pub adapter: Option<String>,
    pub prepare: Prepare,
    /// What to compute; the profile itself always is.
    pub spec: InsightSpec,
    /// The profile as Parquet (with its JSON beside it).
    pub output: Option<PathBuf>,
    pub report: Option<PathBuf>,
}

/// What a profile job did; its files are written.
pub struct ProfileRun {
    pub profile: Profile,
    pub k: usize,
    /// Where the rows were assigned, with a model.
    pub device: Option<DeviceInfo>,
    pub insight_passes: usize,
    pub seconds: f64,
}

/// Runs a profile end to end and commits its files.
pub fn profile(job: &ProfileJob) -> Result<ProfileRun> {
    let t0 = Instant::now();
    let spec = InsightSpec {
        profile: true,
        projection: job.report.is_some(),
        ..job.spec.clone()
    };
    check_targets(
        job.output.as_deref(),
        job.report.as_deref(),
        !spec.describe.is_empty(),
        true,
    )?;
    let read = ReadOptions {
        carry: spec.carry(),
        ids: Vec::new(),
        ..job.read.clone()
    };
    let source = Source::open(&job.inputs, &read)?;
    let model = match &job.clusters {
        Clusters::Model(m) => Some(m.as_ref()),
        Clusters::Assignments(_) => None,
    };
    // The clustered rows are needed to assign them by a model, and for metrics and the map.
    let held = if model.is_some() || spec.needs_rows() {
        let scaling = match model {
            Some(m) => Scaling::Fixed(m.scaling.clone()),
            None => Scaling::Fit(job.scale),
        };
        let how = Prepare {
            extras: false,
            ..job.prepare.clone()
        };
        Held::Prepared(Box::new(prepare(source, scaling, &how)?))
    } else {
        // Only the labels stay; the decoded row groups in flight get what the budget leaves.
        let labels = source.raw_rows() as u64 * 4;
        let window = window_bytes(job.prepare.budget, labels);
        Held::Source(Box::new(source.with_window_bytes(window)))
    };
    let (labels, k, device, labels_from) = match (&job.clusters, &held) {
        (Clusters::Model(m), Held::Prepared(p)) => {
            let mut be = backend::create(job.device, p.rows.as_ref(), job.adapter.as_deref())?;
            be.step(&m.flat_centroids(), m.k, false)?;
            let labels = be.assignment()?.labels;
            (labels, m.k, Some(be.info()), None)
        }
        (Clusters::Model(_), Held::Source(_)) => {
            return Err(Error::Internal("a model's rows were not prepared".into()));
        }
        (Clusters::Assignments(path), _) => {
            let labels = read_labels(path)?;
            let k = labels.iter().max().map_or(1, |&m| m as usize + 1);
            (labels, k, None, Some(path.as_path()))
        }
    };
    // Assignments of another table fail before any pass where the kept rows are known.
    let known = match &held {
        Held::Prepared(p) => Some(p.checked.kept),
        Held::Source(s) => s.exact_rows().then(|| s.raw_rows()),
    };
    if let (Some(rows), Some(path)) = (known, labels_from)
        && rows != labels.len()
    {
        return Err(assignments_mismatch(path, labels.len(), &rows.to_string()));
    }
    let (source, rows, resident) = match &held {
        Held::Prepared(p) => (&p.source, Some(p.rows.as_ref()), p.resident),
        Held::Source(s) => (s.as_ref(), None, labels.len() as u64 * 4),
    };
    let ins: Insight = analyse(
        &Clustered {
            source,
            labels: &labels,
            k,
            rows,
            budget: job.prepare.budget,
            resident,
            labels_from,
        },
        &spec,
    )?;
    let mut facts = Vec::new();
    if let Held::Prepared(p) = &held {
        facts.push((
            "scaling".to_string(),
            format!("{:?}", p.scaler.method).to_lowercase(),
        ));
    }
    if let Some(info) = &device {
        facts.push(("assigned on".to_string(), info.kind.clone()));
    }
    let mut out = Outputs::default();
    write(
        &mut out,
        &ins,
        &InsightOutputs {
            profile: job.output.as_deref(),
            report: job.report.as_deref(),
            title: title(k, &source.files),
            files: &source.files,
            facts,
        },
    )?;
    out.commit()?;
    let profile = ins
        .profile
        .ok_or_else(|| Error::Internal("no profile was built".into()))?;
    Ok(ProfileRun {
        profile,
        k,
        device,
        insight_passes: ins.passes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The table, as prepared clustered rows or only opened.
enum Held {
    Prepared(Box<Prepared>),
    Source(Box<Source>),
}
