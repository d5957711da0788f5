//! Cluster profiles: what each cluster looks like in the units people know.
//!
//! For every cluster: its size and share of the population; the weighted mean and median of
//! every feature in input units; each feature's distance from the population in standard
//! deviations (z = (cluster mean − population mean) / population SD) and as a ratio of means
//! (lift); the features that set the cluster apart most, each high or low; and a one-line
//! description built from them. Extra columns can be described too: numeric ones like the
//! features, categorical ones as per-cluster category shares.
//!
//! Counts, weights, means, standard deviations, minima and maxima are exact (see
//! [`super::summary`]). Medians are exact when the rows fit in memory and otherwise come from
//! a streaming sketch whose error bound is reported beside every median ([`super::sketch`]);
//! [`Profile::medians`] says which.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::Serialize;

use super::builder::{Columns, ProfileBuilder};
use super::compare::Comparison;
use super::metrics::Quality;
use super::sketch::{BINS, Estimate};
use super::summary::Summary;
use super::{Extra, ExtraValues};
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

/// Weighted statistics of one column within one cluster, against the population.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumericStat {
    pub name: String,
    /// Rows with a value (nulls are left out).
    pub rows: u64,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    /// Bound on |median − exact median| when the median is approximate ([`Profile::medians`]);
    /// `None` when it is exact.
    pub median_error: Option<f64>,
    /// Weighted standard deviation within the cluster (divisor: the cluster's weight).
    pub sd: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
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
    /// Bound on |median − exact median| when approximate; `None` when exact.
    pub median_error: Option<f64>,
    /// Weighted population standard deviation (divisor: total weight).
    pub sd: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// How the medians of a profile were found: which are approximate, and how far off they can
/// be. Everything else in a profile is exact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MedianMethod {
    /// Every median exact.
    pub exact: bool,
    /// `sorted`: every value of each cluster sorted in memory. `histogram`: the rows did not
    /// fit the memory budget, so a second streamed pass filled fixed-bin histograms over each
    /// cluster's exact range.
    pub method: &'static str,
    /// Bins per histogram (`histogram` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bins: Option<usize>,
    /// The guarantee, in words.
    pub bound: String,
}

impl MedianMethod {
    pub fn exact() -> Self {
        MedianMethod {
            exact: true,
            method: "sorted",
            bins: None,
            bound: "exact".into(),
        }
    }

