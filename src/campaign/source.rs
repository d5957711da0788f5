//! The one place where the campaign steps read a feature table: the features a saved model
//! was fitted on, and the id columns to carry.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::io::{ReadOptions, Table, read_table};
use crate::model::Model;

/// Reads the rows of `inputs` in input units, decoding `model`'s features and `ids`.
///
/// `drop_invalid` skips rows with a null or non-finite feature, as `fit --drop-invalid` did.
pub fn read_model_features(
    inputs: &[PathBuf],
    model: &Model,
    ids: &[String],
    drop_invalid: bool,
) -> Result<Table> {
    let opts = ReadOptions {
        features: Some(model.features.clone()),
        exclude: Vec::new(),
        ids: ids.to_vec(),
        weight: None,
        drop_invalid,
        carry: Vec::new(),
        filter: Vec::new(),
        table_version: None,
    };
    read_table(inputs, &opts).map_err(|e| match e {
        Error::Input(m) => Error::Input(format!(
            "{m}\n(the model was fitted on the features {})",
            model.features.join(", ")
        )),
        other => other,
    })
}
