//! Making clusters understandable: per-cluster profiles, quality metrics, comparison with
//! existing segments, the choice of k, and a 2-D projection for plots.
//!
//! Everything here works on what a fit leaves behind (the rows in clustered space, the scaler
//! back to input units, one label per row) and on extra columns carried alongside the features
//! by the reader. Results are deterministic: samples come from the seeded [`crate::rng::Rng`]
//! and every reduction runs in a fixed order.

pub mod analysis;
pub mod builder;
pub mod compare;
pub mod metrics;
pub mod pca;
pub mod profile;
pub mod sketch;
pub mod summary;
pub mod sweep;

pub use analysis::{Clustered, Insight, InsightOutputs, InsightSpec, analyse};

use std::collections::HashMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Rows in the silhouette sample at most.
pub const SILHOUETTE_SAMPLE: usize = 50_000;
/// Rows in the sample drawn for the 2-D projection at most.
pub const PROJECTION_SAMPLE: usize = 2_000;
/// Sub-stream of the seed that draws the silhouette sample.
const SILHOUETTE_STREAM: u64 = 0x5111;
/// Sub-stream of the seed that draws the projection sample.
const PROJECTION_STREAM: u64 = 0x9ca;

/// `m` distinct row indices out of `n`, sorted, drawn uniformly with a seeded partial
/// Fisher–Yates shuffle; all rows when `n <= m`.
pub fn sample_indices(n: usize, m: usize, seed: u64, stream: u64) -> Vec<usize> {
    if n <= m {
        return (0..n).collect();
    }
    let mut rng = Rng::derive(seed, stream);
    // Sparse Fisher–Yates: only the positions that moved are stored.
    let mut moved: HashMap<usize, usize> = HashMap::with_capacity(2 * m);
    let mut out = Vec::with_capacity(m);
    for i in 0..m {
        let j = i + rng.below((n - i) as u64) as usize;
        let vj = *moved.get(&j).unwrap_or(&j);
        let vi = *moved.get(&i).unwrap_or(&i);
        moved.insert(j, vi);
        out.push(vj);
    }
    out.sort_unstable();
    out
}

/// The silhouette sample of a table of `n` rows for `seed`.
pub fn silhouette_rows(n: usize, seed: u64) -> Vec<usize> {
    sample_indices(n, SILHOUETTE_SAMPLE, seed, SILHOUETTE_STREAM)
}

/// The projection sample of a table of `n` rows for `seed`.
pub fn projection_rows(n: usize, seed: u64) -> Vec<usize> {
    sample_indices(n, PROJECTION_SAMPLE, seed, PROJECTION_STREAM)
}

/// Label of the category that stands for a null value.
pub const NULL_LEVEL: &str = "(null)";
/// Label of the category that gathers the rarest ones when there are too many.
pub const OTHER_LEVEL: &str = "(other)";

/// The values of an extra (not clustered) column, one per kept row.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtraValues {
    /// Numbers; NaN marks a null.
    Numeric(Vec<f64>),
    /// Category codes into `levels`.
    Categorical {
        codes: Vec<u32>,
        levels: Vec<String>,
    },
}

/// An extra column: described in profiles, or the segment label of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Extra {
    pub name: String,
    pub values: ExtraValues,
}

impl Extra {
    pub fn is_categorical(&self) -> bool {
        matches!(self.values, ExtraValues::Categorical { .. })
    }
}

/// How an extra column is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKind {
    /// Numbers stay numbers; strings, dictionaries, booleans and the rest become categories.
    Describe,
    /// A segment label: strings, dictionaries, booleans and integers become categories.
    Segment,
}

/// Whether extra column `name` of type `dtype` is read as numbers (`true`) or as categories,
/// or why it cannot serve as asked. `file` names the input in error messages. Decided from the
/// schema alone, so a bad column fails before any row is read.
pub fn extra_is_numeric(
    dtype: &DataType,
    name: &str,
    kind: ExtraKind,
    file: &Path,
) -> Result<bool> {
    if kind == ExtraKind::Segment
        && (dtype.is_floating()
            || matches!(dtype, DataType::Decimal128(..) | DataType::Decimal256(..)))
    {
        return Err(Error::input(
            file,
            format!(
                "--compare-with column '{name}' is {dtype}; a segment label must be a string, \
                 dictionary, boolean or integer column"
            ),
        ));
    }
    Ok(dtype.is_numeric() && kind == ExtraKind::Describe)
}

/// The values of a numeric extra column as f64; NaN marks a null.
pub fn numeric_values(col: &dyn Array, name: &str, file: &Path) -> Result<Vec<f64>> {
    let cast = arrow_cast::cast(col, &DataType::Float64).map_err(|e| {
        Error::input(
            file,
            format!("column '{name}' cannot be read as numbers ({e})"),
        )
    })?;
    let a = cast.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) })
        .collect())
}

/// Category codes handed out in order of first appearance, so that a column can be coded
/// batch by batch as it streams past; [`LevelIndex::natural_order`] then gives the order
/// people expect, whatever order the rows came in.
#[derive(Debug, Clone, Default)]
pub struct LevelIndex {
    index: HashMap<String, u32>,
    levels: Vec<String>,
    null_code: Option<u32>,
}

