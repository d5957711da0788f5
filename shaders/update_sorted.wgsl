// Weighted per-cluster sums, weights and counts for large k, from rows grouped by label.
//
// When k is too large for workgroup-private sums, adding every (row, feature) term straight
// into global memory costs about three dependent atomics per term. Instead buckets.wgsl lists
// the chunk's rows cluster by cluster (`order`), and each workgroup walks SPAN consecutive
// entries of that list. Its threads keep 96-bit fixed-point sums in registers, one vec4
// column each, and add them to the global accumulators only when the cluster changes: about
// (rows / SPAN + k) flushes per feature instead of one per row. The terms and the integer
// arithmetic are those of update.wgsl, so the sums are bit-identical to its.
//
// `split`, `add96` and `add_global` come from fixed96.wgsl, which the host puts in front.

const DP4: u32 = $DP4u;
const THREADS: u32 = 64u;
const SPAN: u32 = 256u;                // entries of `order` per workgroup
const CW: u32 = $CWu;                  // threads across columns, min(DP4, THREADS)
const RL: u32 = $RLu;                  // threads across rows, each every RL-th entry

// `p`, the uniform at binding 0, is declared in update_params.wgsl, which the host puts in front.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> scale: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> order: array<u32>;
@group(0) @binding(6) var<storage, read_write> acc: array<atomic<u32>>;

var<workgroup> rows_s: array<u32, SPAN>;
var<workgroup> labs_s: array<u32, SPAN>;

// Adds the four column sums of cluster `j`, vec4 column `q`, to the global accumulators.
fn flush(j: u32, q: u32, s0: vec3<u32>, s1: vec3<u32>, s2: vec3<u32>, s3: vec3<u32>) {
    let e = (j * DP4 + q) * 12u;
    let z = vec3<u32>(0u);
    if (any(s0 != z)) {
        add_global(e, s0);
    }
    if (any(s1 != z)) {
        add_global(e + 3u, s1);
    }
    if (any(s2 != z)) {
        add_global(e + 6u, s2);
    }
    if (any(s3 != z)) {
        add_global(e + 9u, s3);
    }
}

@compute @workgroup_size(THREADS, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let p0 = wid.x * SPAN;
    let n = min(p.rows, p0 + SPAN) - min(p.rows, p0);
    for (var e = li; e < n; e += THREADS) {
        let r = order[p0 + e];
        rows_s[e] = r;
        labs_s[e] = labels[r];
    }
    workgroupBarrier();
    if (n == 0u) {
        return;
    }

    let lane = li / CW;
    if (lane < RL) {
        for (var q = li % CW; q < DP4; q += CW) {
            let sc = scale[q];
            let z = vec3<u32>(0u);
            var s0 = z;
            var s1 = z;
            var s2 = z;
            var s3 = z;
            var cur = labs_s[lane];
            for (var e = lane; e < n; e += RL) {
                let lab = labs_s[e];
                if (lab != cur) {
                    flush(cur, q, s0, s1, s2, s3);
                    s0 = z;
                    s1 = z;
                    s2 = z;
                    s3 = z;
                    cur = lab;
                }
                let row = rows_s[e];
                let v = round(x[row * DP4 + q] * w[row] * sc);
                if (v.x != 0.0) {
                    s0 = add96(s0, split(v.x));
                }
                if (v.y != 0.0) {
                    s1 = add96(s1, split(v.y));
                }
                if (v.z != 0.0) {
                    s2 = add96(s2, split(v.z));
                }
                if (v.w != 0.0) {
                    s3 = add96(s3, split(v.w));
                }
            }
            if (lane < n) {
                flush(cur, q, s0, s1, s2, s3);
            }
        }
    }

    // Weights and counts: one thread walks the span.
    if (li == 0u) {
        let wbase = p.k * DP4 * 4u;
        let cbase = wbase + p.k;
        var sw = vec3<u32>(0u);
        var cnt = 0u;
        var cur = labs_s[0];
        for (var e = 0u; e < n; e++) {
            let lab = labs_s[e];
            if (lab != cur) {
                add_global((wbase + cur) * 3u, sw);
                add_global((cbase + cur) * 3u, vec3<u32>(cnt, 0u, 0u));
                sw = vec3<u32>(0u);
                cnt = 0u;
                cur = lab;
            }
            let t = round(w[rows_s[e]] * p.wscale);
            if (t != 0.0) {
                sw = add96(sw, split(t));
            }
            cnt += 1u;
        }
        add_global((wbase + cur) * 3u, sw);
        add_global((cbase + cur) * 3u, vec3<u32>(cnt, 0u, 0u));
    }
}
