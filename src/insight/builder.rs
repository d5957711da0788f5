//! Builds a profile from *wide rows* streamed past in slabs: per row, the feature values, the
//! numeric described columns, then the codes of the categorical described columns and of the
//! segment label, all as f64 in input units.
//!
//! The first pass gathers everything exact: cluster sizes and weights, per cluster and column
//! the [`Summary`] (rows, weight, mean, spread, range) in fixed blocks, category tallies and
//! the crosstab with the segment label. Medians then come one of two ways, chosen up front:
//! `exact` keeps every numeric value (8 bytes a row and column) and sorts each cluster's values
//! at the end; otherwise a second pass fills a [`MedianSketch`] per cluster and column over the
//! range the first pass found, and every median carries its error bound.
//!
//! Slabs must be handed over whole and in row order (as [`crate::data::Slabber`] cuts them),
//! so that blocks are a function of the global row index; every column is added up by one
//! thread in row order. The result is then the same whatever the thread count, the files the
//! rows came from, or the memory budget (beyond the choice of exact medians).

use rayon::prelude::*;

use super::compare::{Comparison, Contingency, compare_table};
use super::fold_levels;
use super::profile::{
    CategoryStats, ColumnStats, MAX_LEVELS, MedianMethod, Parts, Profile, assemble, weighted_median,
};
use super::sketch::{Estimate, MedianSketch, SKETCH_BYTES};
use super::summary::{BLOCK, Summary, block_summaries};
use crate::data::slab_blocks;

/// Names of the columns of a wide row, in row order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub features: Vec<String>,
    /// Numeric described columns (NaN marks a null).
    pub numeric: Vec<String>,
    /// Categorical described columns, as codes.
    pub categorical: Vec<String>,
    /// The segment label of a comparison, as codes.
    pub segment: Option<String>,
}

impl Columns {
    /// Columns with numbers to summarise: the features, then the numeric described ones.
    pub fn numbers(&self) -> usize {
        self.features.len() + self.numeric.len()
    }

    /// Values per wide row.
    pub fn width(&self) -> usize {
        self.numbers() + self.categorical.len() + self.segment.is_some() as usize
    }
}

/// Levels of one coded column in their final order, and each code's position in it.
pub type Levels = (Vec<String>, Vec<u32>);

struct Numeric {
    clusters: Vec<Summary>,
    pop: Summary,
}

/// Per code and cluster: weight and rows; per code: the population's weight.
#[derive(Default)]
struct Tally {
    cells: Vec<Vec<(f64, u64)>>,
    pop: Vec<f64>,
}

struct Sketches {
    clusters: Vec<MedianSketch>,
    pop: MedianSketch,
}

/// A profile being built; see the module documentation.
pub struct ProfileBuilder {
    cols: Columns,
    k: usize,
    exact: bool,
    rows: usize,
    weighted: bool,
    sizes: Vec<u64>,
    cluster_weights: Vec<f64>,
    num: Vec<Numeric>,
    tallies: Vec<Tally>,
    /// Per segment code, rows per cluster.
    segment: Vec<Vec<u64>>,
    /// With exact medians: every value of every numeric column, and the weights.
    kept: Vec<Vec<f64>>,
    kept_weights: Vec<f32>,
    sketches: Vec<Sketches>,
}

impl ProfileBuilder {
    pub fn new(cols: Columns, k: usize, exact: bool) -> Self {
        let numbers = cols.numbers();
        let tallies = (0..cols.categorical.len())
            .map(|_| Tally::default())
            .collect();
        ProfileBuilder {
            k,
            exact,
            rows: 0,
            weighted: false,
            sizes: vec![0; k],
            cluster_weights: vec![0.0; k],
            num: (0..numbers)
                .map(|_| Numeric {
                    clusters: vec![Summary::default(); k],
                    pop: Summary::default(),
                })
                .collect(),
            tallies,
            segment: Vec::new(),
            kept: if exact {
                vec![Vec::new(); numbers]
            } else {
                Vec::new()
            },
            kept_weights: Vec::new(),
            sketches: Vec::new(),
            cols,
        }
    }

    /// Bytes per row that exact medians take: each numeric value and the weight, kept, plus
    /// the (value, weight) pairs of the one column being sorted at the end.
    pub fn exact_row_bytes(cols: &Columns, weighted: bool) -> u64 {
        8 * cols.numbers() as u64 + 4 * weighted as u64 + 16
    }

    /// Bytes the median sketches of a streamed profile take at most.
    pub fn sketch_bytes(cols: &Columns, k: usize) -> u64 {
        ((k + 1) * cols.numbers() * SKETCH_BYTES) as u64
    }

