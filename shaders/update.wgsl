// Weighted per-cluster sums, total weights and member counts, reproducible bit for bit.
//
// Floating-point addition is not associative, so summing with atomics in whatever order the
// hardware schedules would change the low bits from run to run. Instead every term is turned
// into a 96-bit two's-complement fixed-point integer and added with 32-bit integer atomics
// and explicit carries. Integer addition is associative, so the final words are the exact sum
// of the rounded terms whatever the order, the chunking or the hardware.
//
// Term for cluster j, feature f: round(w * x_f * 2^e_f), where the host picks e_f so that the
// largest |w * x_f| in the data maps just below 2^62. Each term thus keeps 62 bits (far more
// than the 24 of an f32) and the 96-bit sum has room for 2^33 rows before it could overflow.
// Weights use their own scale; counts add the integer 1.
//
// Accumulator layout, three u32 words [low, mid, high] per entry:
//   sums    k * DP4 * 4 entries, cluster-major
//   weights k entries
//   counts  k entries
//
// Workgroup-private sums. When the accumulators fit in workgroup memory (SHARED > 0), each
// workgroup adds its rows into its own copy and then adds each non-zero entry once to the
// global one, which keeps contention off global memory. When all k * d sums do not fit, the
// features are cut into SLICES column slices of COLS vec4 columns, and each workgroup takes
// one slice of one row range (workgroup id = row range * SLICES + slice); slice 0 also adds
// the weights and counts. Only when even one vec4 column per cluster does not fit (very
// large k) do rows add straight into the global accumulators.
//
// Workgroup copy layout: sums k * COLS * 4 entries, cluster-major, then weights, then counts.
//
// `split` and `add_global` come from fixed96.wgsl, which the host puts in front of this file.

const DP4: u32 = $DP4u;
const SHARED: u32 = $SHAREDu; // entries held in workgroup memory, 0 for the direct path
const COLS: u32 = $COLSu;     // vec4 columns per slice (DP4 on the direct path)
const SLICES: u32 = (DP4 + COLS - 1u) / COLS;
const THREADS: u32 = 256u;

// `p`, the uniform at binding 0, is declared in update_params.wgsl, which the host puts in front.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> scale: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> acc: array<atomic<u32>>;

var<workgroup> wacc: array<atomic<u32>, SHARED * 3u + 3u>;

// Adds m to the workgroup copy's entry at word `b`, carrying like `add_global`.
fn add_local(b: u32, m: vec3<u32>) {
    var c1 = 0u;
    if (m.x != 0u) {
        let o = atomicAdd(&wacc[b], m.x);
        if (o + m.x < o) {
            c1 = 1u;
        }
    }
    let mid = m.y + c1;
    var c2 = select(0u, 1u, mid < m.y);
    if (mid != 0u) {
        let o = atomicAdd(&wacc[b + 1u], mid);
        if (o + mid < o) {
            c2 += 1u;
        }
    }
    let top = m.z + c2;
    if (top != 0u) {
        atomicAdd(&wacc[b + 2u], top);
    }
}

fn add(entry: u32, m: vec3<u32>) {
    if (SHARED > 0u) {
        add_local(entry * 3u, m);
    } else {
        add_global(entry * 3u, m);
    }
}

// The global entry of workgroup-copy entry e for the slice starting at vec4 column q0, or
// 0xffffffff for the padding columns of a short last slice.
fn global_entry(e: u32, k: u32, q0: u32) -> u32 {
    let sums = k * COLS * 4u;
    if (e >= sums) {
        return k * DP4 * 4u + (e - sums);
    }
    let j = e / (COLS * 4u);
    let q = q0 + (e / 4u) % COLS;
    if (q >= DP4) {
        return 0xffffffffu;
    }
    return (j * DP4 + q) * 4u + e % 4u;
}

@compute @workgroup_size(THREADS, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let k = p.k;
    if (SHARED > 0u) {
        for (var e = li; e < SHARED * 3u; e += THREADS) {
            atomicStore(&wacc[e], 0u);
        }
        workgroupBarrier();
    }

    let slice = wid.x % SLICES;
    let q0 = slice * COLS;
    let ncols = min(COLS, DP4 - q0);
    // Slice 0 also adds each row's weight and count, in one more slot per row.
    let slots = ncols + select(0u, 1u, slice == 0u);
    let r0 = (wid.x / SLICES) * p.rows_per_wg;
    let r1 = min(p.rows, r0 + p.rows_per_wg);
    // Where weights and counts start, in whichever copy the adds go to.
    let wbase = k * select(DP4, COLS, SHARED > 0u) * 4u;
    let cbase = wbase + k;
    if (r0 < r1) {
        let work = (r1 - r0) * slots;
        for (var f = li; f < work; f += THREADS) {
            let row = r0 + f / slots;
            let q = f % slots;
            let lab = labels[row];
            let wr = w[row];
            if (q < ncols) {
                let v = round(x[row * DP4 + q0 + q] * wr * scale[q0 + q]);
                var e0 = (lab * DP4 + q0 + q) * 4u;
                if (SHARED > 0u) {
                    e0 = (lab * COLS + q) * 4u;
                }
                for (var c = 0u; c < 4u; c++) {
                    if (v[c] != 0.0) {
                        add(e0 + c, split(v[c]));
                    }
                }
            } else {
                let t = round(wr * p.wscale);
                if (t != 0.0) {
                    add(wbase + lab, split(t));
                }
                add(cbase + lab, vec3<u32>(1u, 0u, 0u));
            }
        }
    }

    if (SHARED > 0u) {
        workgroupBarrier();
        for (var e = li; e < SHARED; e += THREADS) {
            let m = vec3<u32>(
                atomicLoad(&wacc[e * 3u]),
                atomicLoad(&wacc[e * 3u + 1u]),
                atomicLoad(&wacc[e * 3u + 2u]),
            );
            let g = global_entry(e, k, q0);
            if (g != 0xffffffffu && any(m != vec3<u32>(0u))) {
                add_global(g * 3u, m);
            }
        }
    }
}
