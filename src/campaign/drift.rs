//! How segments changed between two runs: who moved, how sizes and centroids shifted.
//!
//! Customers are joined across the runs by their key. `moved_share` is the share of joined
//! customers whose segment id changed. Each segment's population stability index compares its
//! size share p (previous) and q (new): PSI = (q − p)·ln(q / p), shares floored at 1e-4 so
//! that a segment that appears or vanishes gives a large but finite value; the sum over
//! segments is the usual PSI of the whole distribution (below 0.1 is commonly read as stable,
//! above 0.25 as a major shift). Centroid shifts are in input units divided by a standard
//! deviation per feature, so features on different scales compare.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// Share floor in the PSI, so that empty segments give finite values.
pub const PSI_FLOOR: f64 = 1e-4;

#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    /// Row labels: previous ids of the joined customers, ascending.
    pub previous_ids: Vec<u32>,
    /// Column labels: new ids of the joined customers, ascending.
    pub new_ids: Vec<u32>,
    /// `counts[i][j]`: joined customers in `previous_ids[i]` before and `new_ids[j]` now.
    pub counts: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentDrift {
    pub id: u32,
    /// `kept`, `new` or `vanished`.
    pub status: &'static str,
    /// Rows in the previous assignments.
    pub previous_size: u64,
    /// Rows in the new assignments.
    pub size: u64,
    /// Joined customers in this segment in both runs.
    pub stayed: u64,
    pub previous_share: f64,
    pub share: f64,
    pub psi: f64,
    /// Feature → (new − previous centroid) / standard deviation; absent for new and vanished
    /// segments.
    pub centroid_shift: Option<BTreeMap<String, f64>>,
    /// The feature with the largest absolute shift.
    pub largest_shift: Option<String>,
}

/// `drift.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub features: Vec<String>,
    pub key_columns: Vec<String>,
    pub previous_rows: usize,
    pub rows: usize,
    /// Customers present in both runs.
    pub joined: usize,
    pub moved: usize,
    /// `moved / joined`; absent when no customer is in both runs.
    pub moved_share: Option<f64>,
    pub migration: Migration,
    pub segments: Vec<SegmentDrift>,
    pub psi_total: f64,
    /// What the centroid shifts are measured in.
    pub shift_unit: String,
    pub new_ids: Vec<u32>,
    pub vanished_ids: Vec<u32>,
}

/// The two runs, as `compute_drift` needs them.
pub struct DriftInput<'a> {
    pub features: &'a [String],
    /// For messages about the previous assignments.
    pub previous_path: &'a Path,
    pub previous_labels: &'a [u32],
    pub previous_keys: &'a [Option<String>],
    pub labels: &'a [u32],
    pub keys: &'a [Option<String>],
    pub key_columns: &'a [String],
    /// Segment id → centroid in input units.
    pub previous_centroids: &'a [(u32, Vec<f64>)],
    pub centroids: &'a [(u32, Vec<f64>)],
    /// One per feature, the unit of the shifts.
    pub sd: &'a [f64],
    pub shift_unit: &'a str,
    pub new_ids: &'a [u32],
    pub vanished_ids: &'a [u32],
}

/// Row of each key; a key seen twice is an error, since the join would be ambiguous.
fn index_keys<'a>(
    keys: &'a [Option<String>],
    what: &str,
    columns: &[String],
) -> Result<HashMap<&'a str, usize>> {
    let mut m = HashMap::with_capacity(keys.len());
    for (r, k) in keys.iter().enumerate() {
        if let Some(k) = k
            && let Some(first) = m.insert(k.as_str(), r)
        {
            return Err(Error::Input(format!(
                "{what}: --id {} value '{}' appears at rows {first} and {r}; the join needs \
                 one row per customer",
                columns.join(","),
                k.replace('\u{1f}', ",")
            )));
        }
    }
    Ok(m)
}