    pub fn histogram() -> Self {
        MedianMethod {
            exact: false,
            method: "histogram",
            bins: Some(BINS),
            bound: format!(
                "approximate: each median is within its median_error of the exact weighted \
                 median, and median_error is at most (max - min) / {BINS} of that cluster's (or \
                 the population's) values of the column; 0 means exact"
            ),
        }
    }
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
    /// Whether the medians are exact, and their bound when they are not.
    pub medians: MedianMethod,
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

/// The statistics of one numeric column, per cluster and for the population, as a builder
/// finishes them.
pub(crate) struct ColumnStats {
    pub name: String,
    pub clusters: Vec<(Summary, Option<Estimate>)>,
    pub pop: (Summary, Option<Estimate>),
}

/// One categorical column tallied, levels in their final order: per cluster and level the
/// weight and rows, and the population's weight per level.
pub(crate) struct CategoryStats {
    pub name: String,
    pub levels: Vec<String>,
    pub cells: Vec<Vec<(f64, u64)>>,
    pub pop: Vec<f64>,
}

/// Everything a profile is assembled from.
pub(crate) struct Parts {
    pub k: usize,
    pub rows: usize,
    pub weighted: bool,
    pub sizes: Vec<u64>,
    pub cluster_weights: Vec<f64>,
    pub features: Vec<ColumnStats>,
    pub described: Vec<ColumnStats>,
    pub categories: Vec<CategoryStats>,
    pub medians: MedianMethod,
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

fn population_stat(
    name: &str,
    s: &Summary,
    median: Option<Estimate>,
    exact: bool,
) -> PopulationStat {
    PopulationStat {
        name: name.to_string(),
        rows: s.rows,
        mean: s.mean(),
        median: median.map(|e| e.value),
        median_error: median.filter(|_| !exact).map(|e| e.bound),
        sd: s.sd(),
        min: s.min(),
        max: s.max(),
    }
}

fn numeric_stat(
    name: &str,
    c: &(Summary, Option<Estimate>),
    pop: &PopulationStat,
    exact: bool,
) -> NumericStat {
    let mean = c.0.mean();
    let z = match (mean, pop.mean, pop.sd) {
        (Some(m), Some(pm), Some(sd)) if sd > 0.0 => Some((m - pm) / sd),
        (Some(_), Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let lift = match (mean, pop.mean) {
        (Some(m), Some(pm)) if pm != 0.0 => Some(m / pm),
        _ => None,
    };
    NumericStat {
        name: name.to_string(),
        rows: c.0.rows,
        mean,
        median: c.1.map(|e| e.value),
        median_error: c.1.filter(|_| !exact).map(|e| e.bound),
        sd: c.0.sd(),
        min: c.0.min(),
        max: c.0.max(),
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

/// The shares of one categorical column within cluster `c`.
fn category_profile(cat: &CategoryStats, c: usize, cluster_weight: f64) -> CategoryProfile {
    let pop_total: f64 = cat.pop.iter().sum();
    let shares = cat
        .levels
        .iter()
        .enumerate()
        .map(|(l, level)| {
            let share = if cluster_weight > 0.0 {
                cat.cells[c][l].0 / cluster_weight
            } else {
                0.0
            };
            let population_share = if pop_total > 0.0 {
                cat.pop[l] / pop_total
            } else {
                0.0
            };
            CategoryShare {
                category: level.clone(),
                rows: cat.cells[c][l].1,
                share,
                population_share,
                lift: (population_share > 0.0).then(|| share / population_share),
            }
        })
        .collect();
    CategoryProfile {
        column: cat.name.clone(),
        shares,
    }
}

/// Puts the finished statistics together: per cluster, its stats against the population, the
/// features that set it apart and its description.
pub(crate) fn assemble(p: Parts) -> Profile {
    let exact = p.medians.exact;
    let total_weight: f64 = p.cluster_weights.iter().sum();
    let pops = |cols: &[ColumnStats]| -> Vec<PopulationStat> {
        cols.iter()
            .map(|s| population_stat(&s.name, &s.pop.0, s.pop.1, exact))
            .collect()
    };
    let population = pops(&p.features);
    let described_population = pops(&p.described);
    let clusters = (0..p.k)
        .map(|c| {
            let features: Vec<NumericStat> = p
                .features
                .iter()
                .zip(&population)
                .map(|(s, pop)| numeric_stat(&s.name, &s.clusters[c], pop, exact))
                .collect();
            let described = p
                .described
                .iter()
                .zip(&described_population)
                .map(|(s, pop)| numeric_stat(&s.name, &s.clusters[c], pop, exact))
                .collect();
            let categories = p
                .categories
                .iter()
                .map(|cat| category_profile(cat, c, p.cluster_weights[c]))
                .collect();
            let (dist, description) = if p.sizes[c] == 0 {
                (Vec::new(), "empty cluster".to_string())
            } else {
                distinguishing(&features)
            };
            ClusterProfile {
                cluster: c,
                size: p.sizes[c],
                weight: p.cluster_weights[c],
                share: if total_weight > 0.0 {
                    p.cluster_weights[c] / total_weight
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
        k: p.k,
        rows: p.rows,
        total_weight,
        weighted: p.weighted,
        features: p.features.iter().map(|s| s.name.clone()).collect(),
        population,
        described_population,
        clusters,
        medians: p.medians,
        metrics: None,
        compare: None,
    }
}

/// Computes the profile of every cluster of rows held in memory, with exact medians.
pub fn profile(input: &ProfileInput) -> Profile {
    let data = input.data;
    let d = data.dim();
    let mut cols = Columns {
        features: input.features.to_vec(),
        ..Default::default()
    };
    let mut numeric: Vec<&[f64]> = Vec::new();
    let mut codes: Vec<&[u32]> = Vec::new();
    let mut levels = Vec::new();
    for e in input.describe {
        match &e.values {
            ExtraValues::Numeric(v) => {
                cols.numeric.push(e.name.clone());
                numeric.push(v);
            }
            ExtraValues::Categorical {
                codes: c,
                levels: l,
            } => {
                cols.categorical.push(e.name.clone());
                codes.push(c);
                // Given in their final order already.
                levels.push((l.clone(), (0..l.len() as u32).collect()));
            }
        }
    }
    let width = cols.width();
    let mut b = ProfileBuilder::new(cols, input.k, true);
    let mut start = 0;
    for slab in data.batches() {
        let n = slab.rows(d);
        let mut wide = Vec::with_capacity(n * width);
        for (r, row) in slab.values.chunks_exact(d).enumerate() {
            wide.extend(row.iter().map(|&v| v as f64));
            wide.extend(numeric.iter().map(|v| v[start + r]));
            wide.extend(codes.iter().map(|c| c[start + r] as f64));
        }
        b.add(
            &wide,
            slab.weights.as_deref(),
            &input.labels[start..start + n],
        );
        start += n;
    }
    b.finish(input.labels, levels).0
}

impl Profile {
    /// The profile as one tidy table for BI tools: a row per cluster and variable (and per
    /// category for categorical columns).
    ///
    /// Columns: `cluster`, `cluster_size`, `cluster_share`, `description`, `variable`, `kind`
    /// (`feature`, `described` or `category`; `segment` for the `--compare-with` column),
    /// `category`, `rows`, `mean`, `median`, `population_mean`, `population_median`, `z`,
    /// `lift`, `share`, `population_share`, `rank` (1 for the most distinguishing feature, null
    /// for the rest), `direction` (`high`/`low` for the ranked features), then `sd`, `min`,
    /// `max`, and `median_error` and `population_median_error` (the bound on an approximate
    /// median's error, null where the median is exact; see [`Profile::medians`]).
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
    sd: Vec<Option<f64>>,
    min: Vec<Option<f64>>,
    max: Vec<Option<f64>>,
    median_error: Vec<Option<f64>>,
    pop_median_error: Vec<Option<f64>>,
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
        self.sd.push(f.sd);
        self.min.push(f.min);
        self.max.push(f.max);
        self.median_error.push(f.median_error);
        self.pop_median_error.push(pop.median_error);
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
            &mut self.sd,
            &mut self.min,
            &mut self.max,
            &mut self.median_error,
            &mut self.pop_median_error,
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
            Field::new("sd", DataType::Float64, true),
            Field::new("min", DataType::Float64, true),
            Field::new("max", DataType::Float64, true),
            Field::new("median_error", DataType::Float64, true),
            Field::new("population_median_error", DataType::Float64, true),
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
            f64s(self.sd),
            f64s(self.min),
            f64s(self.max),
            f64s(self.median_error),
            f64s(self.pop_median_error),
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
