//! The saved model: everything `predict` needs, as JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::prep::Scaler;

/// Bumped when the layout changes in a way older readers cannot follow.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format_version: u32,
    pub features: Vec<String>,
    pub scaling: Scaler,
    pub k: usize,
    /// Centroids in clustered (scaled) space, exactly as fitted: predict compares against these,
    /// so it reproduces the fit's labels bit for bit.
    pub centroids: Vec<Vec<f32>>,
    /// The same centroids in input units, for people and other tools.
    pub centroids_input_units: Vec<Vec<f64>>,
    pub inertia: f64,
    pub rows: usize,
    pub iterations: usize,
    pub seed: u64,
    /// The stable segment id of each centroid, when a refit kept ids that are not `0..k`
    /// (a segment vanished); absent means centroid `i` is segment `i`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_ids: Option<Vec<u32>>,
}

impl Model {
    /// The model of a fit: `centroids` in clustered space (`k * dim`, row-major) as fitted,
    /// and the same in input units through `scaling`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        features: Vec<String>,
        scaling: Scaler,
        centroids: &[f32],
        inertia: f64,
        rows: usize,
        iterations: usize,
        seed: u64,
    ) -> Model {
        let dim = features.len().max(1);
        let k = centroids.len() / dim;
        Model {
            format_version: FORMAT_VERSION,
            k,
            centroids: centroids.chunks_exact(dim).map(<[f32]>::to_vec).collect(),
            centroids_input_units: scaling
                .inverse(centroids)
                .chunks_exact(dim)
                .map(<[f64]>::to_vec)
                .collect(),
            features,
            scaling,
            inertia,
            rows,
            iterations,
            seed,
            segment_ids: None,
        }
    }

    /// Flattened clustered-space centroids, `k * dim`.
    pub fn flat_centroids(&self) -> Vec<f32> {
        self.centroids.iter().flatten().copied().collect()
    }

    /// The segment id of every centroid, in centroid order.
    pub fn ids(&self) -> Vec<u32> {
        self.segment_ids
            .clone()
            .unwrap_or_else(|| (0..self.k as u32).collect())
    }

    /// Turns centroid positions (what a backend assigns) into segment ids.
    pub fn to_ids(&self, labels: &mut [u32]) {
        if let Some(ids) = &self.segment_ids {
            for l in labels {
                *l = ids[*l as usize];
            }
        }
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Internal(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<Model> {
        let bytes = crate::io::store::read(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::input(path, "cannot read model (not UTF-8 text)"))?;
        Self::parse(text).map_err(|why| Error::input(path, why))
    }

    /// A model from its JSON text, checked as [`Model::load`] checks a file.
    pub fn from_json(text: &str) -> Result<Model> {
        Self::parse(text).map_err(Error::Input)
    }

    fn parse(text: &str) -> std::result::Result<Model, String> {
        let m: Model =
            serde_json::from_str(text).map_err(|e| format!("not a lakemeans model ({e})"))?;
        m.check().map_err(|why| format!("corrupt model: {why}"))?;
        Ok(m)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format version {} is not supported (expected {FORMAT_VERSION})",
                self.format_version
            ));
        }
        let d = self.features.len();
        if d == 0 {
            return Err("no features".into());
        }
        if self.k == 0
            || self.centroids.len() != self.k
            || self.centroids_input_units.len() != self.k
        {
            return Err(format!(
                "k is {} but {} centroids are stored",
                self.k,
                self.centroids.len()
            ));
        }
        if self
            .centroids
            .iter()
            .any(|c| c.len() != d || c.iter().any(|v| !v.is_finite()))
        {
            return Err(format!("every centroid needs {d} finite values"));
        }
        if let Some(ids) = &self.segment_ids {
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if ids.len() != self.k || sorted.len() != self.k || sorted != *ids {
                return Err(format!(
                    "segment_ids must hold {} distinct ids in ascending order",
                    self.k
                ));
            }
            if ids.last().is_some_and(|&m| m > u32::MAX / 2) {
                return Err("a segment id is too large".into());
            }
        }
        if self.scaling.offset.len() != d || self.scaling.scale.len() != d {
            return Err("scaling does not match the features".into());
        }
        if self
            .scaling
            .scale
            .iter()
            .any(|&s| !(s.is_finite() && s > 0.0))
            || self.scaling.offset.iter().any(|o| !o.is_finite())
        {
            return Err("scaling holds a non-finite or non-positive value".into());
        }
        Ok(())
    }
}
