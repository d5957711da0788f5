//! Cluster profiles: what each cluster looks like in the units people know.
//!
//! For every cluster: its size and share of the population; the weighted mean and median of
//! every feature in input units; each feature's distance from the population in standard
//! deviations (z = (cluster mean − population mean) / population SD) and as a ratio of means
//! (lift); the features that set the cluster apart most, each high or low; and a one-line
//! description built from them. Extra columns can be described too: numeric ones like the
//! features, categorical ones as per-cluster category shares.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;
use serde::Serialize;

use super::compare::Comparison;
use super::metrics::Quality;
use super::{Extra, ExtraValues, cap_levels};
use crate::data::Dataset;
use crate::error::{Error, Result};

/// Distinguishing features listed per cluster, at least (when there are that many features).
pub const MIN_DISTINGUISHING: usize = 3;
/// ... and at most; the ones past the minimum need |z| of at least [`STRONG_Z`].
pub const MAX_DISTINGUISHING: usize = 5;
pub const STRONG_Z: f64 = 0.5;
/// Below this |z| a feature is "about average" and stays out of the description.
pub const NOTABLE_Z: f64 = 0.2;
/// Categories shown per described column at most; the rest are folded into "(other)".
pub const MAX_LEVELS: usize = 25;

/// Weighted mean and median of one column within one cluster, against the population.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumericStat {
    pub name: String,
    /// Rows with a value (nulls are left out).
    pub rows: u64,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    /// (cluster mean − population mean) / population standard deviation.
    pub z: Option<f64>,
    /// Cluster mean / population mean.
    pub lift: Option<f64>,
}

/// The population's statistics of one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PopulationStat {
    pub name: String,
    pub rows: u64,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    /// Weighted population standard deviation (divisor: total weight).
    pub sd: Option<f64>,
}

/// A category's weighted share within a cluster, against the population.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryShare {
    pub category: String,
    pub rows: u64,
    pub share: f64,
    pub population_share: f64,
    /// share / population_share.
    pub lift: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoryProfile {
    pub column: String,
    pub shares: Vec<CategoryShare>,
}

/// One of the features that set a cluster apart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distinguishing {
    pub feature: String,
    /// `high` or `low`.
    pub direction: &'static str,
    pub z: f64,
    pub lift: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterProfile {
    pub cluster: usize,
    pub size: u64,
    pub weight: f64,
    /// Fraction of the total weight (of the rows when unweighted).
    pub share: f64,
    pub description: String,
    pub distinguishing: Vec<Distinguishing>,
    pub features: Vec<NumericStat>,
    pub described: Vec<NumericStat>,
    pub categories: Vec<CategoryProfile>,
}

/// Profiles of every cluster, plus what the run compared and measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub k: usize,
    pub rows: usize,
    pub total_weight: f64,
    pub weighted: bool,
    pub features: Vec<String>,
    pub population: Vec<PopulationStat>,
    pub described_population: Vec<PopulationStat>,
    pub clusters: Vec<ClusterProfile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Quality>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<Comparison>,
}

/// What a profile is computed from.
pub struct ProfileInput<'a> {
    /// Rows in input units (before any scaling).
    pub data: &'a Dataset,
    pub features: &'a [String],
    /// One cluster per row, below `k`.
    pub labels: &'a [u32],
    pub k: usize,
    /// Extra columns to describe, aligned with the rows.
    pub describe: &'a [Extra],
}

/// A categorical column tallied: name, levels, per-cluster (weight, rows) per level, and the
/// population's weight per level.
type Categorical = (String, Vec<String>, Vec<Vec<(f64, u64)>>, Vec<f64>);

/// Statistics of one numeric column: per cluster, and for the population.
struct ColumnStats {
    clusters: Vec<(u64, Option<f64>, Option<f64>)>,
    pop: PopulationStat,
}

