//! `lakemeans predict`.

use super::PredictArgs;
use crate::error::{Error, Result};
use crate::io::{Paths, ReadOptions};
use crate::job::{self, PredictJob};
use crate::model::Model;

pub fn run(a: &PredictArgs) -> Result<()> {
    Paths::new()
        .inputs("INPUT", &a.inputs)
        .input("--model", Some(&a.model))
        .output("--output", Some(&a.output))
        .check()?;
    let model = Model::load(&a.model)?;
    if a.ids.is_empty() {
        eprintln!(
            "lakemeans: warning: no --id column given; the assignments follow the input row \
             order with no key to join them back on (pass --id COL to carry one)"
        );
    }
    let job = PredictJob {
        inputs: a.inputs.clone(),
        read: ReadOptions {
            features: Some(model.features.clone()),
            ids: a.ids.clone(),
            drop_invalid: a.drop_invalid,
            filter: a.rows.filter.clone(),
            table_version: a.rows.table_version,
            ..Default::default()
        },
        model,
        device: a.run.device,
        adapter: a.run.adapter.clone(),
        prepare: a.memory.prepare(),
        output: a.output.clone(),
    };
    let summary = job::predict(&job)?;
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
