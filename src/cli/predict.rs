//! `lakemeans predict`.

use std::time::Instant;

use super::PredictArgs;
use crate::backend;
use crate::error::{Error, Result};
use crate::io::results::write_assignments;
use crate::io::{Outputs, ReadOptions, check_target, read_table};
use crate::model::Model;
use crate::report::{PredictSummary, Seconds};

pub fn run(a: &PredictArgs) -> Result<()> {
    let t0 = Instant::now();
    check_target(&a.output)?;
    let model = Model::load(&a.model)?;
    let opts = ReadOptions {
        features: Some(model.features.clone()),
        exclude: Vec::new(),
        ids: a.ids.clone(),
        weight: None,
        drop_invalid: a.drop_invalid,
        carry: Vec::new(),
    };
    let mut table = read_table(&a.inputs, &opts)?;
    model.scaling.transform(&mut table.data);
    let t_read = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut be = backend::create(a.run.device, &table.data, a.run.adapter.as_deref())?;
    let step = be.step(&model.flat_centroids(), model.k, false)?;
    let assignment = be.assignment()?;
    let info = be.info();
    drop(be);
    let t_fit = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let mut out = Outputs::default();
    write_assignments(&mut out, &a.output, &table, &assignment)?;
    out.commit()?;
    let mut sizes = vec![0u64; model.k];
    for &l in &assignment.labels {
        sizes[l as usize] += 1;
    }
    let summary = PredictSummary {
        k: model.k,
        rows: table.data.rows(),
        inertia: step.inertia,
        device: info.kind,
        adapter: info.name,
        dropped_rows: table.dropped,
        cluster_sizes: sizes,
        seconds: Seconds {
            read: t_read,
            fit: t_fit,
            init: None,
            write: t2.elapsed().as_secs_f64(),
            analysis: None,
            total: t0.elapsed().as_secs_f64(),
        },
    };
    if a.run.json {
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        eprintln!(
            "assigned {} rows to {} clusters in {:.2}s",
            summary.rows, summary.k, summary.seconds.total
        );
    }
    Ok(())
}
