// buckets[j] = rows labelled below j: an exclusive prefix sum of the counts in place, by one
// workgroup whose threads each own a contiguous run of clusters.

const THREADS: u32 = 256u;

// `p`, the uniform at binding 0, is declared in update_params.wgsl, which the host puts in front.
@group(0) @binding(1) var<storage, read_write> buckets: array<u32>;

var<workgroup> part: array<u32, THREADS>;

@compute @workgroup_size(THREADS, 1, 1)
fn main(@builtin(local_invocation_index) li: u32) {
    let per = (p.k + THREADS - 1u) / THREADS;
    let b0 = min(p.k, li * per);
    let b1 = min(p.k, b0 + per);
    var own = 0u;
    for (var j = b0; j < b1; j++) {
        own += buckets[j];
    }
    part[li] = own;
    workgroupBarrier();
    // Inclusive scan of the 256 run totals (Hillis-Steele).
    for (var off = 1u; off < THREADS; off <<= 1u) {
        var v = 0u;
        if (li >= off) {
            v = part[li - off];
        }
        workgroupBarrier();
        part[li] += v;
        workgroupBarrier();
    }
    var run = part[li] - own;
    for (var j = b0; j < b1; j++) {
        let c = buckets[j];
        buckets[j] = run;
        run += c;
    }
}
