//! Shader specialisation: tile shapes chosen from d, k and the adapter's limits, baked into
//! the WGSL source as constants so loops have fixed trip counts and register tiles fixed sizes.

use std::collections::HashMap;

const ASSIGN_WGSL: &str = include_str!("../../../shaders/assign.wgsl");
const UPDATE_WGSL: &str = include_str!("../../../shaders/update.wgsl");
const REDUCE_WGSL: &str = include_str!("../../../shaders/reduce.wgsl");

/// Rows per assign workgroup. Fixed for every shape so that chunk boundaries (multiples of it)
/// never change which rows a workgroup sums, keeping inertia identical across chunkings.
pub const ROWS_PER_TILE: usize = 64;
/// Threads of the update and reduce kernels.
pub const THREADS: usize = 256;
/// Number of (sum, compensation) pairs the reduce kernel writes.
pub const REDUCE_SLOTS: usize = THREADS;

/// Thread grid and register tile of the assign kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AssignShape {
    pub dp4: u32,
    pub tx: u32,
    pub ty: u32,
    pub rm: u32,
    pub rn: u32,
    pub kc: u32,
}

impl AssignShape {
    /// Picks the tile for rows of `dp4` vec4s against `k` centroids within `wg_bytes` of
    /// workgroup memory. Every shape has 256 threads and 64 rows per workgroup; small k uses
    /// narrow centroid tiles so few lanes idle, large k a 4 x 4 register tile for reuse.
    pub fn choose(dp4: usize, k: usize, wg_bytes: u32) -> AssignShape {
        let (tx, ty, rm, rn) = if k <= 4 {
            (4, 64, 1, 1)
        } else if k <= 8 {
            (4, 64, 1, 2)
        } else if k <= 32 {
            (8, 32, 2, 4)
        } else {
            (16, 16, 4, 4)
        };
        let bm = ty * rm;
        let bn = tx * rn;
        // Fixed workgroup memory: merge arrays, winners, row sums, the counter.
        let fixed = bm * tx * 8 + bm * 4 + bm * 4 + 16;
        let per_col = (bm + bn + 2) * 16;
        let room = (wg_bytes as usize).saturating_sub(fixed) / per_col;
        let kc_max = room.clamp(1, 16);
        let dp4 = dp4.max(1);
        let stages = dp4.div_ceil(kc_max);
        let kc = dp4.div_ceil(stages);
        AssignShape {
            dp4: dp4 as u32,
            tx: tx as u32,
            ty: ty as u32,
            rm: rm as u32,
            rn: rn as u32,
            kc: kc as u32,
        }
    }

    pub fn source(&self) -> String {
        ASSIGN_WGSL
            .replace("$DP4", &self.dp4.to_string())
            .replace("$TX", &self.tx.to_string())
            .replace("$TY", &self.ty.to_string())
            .replace("$RM", &self.rm.to_string())
            .replace("$RN", &self.rn.to_string())
            .replace("$KC", &self.kc.to_string())
    }
}

/// The update kernel: row length, and how its sums are split over workgroup memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpdateShape {
    pub dp4: u32,
    /// Entries in workgroup memory (0: accumulate straight into the global buffer).
    pub shared: u32,
    /// vec4 columns each workgroup sums (`dp4` on the direct path).
    pub cols: u32,
}

impl UpdateShape {
    /// Keeps the sums in workgroup memory whenever one vec4 column per cluster fits: the
    /// features are cut into as few column slices as fit, of near-equal width.
    pub fn choose(dp4: usize, k: usize, wg_bytes: u32) -> UpdateShape {
        let room = (wg_bytes as usize / 12).saturating_sub(1);
        let max_cols = (room / k.max(1)).saturating_sub(2) / 4;
        if max_cols == 0 {
            return UpdateShape {
                dp4: dp4 as u32,
                shared: 0,
                cols: dp4 as u32,
            };
        }
        let cols = dp4.div_ceil(dp4.div_ceil(max_cols));
        UpdateShape {
            dp4: dp4 as u32,
            shared: (k * (cols * 4 + 2)) as u32,
            cols: cols as u32,
        }
    }

    /// Column slices, each a workgroup per row range.
    pub fn slices(&self) -> usize {
        (self.dp4 as usize).div_ceil(self.cols as usize)
    }

