//! Shader specialisation: tile shapes chosen from d, k and the adapter's limits, baked into
//! the WGSL source as constants so loops have fixed trip counts and register tiles fixed sizes.

use std::collections::HashMap;

const ASSIGN_WGSL: &str = include_str!("../../../shaders/assign.wgsl");
const UPDATE_WGSL: &str = include_str!("../../../shaders/update.wgsl");
const REDUCE_WGSL: &str = include_str!("../../../shaders/reduce.wgsl");
const FIXED96_WGSL: &str = include_str!("../../../shaders/fixed96.wgsl");
const UPDATE_PARAMS_WGSL: &str = include_str!("../../../shaders/update_params.wgsl");
const SORTED_WGSL: &str = include_str!("../../../shaders/update_sorted.wgsl");
const BUCKET_COUNT_WGSL: &str = include_str!("../../../shaders/bucket_count.wgsl");
const BUCKET_SCAN_WGSL: &str = include_str!("../../../shaders/bucket_scan.wgsl");
const BUCKET_SCATTER_WGSL: &str = include_str!("../../../shaders/bucket_scatter.wgsl");
/// Threads of the sorted update kernel (update_sorted.wgsl).
const SORTED_THREADS: usize = 64;
/// Entries of the sorted row list each sorted-update workgroup sums.
pub const SORTED_SPAN: usize = 256;
/// Threads of the bucket count and scatter kernels, one row each.
pub const BUCKET_THREADS: usize = 256;

