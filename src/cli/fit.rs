//! `lakemeans fit`.

use std::path::Path;
use std::time::Instant;

use super::FitArgs;
use super::profile::{
    Analysis, analyse, check_insight_targets, decode_extras, describe_lines, title,
};
use super::progress::Bar;
use crate::backend;
use crate::error::{Error, Result};
use crate::io::results::{write_assignments, write_centroids};
use crate::io::{Outputs, ReadOptions, check_target, read_centroids, read_table};
use crate::kmeans::{self, Init, KMeansParams};
use crate::model::{FORMAT_VERSION, Model};
use crate::prep::Scaler;
use crate::report::{FitSummary, Seconds};

pub fn run(a: &FitArgs) -> Result<()> {
    let t0 = Instant::now();
    for p in [&a.output, &a.centroids, &a.model].into_iter().flatten() {
        check_target(p)?;
    }
    check_insight_targets(a.profile.as_deref(), &a.insight, false)?;
    if a.k == 0 {
        return Err(Error::Usage("--k must be at least 1".into()));
    }
    let opts = ReadOptions {
        features: a.features.clone(),
        exclude: a.exclude.clone(),
        ids: a.ids.clone(),
        weight: a.weight.clone(),
        drop_invalid: a.drop_invalid,
        carry: a.insight.carry(),
    };
    let mut table = read_table(&a.inputs, &opts)?;
    let extras = decode_extras(&table, &a.insight)?;
    // Profiles are in input units: keep the rows as read (only when one is wanted).
    let raw = (a.profile.is_some() || a.insight.report.is_some()).then(|| table.data.clone());
    let scaler = Scaler::fit(a.scale, &table.data);
    scaler.transform(&mut table.data);
    let init = match a.init.as_str() {
        "k-means++" | "kmeans++" => Init::KMeansPlusPlus,
        "random" => Init::Random,
        path => {
            let raw = read_centroids(Path::new(path), &table.features, a.k)?;
            let mut c: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
            for row in c.chunks_exact_mut(table.features.len()) {
                scaler.transform_row(row);
            }
            Init::Centroids(c)
        }
    };
    if matches!(init, Init::Centroids(_)) && a.n_init > 1 {
        eprintln!(
            "lakemeans: --init from a file gives one start; ignoring --n-init {}",
            a.n_init
        );
    }
    let params = KMeansParams {
        k: a.k,
        init,
        n_init: a.n_init,
        max_iter: a.max_iter,
        tol: a.tol,
        seed: a.seed,
    };
    kmeans::validate(&params, &table.data)?;
    let t_read = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut be = backend::create(a.run.device, &table.data, a.run.adapter.as_deref())?;
    let bar = Bar::new(
        a.max_iter,
        if matches!(params.init, Init::Centroids(_)) {
            1
        } else {
            a.n_init
        },
    );
    let result = kmeans::fit(&table.data, be.as_mut(), &params, &bar);
    bar.finish();
    let result = result?;
    let info = be.info();
    drop(be);
    let t_fit = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let centroids_input = scaler.inverse(&result.centroids);
    let d = table.features.len();
    let mut out = Outputs::default();
    if let Some(p) = &a.output {
        write_assignments(&mut out, p, &table, &result.assignment)?;
    }
    if let Some(p) = &a.centroids {
        write_centroids(
            &mut out,
            p,
            &table.features,
            &centroids_input,
            &result.sizes,
            &result.weights,
        )?;
    }
    if let Some(p) = &a.model {
        let model = Model {
            format_version: FORMAT_VERSION,
            features: table.features.clone(),
            scaling: scaler.clone(),
            k: a.k,
            centroids: result
                .centroids
                .chunks_exact(d)
                .map(<[f32]>::to_vec)
                .collect(),
            centroids_input_units: centroids_input
                .chunks_exact(d)
                .map(<[f64]>::to_vec)
                .collect(),
            inertia: result.inertia,
            rows: table.data.rows(),
            iterations: result.iterations,
            seed: a.seed,
        };
        out.bytes(p, model.to_json()?.as_bytes())?;
    }
    let t_written = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let insight = analyse(
        &Analysis {
            table: &table,
            raw: raw.as_ref(),
            labels: &result.assignment.labels,
            k: a.k,
            seed: a.seed,
            metrics: a.metrics,
            extras: &extras,
            insight: &a.insight,
            profile_path: a.profile.as_deref(),
            title: title(a.k, &table.files),
            facts: vec![
                ("scaling".into(), format!("{:?}", a.scale).to_lowercase()),
                ("device".into(), info.kind.clone()),
                (
                    "inertia (clustered space)".into(),
                    format!("{:.4e}", result.inertia),
                ),
            ],
        },
        &mut out,
    )?;
    let t_analysis = t3.elapsed().as_secs_f64();
    let t4 = Instant::now();
    out.commit()?;
    let t_write = t_written + t4.elapsed().as_secs_f64();
    let asked = a.metrics
        || a.profile.is_some()
        || a.insight.report.is_some()
        || !a.insight.carry().is_empty();

    let summary = FitSummary {
        k: a.k,
        rows: table.data.rows(),
        features: table.features.clone(),
        iterations: result.iterations,
        converged: result.converged,
        inertia: result.inertia,
        device: info.kind.clone(),
        adapter: info.name.clone(),
        seconds: Seconds {
            read: t_read,
            fit: t_fit,
            init: Some(result.init_seconds),
            write: t_write,
            analysis: asked.then_some(t_analysis),
            total: t0.elapsed().as_secs_f64(),
        },
        n_init: result.run_inertias.len(),
        best_run: result.best_run,
        run_inertias: result.run_inertias.clone(),
        seed: a.seed,
        scale: format!("{:?}", a.scale).to_lowercase(),
        dropped_rows: table.dropped,
        empty_clusters: result.sizes.iter().filter(|&&s| s == 0).count(),
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
        if let Some(p) = &insight.profile {
            text += "clusters:\n";
            text += &describe_lines(p);
        }
        if a.output.is_none() {
            print!("{text}");
        } else {
            eprint!("{text}");
        }
    }
    Ok(())
}
