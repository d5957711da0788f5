// Folds the per-workgroup inertia partials into THREADS compensated sums.
//
// Thread t adds partials t, t + THREADS, t + 2 THREADS, ... in that order with Kahan
// summation and writes its (sum, compensation) pair; the host adds the THREADS pairs in f64.
// Every order is fixed, so the result is reproducible.

const THREADS: u32 = 256u;

struct Params {
    count: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec2<f32>, THREADS>;

@compute @workgroup_size(THREADS, 1, 1)
fn main(@builtin(local_invocation_index) li: u32) {
    var s = 0.0;
    var c = 0.0;
    for (var i = li; i < p.count; i += THREADS) {
        let y = partial[i] - c;
        let t = s + y;
        c = (t - s) - y;
        s = t;
    }
    out[li] = vec2<f32>(s, c);
}
