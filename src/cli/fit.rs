//! `lakemeans fit`: translates the flags into a [`FitJob`], runs it, adds the insight files
//! and prints the summary.

use std::time::Instant;

use super::FitArgs;
use super::profile::describe_lines;
use super::progress::Bar;
use crate::error::{Error, Result};
use crate::insight::analysis::{InsightOutputs, check_targets, sidecar, title, write};
use crate::insight::{Clustered, analyse};
use crate::io::{Paths, ReadOptions};
use crate::job::{self, FitJob, InitChoice, Mode};
use crate::report::{FitSummary, Seconds};

pub fn run(a: &FitArgs) -> Result<()> {
    let t0 = Instant::now();
    let km = &a.kmeans;
    let init = km.init();
    let init_file = match &init {
        InitChoice::File(p) => Some(p.as_path()),
        _ => None,
    };
    let sidecar = a.profile.as_deref().map(sidecar).transpose()?;
    Paths::new()
        .inputs("INPUT", &a.inputs)
        .input("--init", init_file)
        .output("--output", a.output.as_deref())
        .output("--centroids", a.centroids.as_deref())
        .output("--model", a.model.as_deref())
        .output("--profile", a.profile.as_deref())
        .output("--profile (its JSON)", sidecar.as_deref())
        .output("--report", a.insight.report.as_deref())
        .check()?;
    check_targets(
        a.profile.as_deref(),
        a.insight.report.as_deref(),
        !a.insight.describe.is_empty(),
        false,
    )?;
    let read = ReadOptions {
        features: a.features.clone(),
        exclude: a.exclude.clone(),
        ids: a.ids.clone(),
        weight: a.weight.clone(),
        drop_invalid: a.drop_invalid,
        carry: a.insight.carry(),
        filter: a.rows.filter.clone(),
        table_version: a.rows.table_version,
    };
    let spec = a.insight.spec(a.profile.is_some(), a.metrics, km.seed);
    let job = FitJob {
        inputs: a.inputs.clone(),
        read: read.clone(),
        scale: km.scale,
        init: init.clone(),
        params: km.params(a.k),
        device: a.run.device,
        adapter: a.run.adapter.clone(),
        prepare: a.memory.prepare(),
        output: a.output.clone(),
        centroids: a.centroids.clone(),
        model: a.model.clone(),
        train_sample: a.train_sample,
        insight: spec.clone(),
    };
    let runs = if matches!(init, InitChoice::File(_)) {
        1
    } else {
        km.n_init
    };
    let bar = Bar::new(km.max_iter, runs);
    let run = job::fit(&job, &bar);
    bar.finish();
    let mut run = run?;
    let asked = spec.any();

    // Insight streams from the files like the fit did, so it runs whatever the table's size.
    let t3 = Instant::now();
    let mut outputs = std::mem::take(&mut run.outputs);
    let p = &run.prepared;
    let insight = analyse(
        &Clustered {
            source: &p.source,
            labels: run.labels(),
            k: a.k,
            rows: Some(p.rows.as_ref()),
            budget: job.prepare.budget,
            resident: p.resident,
            labels_from: None,
        },
        &spec,
    )?;
    write(
        &mut outputs,
        &insight,
        &InsightOutputs {
            profile: a.profile.as_deref(),
            report: a.insight.report.as_deref(),
            title: title(a.k, &p.source.files),
            files: &p.source.files,
            facts: vec![
                ("scaling".into(), format!("{:?}", km.scale).to_lowercase()),
                ("device".into(), run.info.kind.clone()),
                (
                    "inertia (clustered space)".into(),
                    format!("{:.4e}", run.result.inertia),
                ),
            ],
        },
    )?;
    let t_analysis = t3.elapsed().as_secs_f64();
    let t4 = Instant::now();
    outputs.commit()?;
    let t_write = run.seconds_write + t4.elapsed().as_secs_f64();

    let result = &run.result;
    let p = &run.prepared;
    let summary = FitSummary {
        k: a.k,
        rows: p.rows.rows(),
        files_read: p.source.files_read(),
        bytes_read: p.source.bytes_read(),
        features: p.source.features.clone(),
        iterations: result.iterations,
        converged: result.converged,
        inertia: result.inertia,
        device: run.info.kind.clone(),
        adapter: run.info.name.clone(),
        seconds: Seconds {
            read: run.seconds_read,
            init: Some(result.init_seconds),
            fit: run.seconds_fit,
            write: t_write,
            analysis: asked.then_some(t_analysis),
            total: t0.elapsed().as_secs_f64(),
        },
        mode: p.mode,
        passes: run.passes,
        train_rows: run.train_rows,
        init: run.init.to_string(),
        n_init: result.run_inertias.len(),
        best_run: result.best_run,
        run_inertias: result.run_inertias.clone(),
        seed: km.seed,
        scale: format!("{:?}", km.scale).to_lowercase(),
        dropped_rows: p.checked.dropped,
        empty_clusters: result.sizes.iter().filter(|&&s| s == 0).count(),
        relocated_clusters: result.reseeded,
        cluster_sizes: result.sizes.clone(),
        silhouette: insight.quality.as_ref().and_then(|q| q.silhouette),
        silhouette_rows: insight.quality.as_ref().map(|q| q.silhouette_rows),
        calinski_harabasz: insight.quality.as_ref().and_then(|q| q.calinski_harabasz),
        davies_bouldin: insight.quality.as_ref().and_then(|q| q.davies_bouldin),
        ari: insight.comparison.as_ref().map(|c| c.ari),
        nmi: insight.comparison.as_ref().map(|c| c.nmi),
    };
    if a.run.json {
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        let mut text = summary.human();
        if p.mode == Mode::Streaming {
            text = format!(
                "streamed: the rows exceed --memory-budget; {} passes over the data\n{text}",
                run.passes
            );
        }
        if let Some(pr) = &insight.profile {
            text += "clusters:\n";
            text += &describe_lines(pr);
        }
        if a.output.is_none() {
            print!("{text}");
        } else {
            eprint!("{text}");
        }
    }
    Ok(())
}