impl LevelIndex {
    /// Codes of every value of `col` (cast to text), new levels added as they appear.
    pub fn codes(&mut self, col: &dyn Array, name: &str, file: &Path) -> Result<Vec<u32>> {
        let cast = arrow_cast::cast(col, &DataType::Utf8).map_err(|e| {
            Error::input(
                file,
                format!(
                    "column '{name}' ({}) cannot be read as categories ({e})",
                    col.data_type()
                ),
            )
        })?;
        let a = cast.as_string::<i32>();
        let mut out = Vec::with_capacity(a.len());
        for i in 0..a.len() {
            let code = if a.is_null(i) {
                match self.null_code {
                    Some(c) => c,
                    None => {
                        self.levels.push(NULL_LEVEL.to_string());
                        let c = (self.levels.len() - 1) as u32;
                        self.null_code = Some(c);
                        c
                    }
                }
            } else {
                let s = a.value(i);
                match self.index.get(s) {
                    Some(&c) => c,
                    None => {
                        let c = self.levels.len() as u32;
                        self.levels.push(s.to_string());
                        self.index.insert(s.to_string(), c);
                        c
                    }
                }
            };
            out.push(code);
        }
        Ok(out)
    }

    /// Levels seen so far.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The levels in natural order (numerically when every level is an integer, otherwise by
    /// text; null last), and for each code its position in that order.
    pub fn natural_order(&self) -> (Vec<String>, Vec<u32>) {
        let mut order: Vec<u32> = (0..self.levels.len() as u32).collect();
        let all_int = self.index.keys().all(|s| s.parse::<i64>().is_ok());
        order.sort_by(|&a, &b| {
            let (sa, sb) = (&self.levels[a as usize], &self.levels[b as usize]);
            let na = Some(a) == self.null_code;
            let nb = Some(b) == self.null_code;
            na.cmp(&nb).then_with(|| {
                if all_int {
                    let ia = sa.parse::<i64>().unwrap_or(i64::MAX);
                    let ib = sb.parse::<i64>().unwrap_or(i64::MAX);
                    ia.cmp(&ib)
                } else {
                    sa.cmp(sb)
                }
            })
        });
        let mut remap = vec![0u32; self.levels.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        let levels = order
            .iter()
            .map(|&o| self.levels[o as usize].clone())
            .collect();
        (levels, remap)
    }
}

/// Decodes column `name` of the carried batches (as the reader keeps them, aligned with the
/// kept rows). `file` names the input in error messages.
pub fn decode_extra(
    batches: &[RecordBatch],
    name: &str,
    kind: ExtraKind,
    file: &Path,
) -> Result<Extra> {
    let cols: Vec<&dyn Array> = batches
        .iter()
        .map(|b| {
            b.column_by_name(name)
                .map(|c| c.as_ref())
                .ok_or_else(|| Error::input(file, format!("no column '{name}'")))
        })
        .collect::<Result<_>>()?;
    let dtype = match cols.first() {
        Some(c) => c.data_type().clone(),
        None => DataType::Utf8,
    };
    if extra_is_numeric(&dtype, name, kind, file)? {
        let mut v = Vec::new();
        for c in cols {
            v.extend(numeric_values(c, name, file)?);
        }
        return Ok(Extra {
            name: name.to_string(),
            values: ExtraValues::Numeric(v),
        });
    }
    let mut index = LevelIndex::default();
    let mut codes = Vec::new();
    for c in cols {
        codes.extend(index.codes(c, name, file)?);
    }
    let (levels, remap) = index.natural_order();
    for c in &mut codes {
        *c = remap[*c as usize];
    }
    Ok(Extra {
        name: name.to_string(),
        values: ExtraValues::Categorical { codes, levels },
    })
}

/// Keeps the `max - 1` heaviest categories (by total weight) and folds the rest into
/// [`OTHER_LEVEL`]; unchanged when there are at most `max`.
pub fn cap_levels(
    codes: &[u32],
    levels: &[String],
    weights: Option<&[f32]>,
    max: usize,
) -> (Vec<u32>, Vec<String>) {
    let mut mass = vec![0.0f64; levels.len()];
    for (i, &c) in codes.iter().enumerate() {
        mass[c as usize] += weights.map_or(1.0, |w| w[i] as f64);
    }
    let (remap, new_levels) = fold_levels(&mass, levels, max);
    (
        codes.iter().map(|&c| remap[c as usize]).collect(),
        new_levels,
    )
}

/// The plan behind [`cap_levels`], from each level's total weight `mass`: the new code of
/// every level and the new levels. Tallies made level by level (as a streamed profile makes
/// them) fold with the same plan as codes held row by row.
pub fn fold_levels(mass: &[f64], levels: &[String], max: usize) -> (Vec<u32>, Vec<String>) {
    if levels.len() <= max || max < 2 {
        return ((0..levels.len() as u32).collect(), levels.to_vec());
    }
    let mut by_mass: Vec<usize> = (0..levels.len()).collect();
    by_mass.sort_by(|&a, &b| mass[b].total_cmp(&mass[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = by_mass[..max - 1].to_vec();
    kept.sort_unstable();
    let other = kept.len() as u32;
    let mut remap = vec![other; levels.len()];
    for (new, &old) in kept.iter().enumerate() {
        remap[old] = new as u32;
    }
    let mut new_levels: Vec<String> = kept.iter().map(|&o| levels[o].clone()).collect();
    new_levels.push(OTHER_LEVEL.to_string());
    (remap, new_levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_distinct_sorted_and_seeded() {
        let a = sample_indices(1000, 100, 7, 1);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|&i| i < 1000));
        assert_eq!(a, sample_indices(1000, 100, 7, 1));
        assert_ne!(a, sample_indices(1000, 100, 8, 1));
        assert_eq!(sample_indices(50, 100, 7, 1), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn cap_folds_the_lightest_levels() {
        let levels: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let codes = vec![0, 1, 1, 2, 2, 2, 3];
        let (c, l) = cap_levels(&codes, &levels, None, 3);
        assert_eq!(l, vec!["b", "c", OTHER_LEVEL]);
        assert_eq!(c, vec![2, 0, 0, 1, 1, 1, 2]);
    }
}