/// Rows per assign workgroup. Fixed for every shape so that chunk boundaries (multiples of it)
/// never change which rows a workgroup sums, keeping inertia identical across chunkings.
pub const ROWS_PER_TILE: usize = 128;
/// Threads of the update and reduce kernels.
pub const THREADS: usize = 256;
/// Number of (sum, compensation) pairs the reduce kernel writes.
pub const REDUCE_SLOTS: usize = THREADS;
/// Most vec4 columns staged per step: beyond this the staging buffers cost occupancy.
const MAX_KC: usize = 8;

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
    /// workgroup memory. Every shape has 256 threads and 128 rows per workgroup; small k uses
    /// narrow centroid tiles so few lanes idle, large k an 8 x 8 register tile, which loads 16
    /// vec4s from workgroup memory per 256 multiply-adds.
    pub fn choose(dp4: usize, k: usize, wg_bytes: u32) -> AssignShape {
        let (tx, ty, rm, rn) = if k <= 4 {
            (4, 64, 2, 1)
        } else if k <= 8 {
            (4, 64, 2, 2)
        } else if k <= 32 {
            (8, 32, 4, 4)
        } else if k <= 64 {
            (16, 16, 8, 4)
        } else {
            (16, 16, 8, 8)
        };
        let bm = ty * rm;
        let bn = tx * rn;
        let room =
            (wg_bytes as usize).saturating_sub(Self::fixed_bytes(bm)) / Self::column_bytes(bm, bn);
        let kc_max = room.clamp(1, MAX_KC);
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

    /// Workgroup memory besides the staged tiles: winners (score, index), row sums, counter.
    fn fixed_bytes(bm: usize) -> usize {
        bm * 12 + 16
    }

    /// Workgroup memory per staged vec4 column: both tiles plus their spare entries.
    fn column_bytes(bm: usize, bn: usize) -> usize {
        (bm + bn + 2) * 16
    }

    /// Workgroup memory this shape uses.
    #[cfg(test)]
    fn workgroup_bytes(&self) -> usize {
        let (bm, bn) = ((self.ty * self.rm) as usize, (self.tx * self.rn) as usize);
        Self::fixed_bytes(bm) + Self::column_bytes(bm, bn) * self.kc as usize
    }

    pub fn source(&self) -> String {
        let (rm, rn) = (self.rm as usize, self.rn as usize);
        let (bm, bn, kc) = (
            (self.ty * self.rm) as usize,
            (self.tx * self.rn) as usize,
            self.kc as usize,
        );
        let threads = (self.tx * self.ty) as usize;
        // Staged entries per thread and step, for the row tile and the centroid tile.
        let (lx, lc) = ((bm * kc).div_ceil(threads), (bn * kc).div_ceil(threads));
        let mut w = Wgsl::default();
        for i in 0..rm {
            w.best += &format!("    var bs{i} = inf;\n    var bi{i} = NO_INDEX;\n");
            w.mac += &format!("            let x{i} = xs[xb + {i}u * TY];\n");
            w.merge += &format!(
                "            if (better(bs{i}, bi{i}, win_s[ty + {i}u * TY], win_i[ty + {i}u * TY])) {{\n\
                 \x20               win_s[ty + {i}u * TY] = bs{i};\n\
                 \x20               win_i[ty + {i}u * TY] = bi{i};\n\
                 \x20           }}\n"
            );
        }
        for j in 0..rn {
            w.mac += &format!("            let c{j} = cs[cb + {j}u * TX];\n");
            w.fold += &format!(
                "            {{\n                let ci = c0 + tx + {j}u * TX;\n\
                 \x20               if (ci < p.k) {{\n\
                 \x20                   let cn = cnorm[ci];\n"
            );
            for i in 0..rm {
                w.zero += &format!("    var a{i}_{j} = 0.0;\n");
                w.reset += &format!("            a{i}_{j} = 0.0;\n");
                w.mac += &format!(
                    "            a{i}_{j} = fma(x{i}.w, c{j}.w, fma(x{i}.z, c{j}.z, \
                     fma(x{i}.y, c{j}.y, fma(x{i}.x, c{j}.x, a{i}_{j}))));\n"
                );
                w.fold += &format!(
                    "                    let s{i} = cn - 2.0 * a{i}_{j};\n\
                     \x20                   if (s{i} < bs{i}) {{\n\
                     \x20                       bs{i} = s{i};\n\
                     \x20                       bi{i} = ci;\n\
                     \x20                   }}\n"
                );
            }
            w.fold += "                }\n            }\n";
        }
        // Staging: which tile entry (r, q) each of a thread's registers holds; a guard only
        // where the tile does not divide evenly among the threads.
        for (tile, n, total, lim) in [
            ("x", lx, bm * kc, "row0 + r < p.rows"),
            ("c", lc, bn * kc, "c0_ + r < p.k"),
        ] {
            for i in 0..n {
                let (e, g) = (format!("e{tile}{i}"), format!("g{tile}{i}"));
                w.pre += &format!(
                    "    let {e} = li + {}u;\n    var {g} = vec4<f32>(0.0);\n",
                    i * threads
                );
                let even = (i + 1) * threads <= total;
                let guard = if even {
                    String::new()
                } else {
                    format!("{e} < {total}u && ")
                };
                let (src, stride, dst) = if tile == "x" {
                    ("x[(row0 + r) * DP4 + col]", "XS", "xs")
                } else {
                    ("cent[(c0_ + r) * DP4 + col]", "CS", "cs")
                };
                w.load += &format!(
                    "        {{\n            let r = {e} / KC;\n            let col = col0_ + {e} % KC;\n\
                     \x20           {g} = vec4<f32>(0.0);\n\
                     \x20           if ({guard}{} && col < DP4) {{\n\
                     \x20               {g} = {src};\n            }}\n        }}\n",
                    lim
                );
                let store = format!("{dst}[({e} % KC) * {stride} + {e} / KC] = {g};");
                w.store += &if even {
                    format!("        {store}\n")
                } else {
                    format!("        if ({e} < {total}u) {{\n            {store}\n        }}\n")
                };
            }
        }
        let load = |step: &str, indent: &str| {
            let body = format!(
                "{{\n    let s_ = {step};\n    let col0_ = (s_ % STAGES) * KC;\n\
                 \x20   let c0_ = (s_ / STAGES) * BN;\n{}}}\n",
                w.load
            );
            body.lines()
                .map(|l| format!("{indent}{l}\n"))
                .collect::<String>()
        };
        ASSIGN_WGSL
            .replace("$DP4", &self.dp4.to_string())
            .replace("$TX", &self.tx.to_string())
            .replace("$TY", &self.ty.to_string())
            .replace("$KC", &self.kc.to_string())
            .replace("$BM", &bm.to_string())
            .replace("$BN", &bn.to_string())
            .replace("$BEST\n", &w.best)
            .replace("$ZERO\n", &w.zero)
            .replace("$PRE\n", &w.pre)
            .replace("$LOAD0\n", &load("0u", "    "))
            .replace("$LOADN\n", &load("s + 1u", "        "))
            .replace("$RESET\n", &w.reset)
            .replace("$STORE\n", &w.store)
            .replace("$MAC\n", &w.mac)
            .replace("$FOLD\n", &w.fold)
            .replace("$MERGE\n", &w.merge)
    }
}

