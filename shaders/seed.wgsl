// The k-means++ score pass: every candidate of a step against one chunk of rows at once.
//
// For a row x with D(x), its squared distance to the nearest kept centroid, and a candidate c:
//
//   d(x, c) = max(0, (||x||^2 + ||c||^2) - 2 x.c)
//   m(x, c) = min(D(x), d(x, c))
//
// written to out[c * rows + x]; keeping candidate c later copies that column over D, so the
// winner's distances are never computed twice. seed_sum.wgsl adds w(x) m(x, c) per block.
//
// ||x||^2 and x.c are summed feature by feature in index order, the order the CPU kernel and
// the reference use; the padding features are zero and add nothing. ||c||^2 comes from the
// host, summed in that order too. What may still differ from the CPU is contraction: a
// compiler is free to fuse a multiply and an add here, which moves a result by an ulp.
//
// One thread per row; the candidates (a few, at most 16 per pass in practice) are read by
// every thread from the same addresses, so they stay in cache.

struct Params {
    rows: u32,  // rows in this chunk
    n: u32,     // candidates
    dp4: u32,   // row length in vec4 (d padded with zeros to a multiple of 4)
    fresh: u32, // 1 when no centroid is kept yet: D is +inf
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> cand: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cnorm: array<f32>;
@group(0) @binding(4) var<storage, read> closest: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Adds the four lanes of a * b to acc one after another.
fn dot_in_order(acc: f32, a: vec4<f32>, b: vec4<f32>) -> f32 {
    var s = acc;
    s = s + a.x * b.x;
    s = s + a.y * b.y;
    s = s + a.z * b.z;
    s = s + a.w * b.w;
    return s;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.dp4;
    var xn = 0.0;
    for (var i = 0u; i < p.dp4; i++) {
        let v = x[base + i];
        xn = dot_in_order(xn, v, v);
    }
    var dmin = bitcast<f32>(0x7f800000u); // +inf
    if (p.fresh == 0u) {
        dmin = closest[r];
    }
    for (var t = 0u; t < p.n; t++) {
        var acc = 0.0;
        for (var i = 0u; i < p.dp4; i++) {
            acc = dot_in_order(acc, x[base + i], cand[t * p.dp4 + i]);
        }
        let d = max((xn + cnorm[t]) - 2.0 * acc, 0.0);
        out[t * p.rows + r] = min(dmin, d);
    }
}