pub fn compute_drift(x: &DriftInput) -> Result<Drift> {
    let prev_index = index_keys(
        x.previous_keys,
        &x.previous_path.display().to_string(),
        x.key_columns,
    )?;
    index_keys(x.keys, "the new input", x.key_columns)?;
    let mut pairs: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let (mut joined, mut moved) = (0usize, 0usize);
    for (r, k) in x.keys.iter().enumerate() {
        let Some(pr) = k.as_deref().and_then(|k| prev_index.get(k)) else {
            continue;
        };
        let (a, b) = (x.previous_labels[*pr], x.labels[r]);
        joined += 1;
        moved += usize::from(a != b);
        *pairs.entry((a, b)).or_default() += 1;
    }
    let previous_ids: Vec<u32> = pairs
        .keys()
        .map(|p| p.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let new_ids: Vec<u32> = pairs
        .keys()
        .map(|p| p.1)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let counts: Vec<Vec<u64>> = previous_ids
        .iter()
        .map(|&a| {
            new_ids
                .iter()
                .map(|&b| pairs.get(&(a, b)).copied().unwrap_or(0))
                .collect()
        })
        .collect();

    let count = |labels: &[u32]| {
        let mut m: BTreeMap<u32, u64> = BTreeMap::new();
        for &l in labels {
            *m.entry(l).or_default() += 1;
        }
        m
    };
    let prev_sizes = count(x.previous_labels);
    let sizes = count(x.labels);
    let prev_c: BTreeMap<u32, &Vec<f64>> =
        x.previous_centroids.iter().map(|(i, c)| (*i, c)).collect();
    let new_c: BTreeMap<u32, &Vec<f64>> = x.centroids.iter().map(|(i, c)| (*i, c)).collect();
    let all_ids: BTreeSet<u32> = prev_sizes
        .keys()
        .chain(sizes.keys())
        .chain(prev_c.keys())
        .chain(new_c.keys())
        .copied()
        .collect();
    let (pn, nn) = (
        x.previous_labels.len().max(1) as f64,
        x.labels.len().max(1) as f64,
    );
    let segments: Vec<SegmentDrift> = all_ids
        .into_iter()
        .map(|id| {
            let previous_size = prev_sizes.get(&id).copied().unwrap_or(0);
            let size = sizes.get(&id).copied().unwrap_or(0);
            let (p, q) = (previous_size as f64 / pn, size as f64 / nn);
            let shift = match (prev_c.get(&id), new_c.get(&id)) {
                (Some(a), Some(b)) => Some(
                    x.features
                        .iter()
                        .enumerate()
                        .map(|(j, f)| (f.clone(), (b[j] - a[j]) / x.sd[j]))
                        .collect::<BTreeMap<String, f64>>(),
                ),
                _ => None,
            };
            let largest_shift = shift.as_ref().and_then(|s| {
                s.iter()
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                    .map(|(f, _)| f.clone())
            });
            SegmentDrift {
                id,
                status: if x.new_ids.contains(&id) {
                    "new"
                } else if x.vanished_ids.contains(&id) {
                    "vanished"
                } else {
                    "kept"
                },
                previous_size,
                size,
                stayed: pairs.get(&(id, id)).copied().unwrap_or(0),
                previous_share: p,
                share: q,
                psi: psi(p, q),
                centroid_shift: shift,
                largest_shift,
            }
        })
        .collect();
    Ok(Drift {
        features: x.features.to_vec(),
        key_columns: x.key_columns.to_vec(),
        previous_rows: x.previous_labels.len(),
        rows: x.labels.len(),
        joined,
        moved,
        moved_share: (joined > 0).then(|| moved as f64 / joined as f64),
        migration: Migration {
            previous_ids,
            new_ids,
            counts,
        },
        psi_total: segments.iter().map(|s| s.psi).sum(),
        segments,
        shift_unit: x.shift_unit.to_string(),
        new_ids: x.new_ids.to_vec(),
        vanished_ids: x.vanished_ids.to_vec(),
    })
}

/// One term of the population stability index.
pub fn psi(p: f64, q: f64) -> f64 {
    let (p, q) = (p.max(PSI_FLOOR), q.max(PSI_FLOOR));
    (q - p) * (q / p).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn join_counts_moves_and_migration() {
        let features = vec!["a".to_string(), "b".to_string()];
        let pc = vec![(0, vec![0.0, 0.0]), (1, vec![10.0, 10.0])];
        let nc = vec![(0, vec![1.0, 0.0]), (1, vec![10.0, 7.0])];
        let d = compute_drift(&DriftInput {
            features: &features,
            previous_path: Path::new("pa.parquet"),
            previous_labels: &[0, 0, 1, 1],
            previous_keys: &keys(&["w", "x", "y", "z"]),
            labels: &[0, 1, 1, 0, 0],
            keys: &keys(&["x", "w", "y", "q", "z"]),
            key_columns: &["id".to_string()],
            previous_centroids: &pc,
            centroids: &nc,
            sd: &[2.0, 1.5],
            shift_unit: "sd",
            new_ids: &[],
            vanished_ids: &[],
        })
        .unwrap();
        // x: 0->0, w: 0->1, y: 1->1, z: 1->0; q is new.
        assert_eq!((d.joined, d.moved), (4, 2));
        assert_eq!(d.moved_share, Some(0.5));
        assert_eq!(d.migration.counts, vec![vec![1, 1], vec![1, 1]]);
        let s0 = &d.segments[0];
        assert_eq!((s0.previous_size, s0.size, s0.stayed), (2, 3, 1));
        let shift = s0.centroid_shift.as_ref().unwrap();
        assert_eq!(shift["a"], 0.5);
        assert_eq!(shift["b"], 0.0);
        assert_eq!(d.segments[1].largest_shift.as_deref(), Some("b"));
        assert_eq!(d.segments[1].centroid_shift.as_ref().unwrap()["b"], -2.0);
        // PSI by hand: shares 0.5 -> 0.6 and 0.5 -> 0.4.
        let want = 0.1 * (0.6f64 / 0.5).ln() + (-0.1) * (0.4f64 / 0.5).ln();
        assert!((d.psi_total - want).abs() < 1e-12);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = index_keys(&keys(&["a", "b", "a"]), "pa.parquet", &["id".into()]).unwrap_err();
        assert!(e.to_string().contains("rows 0 and 2"), "{e}");
    }

    #[test]
    fn psi_is_zero_when_unchanged_and_finite_when_empty() {
        assert_eq!(psi(0.3, 0.3), 0.0);
        assert!(psi(0.2, 0.0).is_finite() && psi(0.2, 0.0) > 0.0);
    }
}