/// Pieces of the assign kernel written out per register and staged entry.
#[derive(Default)]
struct Wgsl {
    best: String,
    zero: String,
    reset: String,
    pre: String,
    load: String,
    store: String,
    mac: String,
    fold: String,
    merge: String,
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

    /// Whether the sums go through the sorted update (update_sorted.wgsl) rather than
    /// atomics per term: when not even one vec4 column per cluster fits workgroup memory.
    /// Measured on an H100 at 20M x 32, k = 256 (three column slices), the sliced
    /// workgroup-private sums beat the sorted update (30 ms against 39 ms per iteration).
    pub fn sorted(&self) -> bool {
        self.shared == 0
    }

    pub fn source(&self) -> String {
        format!("{UPDATE_PARAMS_WGSL}\n{FIXED96_WGSL}\n{UPDATE_WGSL}")
            .replace("$DP4", &self.dp4.to_string())
            .replace("$SHARED", &self.shared.to_string())
            .replace("$COLS", &self.cols.to_string())
    }
}

/// The sorted update kernel for rows of `dp4` vec4s.
fn sorted_source(dp4: u32) -> String {
    let cw = (dp4 as usize).min(SORTED_THREADS);
    format!("{UPDATE_PARAMS_WGSL}\n{FIXED96_WGSL}\n{SORTED_WGSL}")
        .replace("$DP4", &dp4.to_string())
        .replace("$CW", &cw.to_string())
        .replace("$RL", &(SORTED_THREADS / cw).to_string())
}

/// The three kernels that list a chunk's rows cluster by cluster.
#[derive(Debug, Clone, Copy)]
pub enum BucketStep {
    Count,
    Scan,
    Scatter,
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
    sorted: HashMap<u32, wgpu::ComputePipeline>,
    buckets: Option<[wgpu::ComputePipeline; 3]>,
    reduce: Option<wgpu::ComputePipeline>,
}

pub fn build(device: &wgpu::Device, label: &str, source: String) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    pipeline(device, label, &module)
}

/// Like [`build`], without the index clamps and loop counters that wgpu otherwise adds: in the
/// assign and update kernels they cost as much as the arithmetic, and every index there is in
/// range by construction (rows are checked against `rows`, centroids against `k`, labels are
/// below `k`, and workgroup arrays are indexed within their constant sizes).
fn build_unchecked(device: &wgpu::Device, label: &str, source: String) -> wgpu::ComputePipeline {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    // SAFETY: the kernels built here index only within their bindings, as argued above, and
    // their loops all have bounds fixed at dispatch; the lavapipe tests run them in every CI.
    let module = unsafe {
        device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
    };
    pipeline(device, label, &module)
}