    pub fn source(&self) -> String {
        UPDATE_WGSL
            .replace("$DP4", &self.dp4.to_string())
            .replace("$SHARED", &self.shared.to_string())
            .replace("$COLS", &self.cols.to_string())
    }
}

/// Accumulator entries (three u32 words each): sums, then weights, then counts.
pub fn accumulator_entries(dp4: usize, k: usize) -> usize {
    k * (dp4 * 4 + 2)
}

/// Compiled pipelines, built on first use per shape.
#[derive(Default)]
pub struct Kernels {
    assign: HashMap<AssignShape, wgpu::ComputePipeline>,
    update: HashMap<UpdateShape, wgpu::ComputePipeline>,
    reduce: Option<wgpu::ComputePipeline>,
}

pub fn build(device: &wgpu::Device, label: &str, source: String) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[],
            // Every kernel writes its workgroup memory before reading it.
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    })
}

impl Kernels {
    /// Pipelines are created inside the caller's error scopes, which report shader failures.
    pub fn assign(&mut self, device: &wgpu::Device, s: AssignShape) -> &wgpu::ComputePipeline {
        self.assign
            .entry(s)
            .or_insert_with(|| build(device, "lakemeans assign", s.source()))
    }

    pub fn update(&mut self, device: &wgpu::Device, s: UpdateShape) -> &wgpu::ComputePipeline {
        self.update
            .entry(s)
            .or_insert_with(|| build(device, "lakemeans update", s.source()))
    }

    pub fn reduce(&mut self, device: &wgpu::Device) -> &wgpu::ComputePipeline {
        self.reduce
            .get_or_insert_with(|| build(device, "lakemeans reduce", REDUCE_WGSL.to_string()))
    }

    /// Forgets a pipeline whose creation failed, so a later call does not reuse it.
    pub fn clear(&mut self) {
        self.assign.clear();
        self.update.clear();
        self.reduce = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_fit_the_smallest_workgroup_memory() {
        for dp4 in [1, 2, 3, 9, 33, 75, 1000] {
            for k in [1, 4, 5, 8, 9, 32, 33, 5000] {
                let s = AssignShape::choose(dp4, k, 16384);
                let bm = (s.ty * s.rm) as usize;
                let bn = (s.tx * s.rn) as usize;
                assert_eq!(bm, ROWS_PER_TILE);
                assert_eq!(s.tx * s.ty, 256);
                let bytes =
                    (bm + bn + 2) * s.kc as usize * 16 + bm * s.tx as usize * 8 + bm * 8 + 16;
                assert!(bytes <= 16384, "{s:?} needs {bytes}");
                assert!(s.kc >= 1 && s.kc as usize <= dp4);
            }
        }
    }

    #[test]
    fn sources_have_no_placeholders_left() {
        let a = AssignShape::choose(3, 7, 32768).source();
        let u = UpdateShape::choose(3, 7, 32768).source();
        for name in [
            "$DP4", "$TX", "$TY", "$RM", "$RN", "$KC", "$SHARED", "$COLS",
        ] {
            assert!(!a.contains(&format!("{name}u")) && !u.contains(&format!("{name}u")));
        }
        assert!(a.contains("const DP4: u32 = 3u;") && u.contains("const DP4: u32 = 3u;"));
    }

    #[test]
    fn update_slices_cover_the_row_and_fit() {
        for wg in [16384u32, 32768, 49152] {
            for dp4 in [1, 2, 3, 9, 33, 75, 1000] {
                for k in [1, 4, 10, 64, 300, 1365, 5000] {
                    let s = UpdateShape::choose(dp4, k, wg);
                    if s.shared == 0 {
                        // Direct only when not even one column per cluster fits.
                        assert!((k * 6 + 1) * 12 > wg as usize, "{s:?} k={k}");
                        assert_eq!(s.cols as usize, dp4);
                        continue;
                    }
                    assert!((s.shared as usize + 1) * 12 <= wg as usize, "{s:?} k={k}");
                    assert_eq!(s.shared as usize, k * (s.cols as usize * 4 + 2));
                    let slices = s.slices();
                    assert!(slices * s.cols as usize >= dp4);
                    if (accumulator_entries(dp4, k) + 1) * 12 <= wg as usize {
                        assert_eq!(slices, 1, "{s:?}: everything fits one workgroup");
                    }
                }
            }
        }
    }
}