    /// Whether the medians need [`ProfileBuilder::add_sketch`] passes.
    pub fn needs_sketch_pass(&self) -> bool {
        !self.exact && !self.num.is_empty()
    }

    /// First pass: one slab of wide rows `x`, with its weights and the clusters of its rows.
    pub fn add(&mut self, x: &[f64], weights: Option<&[f32]>, labels: &[u32]) {
        let (n, width, k) = (labels.len(), self.cols.width(), self.k);
        debug_assert_eq!(x.len(), n * width);
        let w = |r: usize| weights.map_or(1.0, |w| w[r] as f64);
        self.weighted |= weights.is_some();
        self.rows += n;
        for (r, &l) in labels.iter().enumerate() {
            self.sizes[l as usize] += 1;
            self.cluster_weights[l as usize] += w(r);
        }
        let blocks = slab_blocks(0, n, BLOCK);
        self.num.par_iter_mut().enumerate().for_each(|(j, acc)| {
            for b in &blocks {
                let value = |r: usize| x[(b.start + r) * width + j];
                let wt = |r: usize| w(b.start + r);
                let parts = block_summaries(b.len, k, value, |r| labels[b.start + r] as usize, wt);
                for (a, p) in acc.clusters.iter_mut().zip(&parts) {
                    a.merge(p);
                }
                acc.pop
                    .merge(&block_summaries(b.len, 1, value, |_| 0, wt)[0]);
            }
        });
        let first_code = self.cols.numbers();
        self.tallies.par_iter_mut().enumerate().for_each(|(i, t)| {
            for (r, &l) in labels.iter().enumerate() {
                let code = x[r * width + first_code + i] as usize;
                if code >= t.cells.len() {
                    t.cells.resize(code + 1, vec![(0.0, 0); k]);
                    t.pop.resize(code + 1, 0.0);
                }
                let cell = &mut t.cells[code][l as usize];
                cell.0 += w(r);
                cell.1 += 1;
                t.pop[code] += w(r);
            }
        });
        if self.cols.segment.is_some() {
            for (r, &l) in labels.iter().enumerate() {
                let code = x[r * width + width - 1] as usize;
                if code >= self.segment.len() {
                    self.segment.resize(code + 1, vec![0; k]);
                }
                self.segment[code][l as usize] += 1;
            }
        }
        if self.exact {
            self.kept.par_iter_mut().enumerate().for_each(|(j, v)| {
                v.extend((0..n).map(|r| x[r * width + j]));
            });
            if let Some(ws) = weights {
                self.kept_weights.extend_from_slice(ws);
            }
        }
    }

    /// Sets up the sketches over the ranges the first pass found.
    pub fn start_sketches(&mut self) {
        let sketch = |s: &Summary| {
            if s.weight > 0.0 {
                MedianSketch::new(s.min, s.max)
            } else {
                MedianSketch::new(0.0, 0.0)
            }
        };
        self.sketches = self
            .num
            .iter()
            .map(|acc| Sketches {
                clusters: acc.clusters.iter().map(sketch).collect(),
                pop: sketch(&acc.pop),
            })
            .collect();
    }

    /// Second pass: one slab of rows holding the numeric columns only (`x` has
    /// [`Columns::numbers`] values per row).
    pub fn add_sketch(&mut self, x: &[f64], weights: Option<&[f32]>, labels: &[u32]) {
        let width = self.cols.numbers();
        debug_assert_eq!(x.len(), labels.len() * width);
        let w = |r: usize| weights.map_or(1.0, |w| w[r] as f64);
        self.sketches.par_iter_mut().enumerate().for_each(|(j, s)| {
            for (r, &l) in labels.iter().enumerate() {
                let v = x[r * width + j];
                if v.is_nan() {
                    continue;
                }
                s.clusters[l as usize].add(v, w(r));
                s.pop.add(v, w(r));
            }
        });
    }