fn pipeline(
    device: &wgpu::Device,
    label: &str,
    module: &wgpu::ShaderModule,
) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module,
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
            .or_insert_with(|| build_unchecked(device, "lakemeans assign", s.source()))
    }

    pub fn update(&mut self, device: &wgpu::Device, s: UpdateShape) -> &wgpu::ComputePipeline {
        self.update
            .entry(s)
            .or_insert_with(|| build_unchecked(device, "lakemeans update", s.source()))
    }

    pub fn sorted(&mut self, device: &wgpu::Device, dp4: u32) -> &wgpu::ComputePipeline {
        self.sorted.entry(dp4).or_insert_with(|| {
            build_unchecked(device, "lakemeans sorted update", sorted_source(dp4))
        })
    }

    pub fn bucket(&mut self, device: &wgpu::Device, step: BucketStep) -> &wgpu::ComputePipeline {
        let all = self.buckets.get_or_insert_with(|| {
            [
                build_unchecked(
                    device,
                    "lakemeans bucket count",
                    format!("{UPDATE_PARAMS_WGSL}\n{BUCKET_COUNT_WGSL}"),
                ),
                build_unchecked(
                    device,
                    "lakemeans bucket scan",
                    format!("{UPDATE_PARAMS_WGSL}\n{BUCKET_SCAN_WGSL}"),
                ),
                build_unchecked(
                    device,
                    "lakemeans bucket scatter",
                    format!("{UPDATE_PARAMS_WGSL}\n{BUCKET_SCATTER_WGSL}"),
                ),
            ]
        });
        &all[step as usize]
    }

    pub fn reduce(&mut self, device: &wgpu::Device) -> &wgpu::ComputePipeline {
        self.reduce
            .get_or_insert_with(|| build(device, "lakemeans reduce", REDUCE_WGSL.to_string()))
    }

    /// Forgets a pipeline whose creation failed, so a later call does not reuse it.
    pub fn clear(&mut self) {
        self.assign.clear();
        self.update.clear();
        self.sorted.clear();
        self.buckets = None;
        self.reduce = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_fit_the_smallest_workgroup_memory() {
        for dp4 in [1, 2, 3, 9, 33, 64, 75, 1000] {
            for k in [1, 4, 5, 8, 9, 32, 33, 64, 65, 5000] {
                let s = AssignShape::choose(dp4, k, 16384);
                assert_eq!((s.ty * s.rm) as usize, ROWS_PER_TILE);
                assert_eq!(s.tx * s.ty, 256);
                let bn = (s.tx * s.rn) as usize;
                let bytes = (ROWS_PER_TILE + bn + 2) * s.kc as usize * 16 + ROWS_PER_TILE * 12 + 16;
                assert_eq!(bytes, s.workgroup_bytes());
                assert!(bytes <= 16384, "{s:?} needs {bytes}");
                assert!(s.kc >= 1 && s.kc as usize <= dp4.min(MAX_KC));
            }
        }
    }

    #[test]
    fn register_tile_is_written_out_in_full() {
        let s = AssignShape::choose(64, 20000, 49152);
        assert_eq!((s.rm, s.rn, s.kc), (8, 8, 8));
        let src = s.source();
        for i in 0..8 {
            assert!(src.contains(&format!("let x{i} = xs[xb + {i}u * TY];")));
            assert!(src.contains(&format!("var bs{i} = inf;")));
            for j in 0..8 {
                assert!(src.contains(&format!("var a{i}_{j} = 0.0;")));
                assert!(src.contains(&format!("fma(x{i}.x, c{j}.x, a{i}_{j})")));
            }
        }
        assert!(!src.contains("a8_0"));
        for name in [
            "$BEST\n", "$ZERO\n", "$PRE\n", "$LOAD0\n", "$LOADN\n", "$RESET\n", "$STORE\n",
            "$MAC\n", "$FOLD\n", "$MERGE\n",
        ] {
            assert!(!src.contains(name), "{name} left in the source");
        }
    }

    #[test]
    fn sources_have_no_placeholders_left() {
        let a = AssignShape::choose(3, 7, 32768).source();
        let u = UpdateShape::choose(3, 7, 32768).source();
        let o = sorted_source(3);
        assert!(o.contains("const CW: u32 = 3u;") && o.contains("const RL: u32 = 21u;"));
        assert!(!o.contains('$') && o.contains("fn add96"));
        for name in [
            "$DP4", "$TX", "$TY", "$BM", "$BN", "$KC", "$SHARED", "$COLS",
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
