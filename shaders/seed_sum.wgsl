// Per-block masses of the k-means++ score pass: sum of w(x) m(x, c) over the rows of a block
// piece (a seeding block, or the part of one inside this chunk), for every candidate c.
//
// The CPU sums these in f64. WGSL has no f64, so each workgroup keeps an unevaluated pair
// (hi, lo) of f32s: every product w m is split exactly into p + e with a fused multiply-add,
// p is added with Neumaier's compensated sum and e joins the compensation. The 256 per-thread
// pairs are merged in a fixed tree with exact two-sums. The result carries about 45 bits,
// far closer to the f64 sum than the rounding of the distances themselves; the host adds
// hi + lo and the pieces of a block in f64. Every order is fixed, so runs are reproducible.

const THREADS: u32 = 256u;

struct Params {
    rows: u32, // rows in this chunk
    n: u32,    // candidates
    pieces: u32,
    out_base: u32, // index of this chunk's first piece among all pieces
}

@group(0) @binding(0) var<uniform> p: Params;
// (first row in the chunk, rows) per piece.
@group(0) @binding(1) var<storage, read> pieces: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> vals: array<f32>;
// (hi, lo) per piece and candidate: out[piece * n + candidate].
@group(0) @binding(4) var<storage, read_write> out: array<vec2<f32>>;

var<workgroup> hi: array<f32, THREADS>;
var<workgroup> lo: array<f32, THREADS>;

// a + b = s + e exactly (Knuth's two-sum).
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    return vec2<f32>(s, e);
}

@compute @workgroup_size(THREADS, 1, 1)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let piece = pieces[wid.x];
    let t = wid.y;
    var s = 0.0;
    var c = 0.0;
    for (var i = li; i < piece.y; i += THREADS) {
        let row = piece.x + i;
        let a = w[row];
        let b = vals[t * p.rows + row];
        let prod = a * b;
        let err = fma(a, b, -prod);
        let q = two_sum(s, prod);
        s = q.x;
        c = c + (q.y + err);
    }
    hi[li] = s;
    lo[li] = c;
    workgroupBarrier();
    for (var half = THREADS / 2u; half > 0u; half = half / 2u) {
        if (li < half) {
            let q = two_sum(hi[li], hi[li + half]);
            hi[li] = q.x;
            lo[li] = lo[li] + lo[li + half] + q.y;
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        out[(p.out_base + wid.x) * p.n + t] = vec2<f32>(hi[0], lo[0]);
    }
}