    /// The profile, and the comparison with the segment label when there is one. `labels`:
    /// every row's cluster (exact medians need them); `levels`: the final levels of each
    /// categorical column, then of the segment label.
    pub fn finish(self, labels: &[u32], levels: Vec<Levels>) -> (Profile, Option<Comparison>) {
        let k = self.k;
        let medians: Vec<(Vec<Option<Estimate>>, Option<Estimate>)> = if self.exact {
            let w = |i: usize| self.kept_weights.get(i).map_or(1.0, |&w| w as f64);
            self.kept
                .iter()
                .map(|vals| exact_medians(vals, labels, k, &w))
                .collect()
        } else {
            self.num
                .iter()
                .enumerate()
                .map(|(j, acc)| match self.sketches.get(j) {
                    Some(s) => (
                        s.clusters
                            .iter()
                            .zip(&acc.clusters)
                            .map(|(sk, su)| sk.median(su.weight > 0.0))
                            .collect(),
                        s.pop.median(acc.pop.weight > 0.0),
                    ),
                    None => (vec![None; k], None),
                })
                .collect()
        };
        let names: Vec<&String> = self
            .cols
            .features
            .iter()
            .chain(&self.cols.numeric)
            .collect();
        let mut stats: Vec<ColumnStats> = self
            .num
            .iter()
            .zip(medians)
            .zip(names)
            .map(|((acc, (cm, pm)), name)| ColumnStats {
                name: name.clone(),
                clusters: acc.clusters.iter().copied().zip(cm).collect(),
                pop: (acc.pop, pm),
            })
            .collect();
        let described = stats.split_off(self.cols.features.len());
        let mut levels = levels.into_iter();
        let categories = self
            .tallies
            .into_iter()
            .zip(&self.cols.categorical)
            .map(|(t, name)| {
                let lv = levels.next().unwrap_or_default();
                category_stats(name, t, lv, k)
            })
            .collect();
        let comparison = self.cols.segment.as_ref().map(|name| {
            let (segs, remap) = levels.next().unwrap_or_default();
            let mut t = Contingency {
                rows: k,
                cols: segs.len(),
                counts: vec![0; k * segs.len()],
            };
            for (code, per) in self.segment.iter().enumerate() {
                let s = remap[code] as usize;
                for (c, &v) in per.iter().enumerate() {
                    t.counts[c * t.cols + s] += v;
                }
            }
            compare_table(name, &t, &segs)
        });
        let profile = assemble(Parts {
            k,
            rows: self.rows,
            weighted: self.weighted,
            sizes: self.sizes,
            cluster_weights: self.cluster_weights,
            features: stats,
            described,
            categories,
            medians: if self.exact {
                MedianMethod::exact()
            } else {
                MedianMethod::histogram()
            },
        });
        (profile, comparison)
    }
}

/// Exact weighted medians of one column per cluster and for the population, by sorting.
fn exact_medians(
    vals: &[f64],
    labels: &[u32],
    k: usize,
    w: &(dyn Fn(usize) -> f64 + Sync),
) -> (Vec<Option<Estimate>>, Option<Estimate>) {
    let exact = |m: Option<f64>| m.map(|value| Estimate { value, bound: 0.0 });
    let mut per: Vec<Vec<(f64, f64)>> = vec![Vec::new(); k];
    for (i, &v) in vals.iter().enumerate() {
        if !v.is_nan() {
            per[labels[i] as usize].push((v, w(i)));
        }
    }
    let clusters = per
        .par_iter_mut()
        .map(|xs| {
            xs.sort_by(|a, b| a.0.total_cmp(&b.0));
            exact(weighted_median(xs))
        })
        .collect();
    drop(per);
    let mut all: Vec<(f64, f64)> = vals
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (v, w(i)))
        .collect();
    all.par_sort_by(|a, b| a.0.total_cmp(&b.0));
    (clusters, exact(weighted_median(&all)))
}

/// A categorical tally in its final level order, the rarest levels folded as
/// [`super::cap_levels`] folds them.
fn category_stats(name: &str, t: Tally, (names, remap): Levels, k: usize) -> CategoryStats {
    let n = names.len();
    let mut cells = vec![vec![(0.0f64, 0u64); n]; k];
    let mut pop = vec![0.0f64; n];
    for (code, per) in t.cells.iter().enumerate() {
        let l = remap[code] as usize;
        for (c, &(w, r)) in per.iter().enumerate() {
            cells[c][l] = (w, r);
        }
        pop[l] = t.pop[code];
    }
    let (fold, levels) = fold_levels(&pop, &names, MAX_LEVELS);
    if levels.len() == n {
        return CategoryStats {
            name: name.to_string(),
            levels,
            cells,
            pop,
        };
    }
    let mut fcells = vec![vec![(0.0f64, 0u64); levels.len()]; k];
    let mut fpop = vec![0.0f64; levels.len()];
    for l in 0..n {
        let f = fold[l] as usize;
        for c in 0..k {
            fcells[c][f].0 += cells[c][l].0;
            fcells[c][f].1 += cells[c][l].1;
        }
        fpop[f] += pop[l];
    }
    CategoryStats {
        name: name.to_string(),
        levels,
        cells: fcells,
        pop: fpop,
    }
}
