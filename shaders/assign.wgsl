// Fused distance + argmin for one chunk of rows.
//
// For a row x and centroid c, ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2. The ||x||^2 term is the
// same for every centroid, so the argmin only needs the score s(x, c) = ||c||^2 - 2 x.c, which
// is a matrix product X C^T plus a per-column offset. This kernel computes it like a tiled
// GEMM: a workgroup owns BM rows, walks the centroids in tiles of BN, stages KC vec4 columns of
// both operands in workgroup memory per step, and each thread keeps an RM x RN register tile
// of dot products. After each centroid tile the thread folds its RN scores into a running
// (best score, index) per row, so the n x k score matrix never reaches memory.
//
// The register tile is written out by the host as scalar variables (the `$` blocks below), so
// it lives in registers whatever the driver's compiler decides about unrolling arrays; each
// thread then issues RM + RN vec4 loads from workgroup memory per 4 * RM * RN fused
// multiply-adds.
//
// Ties go to the lowest centroid index: every thread scans its centroids in increasing index
// order with a strict `<`, and the cross-thread merge breaks equal scores by index.
//
// The score suffers cancellation when ||x|| >> ||x - c||, so the winner's distance is then
// recomputed exactly as sum((x - c)^2); that value is what gets stored and summed.
//
// The host replaces the `$NAME` tokens below to specialise the kernel for d and k.

const DP4: u32 = $DP4u;  // row length in vec4 (d padded with zeros to a multiple of 4)
const TX: u32 = $TXu;    // threads across centroids
const TY: u32 = $TYu;    // threads across rows
const KC: u32 = $KCu;    // vec4 columns staged per step
const BM: u32 = $BMu;    // rows per workgroup, TY * RM (a power of two: the inertia tree needs it)
const BN: u32 = $BNu;    // centroids per tile, TX * RN
const THREADS: u32 = TX * TY;
// Staged tiles are stored column-major, [column][row], with one spare vec4 per column: the
// inner loop then reads consecutive vec4s across lanes, and the row-major staging writes hit
// distinct banks.
const XS: u32 = BM + 1u;
const CS: u32 = BN + 1u;
const STAGES: u32 = (DP4 + KC - 1u) / KC;
const NO_INDEX: u32 = 0xffffffffu;

struct Params {
    rows: u32,      // rows in this chunk
    k: u32,         // centroids
    first: u32,     // 1 on the first pass: every row counts as changed
    tile_base: u32, // global index of this chunk's first workgroup (slot in `partial`)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> cent: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> cnorm: array<f32>;
@group(0) @binding(5) var<storage, read_write> labels: array<u32>;
@group(0) @binding(6) var<storage, read_write> dist: array<f32>;
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;
// Rows whose label changed, as a 64-bit counter [low, high].
@group(0) @binding(8) var<storage, read_write> changed: array<atomic<u32>, 2>;

var<workgroup> xs: array<vec4<f32>, XS * KC>;
var<workgroup> cs: array<vec4<f32>, CS * KC>;
var<workgroup> win_s: array<f32, BM>;
var<workgroup> win_i: array<u32, BM>;
var<workgroup> rowsum: array<f32, BM>;
var<workgroup> nchanged: atomic<u32>;

// Keeps (s, i) in (best score, index) when it is better: a lower score, or an equal one with a
// lower index.
fn better(s: f32, i: u32, bs: f32, bi: u32) -> bool {
    return s < bs || (s == bs && i < bi);
}

@compute @workgroup_size(TX, TY, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let tx = lid.x;
    let ty = lid.y;
    let row0 = wid.x * BM;
    let inf = bitcast<f32>(0x7f800000u);
    if (li == 0u) {
        atomicStore(&nchanged, 0u);
    }
    if (li < BM) {
        win_s[li] = inf;
        win_i[li] = NO_INDEX;
    }

    // Per row i of this thread: best score bs_i and its centroid bi_i.
$BEST
    // a_i_j = x_(row ty + i*TY) . c_(c0 + tx + j*TX); rows and centroids are interleaved
    // across threads so neighbouring threads read neighbouring tile entries.
$ZERO
    // The work is a sequence of steps, STAGES per centroid tile. Each thread stages the same
    // entries of every step (gx_i, gc_j: tile entry r, column q), and loads the next step's
    // from global memory into registers while it multiplies the current one, so the loads'
    // latency hides behind the arithmetic.
$PRE
    let ntiles = (p.k + BN - 1u) / BN;
    let nsteps = ntiles * STAGES;
$LOAD0
    for (var s = 0u; s < nsteps; s++) {
        let st = s % STAGES;
        let c0 = (s / STAGES) * BN;
        if (st == 0u) {
$RESET
        }
$STORE
        workgroupBarrier();
        if (s + 1u < nsteps) {
$LOADN
        }
        for (var q = 0u; q < KC; q++) {
            let xb = q * XS + ty;
            let cb = q * CS + tx;
$MAC
        }
        workgroupBarrier();
        if (st == STAGES - 1u) {
$FOLD
        }
    }

    // Merge the TX partial winners of each row; the rule in `better` makes the result
    // independent of the merge order.
    workgroupBarrier();
    for (var m = 0u; m < TX; m++) {
        if (tx == m) {
$MERGE
        }
        workgroupBarrier();
    }

    // Exact distance of each row to its winner, the label bookkeeping, and w * dist.
    if (li < BM) {
        let row = row0 + li;
        var wd = 0.0;
        if (row < p.rows) {
            var b = win_i[li];
            // Only reachable when every score is NaN or +inf (non-finite input).
            if (b >= p.k) {
                b = 0u;
            }
            var d = 0.0;
            for (var q = 0u; q < DP4; q++) {
                let df = x[row * DP4 + q] - cent[b * DP4 + q];
                d += dot(df, df);
            }
            dist[row] = d;
            if (p.first != 0u || labels[row] != b) {
                atomicAdd(&nchanged, 1u);
            }
            labels[row] = b;
            wd = w[row] * d;
        }
        rowsum[li] = wd;
    }
    workgroupBarrier();

    // Pairwise tree over the BM rows: a fixed order, so the partial is reproducible.
    for (var s = BM / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            rowsum[li] += rowsum[li + s];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        partial[p.tile_base + wid.x] = rowsum[0];
        let nc = atomicLoad(&nchanged);
        if (nc != 0u) {
            let old = atomicAdd(&changed[0], nc);
            if (old + nc < old) {
                atomicAdd(&changed[1], 1u);
            }
        }
    }
}