/// The weighted median of `(value, weight)` pairs sorted by value: the first value where the
/// running weight reaches half the total, averaged with the next when it lands exactly on
/// half (so unit weights give the usual median).
pub fn weighted_median(sorted: &[(f64, f64)]) -> Option<f64> {
    let total: f64 = sorted.iter().map(|p| p.1).sum();
    if sorted.is_empty() || total <= 0.0 {
        return None;
    }
    let half = total / 2.0;
    let mut run = 0.0;
    for (i, &(v, w)) in sorted.iter().enumerate() {
        run += w;
        if run >= half && w > 0.0 {
            if run == half
                && let Some(next) = sorted[i + 1..].iter().find(|p| p.1 > 0.0)
            {
                return Some((v + next.0) / 2.0);
            }
            return Some(v);
        }
    }
    sorted.last().map(|p| p.0)
}

fn column_stats(
    name: &str,
    values: &[f64],
    labels: &[u32],
    k: usize,
    weights: Option<&[f32]>,
) -> ColumnStats {
    let w = |i: usize| weights.map_or(1.0, |w| w[i] as f64);
    let mut per: Vec<Vec<(f64, f64)>> = vec![Vec::new(); k];
    let mut all: Vec<(f64, f64)> = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        per[labels[i] as usize].push((v, w(i)));
        all.push((v, w(i)));
    }
    let mean = |xs: &[(f64, f64)]| {
        let tw: f64 = xs.iter().map(|p| p.1).sum();
        (tw > 0.0).then(|| xs.iter().map(|p| p.0 * p.1).sum::<f64>() / tw)
    };
    let pop_mean = mean(&all);
    let pop_sd = pop_mean.map(|m| {
        let tw: f64 = all.iter().map(|p| p.1).sum();
        (all.iter().map(|p| p.1 * (p.0 - m) * (p.0 - m)).sum::<f64>() / tw).sqrt()
    });
    let clusters = per
        .iter_mut()
        .map(|xs| {
            let m = mean(xs);
            xs.sort_by(|a, b| a.0.total_cmp(&b.0));
            (xs.len() as u64, m, weighted_median(xs))
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    ColumnStats {
        clusters,
        pop: PopulationStat {
            name: name.to_string(),
            rows: all.len() as u64,
            mean: pop_mean,
            median: weighted_median(&all),
            sd: pop_sd,
        },
    }
}

fn numeric_stat(
    name: &str,
    c: &(u64, Option<f64>, Option<f64>),
    pop: &PopulationStat,
) -> NumericStat {
    let z = match (c.1, pop.mean, pop.sd) {
        (Some(m), Some(pm), Some(sd)) if sd > 0.0 => Some((m - pm) / sd),
        (Some(_), Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let lift = match (c.1, pop.mean) {
        (Some(m), Some(pm)) if pm != 0.0 => Some(m / pm),
        _ => None,
    };
    NumericStat {
        name: name.to_string(),
        rows: c.0,
        mean: c.1,
        median: c.2,
        z,
        lift,
    }
}

/// The 3–5 features with the largest |z|, and the description made from them.
pub fn distinguishing(features: &[NumericStat]) -> (Vec<Distinguishing>, String) {
    let mut order: Vec<&NumericStat> = features.iter().filter(|f| f.z.is_some()).collect();
    order.sort_by(|a, b| {
        let (za, zb) = (a.z.unwrap_or(0.0).abs(), b.z.unwrap_or(0.0).abs());
        zb.total_cmp(&za)
    });
    let picked: Vec<Distinguishing> = order
        .iter()
        .enumerate()
        .take_while(|(i, f)| *i < MIN_DISTINGUISHING || f.z.unwrap_or(0.0).abs() >= STRONG_Z)
        .take(MAX_DISTINGUISHING)
        .map(|(_, f)| {
            let z = f.z.unwrap_or(0.0);
            Distinguishing {
                feature: f.name.clone(),
                direction: if z >= 0.0 { "high" } else { "low" },
                z,
                lift: f.lift,
            }
        })
        .collect();
    let notable: Vec<String> = picked
        .iter()
        .filter(|d| d.z.abs() >= NOTABLE_Z)
        .map(|d| format!("{} {}", d.direction, d.feature))
        .collect();
    let description = if notable.is_empty() {
        "close to the population average on every feature".to_string()
    } else {
        notable.join(", ")
    };
    (picked, description)
}

/// Computes the profile of every cluster.
pub fn profile(input: &ProfileInput) -> Profile {
    let data = input.data;
    let (d, k, n) = (data.dim(), input.k, data.rows());
    let weights: Option<Vec<f32>> = data.is_weighted().then(|| {
        data.batches()
            .iter()
            .flat_map(|b| b.weights.iter().flatten().copied())
            .collect()
    });
    let wts = weights.as_deref();
    let w = |i: usize| wts.map_or(1.0, |w| w[i] as f64);
    let mut sizes = vec![0u64; k];
    let mut cw = vec![0.0f64; k];
    for (i, &l) in input.labels.iter().enumerate() {
        sizes[l as usize] += 1;
        cw[l as usize] += w(i);
    }
    let total_weight: f64 = cw.iter().sum();

    let feature_stats: Vec<ColumnStats> = (0..d)
        .into_par_iter()
        .map(|j| {
            let vals: Vec<f64> = data
                .batches()
                .iter()
                .flat_map(|b| b.values.chunks_exact(d).map(move |r| r[j] as f64))
                .collect();
            column_stats(&input.features[j], &vals, input.labels, k, wts)
        })
        .collect();
    let numeric_extras: Vec<(&str, ColumnStats)> = input
        .describe
        .iter()
        .filter_map(|e| match &e.values {
            ExtraValues::Numeric(v) => Some((
                e.name.as_str(),
                column_stats(&e.name, v, input.labels, k, wts),
            )),
            ExtraValues::Categorical { .. } => None,
        })
        .collect();
    // Per categorical column: levels, per-cluster weights and rows, population weights.
    let categorical: Vec<Categorical> = input
        .describe
        .iter()
        .filter_map(|e| match &e.values {
            ExtraValues::Categorical { codes, levels } => {
                let (codes, levels) = cap_levels(codes, levels, wts, MAX_LEVELS);
                let mut cells = vec![vec![(0.0f64, 0u64); levels.len()]; k];
                let mut pop = vec![0.0f64; levels.len()];
                for (i, &c) in codes.iter().enumerate() {
                    let cell = &mut cells[input.labels[i] as usize][c as usize];
                    cell.0 += w(i);
                    cell.1 += 1;
                    pop[c as usize] += w(i);
                }
                Some((e.name.clone(), levels, cells, pop))
            }
            ExtraValues::Numeric(_) => None,
        })
        .collect();

    let clusters = (0..k)
        .map(|c| {
            let features: Vec<NumericStat> = feature_stats
                .iter()
                .map(|s| numeric_stat(&s.pop.name, &s.clusters[c], &s.pop))
                .collect();
            let described = numeric_extras
                .iter()
                .map(|(name, s)| numeric_stat(name, &s.clusters[c], &s.pop))
                .collect();
            let categories = categorical
                .iter()
                .map(|(name, levels, cells, pop)| {
                    let pop_total: f64 = pop.iter().sum();
                    let shares = levels
                        .iter()
                        .enumerate()
                        .map(|(l, level)| {
                            let share = if cw[c] > 0.0 {
                                cells[c][l].0 / cw[c]
                            } else {
                                0.0
                            };
                            let population_share = if pop_total > 0.0 {
                                pop[l] / pop_total
                            } else {
                                0.0
                            };
                            CategoryShare {
                                category: level.clone(),
                                rows: cells[c][l].1,
                                share,
                                population_share,
                                lift: (population_share > 0.0).then(|| share / population_share),
                            }
                        })
                        .collect();
                    CategoryProfile {
                        column: name.clone(),
                        shares,
                    }
                })
                .collect();
            let (dist, description) = if sizes[c] == 0 {
                (Vec::new(), "empty cluster".to_string())
            } else {
                distinguishing(&features)
            };
            ClusterProfile {
                cluster: c,
                size: sizes[c],
                weight: cw[c],
                share: if total_weight > 0.0 {
                    cw[c] / total_weight
                } else {
                    0.0
                },
                description,
                distinguishing: dist,
                features,
                described,
                categories,
            }
        })
        .collect();
    Profile {
        k,
        rows: n,
        total_weight,
        weighted: wts.is_some(),
        features: input.features.to_vec(),
        population: feature_stats.into_iter().map(|s| s.pop).collect(),
        described_population: numeric_extras.into_iter().map(|(_, s)| s.pop).collect(),
        clusters,
        metrics: None,
        compare: None,
    }
}

impl Profile {
    /// The profile as one tidy table for BI tools: a row per cluster and variable (and per
    /// category for categorical columns).
    ///
    /// Columns: `cluster`, `cluster_size`, `cluster_share`, `description`, `variable`, `kind`
    /// (`feature`, `described` or `category`; `segment` for the `--compare-with` column),
    /// `category`, `rows`, `mean`, `median`, `population_mean`, `population_median`, `z`,
    /// `lift`, `share`, `population_share`, `rank` (1 for the most distinguishing feature, null
    /// for the rest) and `direction` (`high`/`low` for the ranked features).
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        let mut t = Tidy::default();
        for c in &self.clusters {
            let base = (
                c.cluster as i32,
                c.size as i64,
                c.share,
                c.description.as_str(),
            );
            for (f, pop) in c.features.iter().zip(&self.population) {
                let rank = c.distinguishing.iter().position(|x| x.feature == f.name);
                t.numeric(
                    base,
                    "feature",
                    f,
                    pop,
                    rank.map(|r| (r as i32 + 1, c.distinguishing[r].direction)),
                );
            }
            for (f, pop) in c.described.iter().zip(&self.described_population) {
                t.numeric(base, "described", f, pop, None);
            }
            for cat in &c.categories {
                for s in &cat.shares {
                    t.category(
                        base,
                        "category",
                        &cat.column,
                        &s.category,
                        s.rows,
                        s.share,
                        s.population_share,
                        s.lift,
                    );
                }
            }
            if let Some(cmp) = &self.compare {
                let total: u64 = cmp.crosstab.iter().flatten().sum();
                let cluster_rows: u64 = cmp.crosstab[c.cluster].iter().sum();
                for (s, seg) in cmp.segments.iter().enumerate() {
                    let rows = cmp.crosstab[c.cluster][s];
                    let seg_rows: u64 = cmp.crosstab.iter().map(|r| r[s]).sum();
                    let share = if cluster_rows > 0 {
                        rows as f64 / cluster_rows as f64
                    } else {
                        0.0
                    };
                    let pop = if total > 0 {
                        seg_rows as f64 / total as f64
                    } else {
                        0.0
                    };
                    t.category(
                        base,
                        "segment",
                        &cmp.column,
                        seg,
                        rows,
                        share,
                        pop,
                        (pop > 0.0).then(|| share / pop),
                    );
                }
            }
        }
        t.finish()
    }
}

type Base<'a> = (i32, i64, f64, &'a str);

/// Column builders of the tidy profile table.
#[derive(Default)]
struct Tidy {
    cluster: Vec<i32>,
    size: Vec<i64>,
    cshare: Vec<f64>,
    description: Vec<String>,
    variable: Vec<String>,
    kind: Vec<&'static str>,
    category: Vec<Option<String>>,
    rows: Vec<i64>,
    mean: Vec<Option<f64>>,
    median: Vec<Option<f64>>,
    pop_mean: Vec<Option<f64>>,
    pop_median: Vec<Option<f64>>,
    z: Vec<Option<f64>>,
    lift: Vec<Option<f64>>,
    share: Vec<Option<f64>>,
    pop_share: Vec<Option<f64>>,
    rank: Vec<Option<i32>>,
    direction: Vec<Option<&'static str>>,
}

impl Tidy {
    fn base(&mut self, b: Base, kind: &'static str, variable: &str) {
        self.cluster.push(b.0);
        self.size.push(b.1);
        self.cshare.push(b.2);
        self.description.push(b.3.to_string());
        self.variable.push(variable.to_string());
        self.kind.push(kind);
    }

    fn numeric(
        &mut self,
        b: Base,
        kind: &'static str,
        f: &NumericStat,
        pop: &PopulationStat,
        rank: Option<(i32, &'static str)>,
    ) {
        self.base(b, kind, &f.name);
        self.category.push(None);
        self.rows.push(f.rows as i64);
        self.mean.push(f.mean);
        self.median.push(f.median);
        self.pop_mean.push(pop.mean);
        self.pop_median.push(pop.median);
        self.z.push(f.z);
        self.lift.push(f.lift);
        self.share.push(None);
        self.pop_share.push(None);
        self.rank.push(rank.map(|r| r.0));
        self.direction.push(rank.map(|r| r.1));
    }

    #[allow(clippy::too_many_arguments)]
    fn category(
        &mut self,
        b: Base,
        kind: &'static str,
        column: &str,
        level: &str,
        rows: u64,
        share: f64,
        pop: f64,
        lift: Option<f64>,
    ) {
        self.base(b, kind, column);
        self.category.push(Some(level.to_string()));
        self.rows.push(rows as i64);
        for v in [
            &mut self.mean,
            &mut self.median,
            &mut self.pop_mean,
            &mut self.pop_median,
            &mut self.z,
        ] {
            v.push(None);
        }
        self.lift.push(lift);
        self.share.push(Some(share));
        self.pop_share.push(Some(pop));
        self.rank.push(None);
        self.direction.push(None);
    }

    fn finish(self) -> Result<RecordBatch> {
        let f64s = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("cluster", DataType::Int32, false),
            Field::new("cluster_size", DataType::Int64, false),
            Field::new("cluster_share", DataType::Float64, false),
            Field::new("description", DataType::Utf8, false),
            Field::new("variable", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("category", DataType::Utf8, true),
            Field::new("rows", DataType::Int64, false),
            Field::new("mean", DataType::Float64, true),
            Field::new("median", DataType::Float64, true),
            Field::new("population_mean", DataType::Float64, true),
            Field::new("population_median", DataType::Float64, true),
            Field::new("z", DataType::Float64, true),
            Field::new("lift", DataType::Float64, true),
            Field::new("share", DataType::Float64, true),
            Field::new("population_share", DataType::Float64, true),
            Field::new("rank", DataType::Int32, true),
            Field::new("direction", DataType::Utf8, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(self.cluster)),
            Arc::new(Int64Array::from(self.size)),
            Arc::new(Float64Array::from(self.cshare)),
            Arc::new(StringArray::from(self.description)),
            Arc::new(StringArray::from(self.variable)),
            Arc::new(StringArray::from(self.kind)),
            Arc::new(StringArray::from(self.category)),
            Arc::new(Int64Array::from(self.rows)),
            f64s(self.mean),
            f64s(self.median),
            f64s(self.pop_mean),
            f64s(self.pop_median),
            f64s(self.z),
            f64s(self.lift),
            f64s(self.share),
            f64s(self.pop_share),
            Arc::new(Int32Array::from(self.rank)),
            Arc::new(StringArray::from(self.direction)),
        ];
        RecordBatch::try_new(schema, cols)
            .map_err(|e| Error::Internal(format!("profile table: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_median_matches_the_usual_one_with_unit_weights() {
        let odd: Vec<(f64, f64)> = [1.0, 2.0, 9.0].iter().map(|&v| (v, 1.0)).collect();
        assert_eq!(weighted_median(&odd), Some(2.0));
        let even: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 9.0].iter().map(|&v| (v, 1.0)).collect();
        assert_eq!(weighted_median(&even), Some(3.0));
        assert_eq!(weighted_median(&[(1.0, 1.0), (5.0, 3.0)]), Some(5.0));
        assert_eq!(weighted_median(&[]), None);
    }
}
