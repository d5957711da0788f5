// 96-bit fixed-point helpers shared by the update kernels (the host puts this file in front
// of them). Each kernel declares the accumulator binding `acc: array<atomic<u32>>` that
// `add_global` adds into; see update.wgsl for why the sums are fixed-point integers.

// The 96-bit two's-complement words of an integer-valued f32 with |v| < 2^63.
fn split(v: f32) -> vec3<u32> {
    let a = abs(v);
    // Both steps are exact: 2^-32 is a power of two, and a - hi * 2^32 lies in [0, 2^32)
    // on the grid of a's last bit, which needs at most 24 significant bits.
    let hi = floor(a * 2.3283064365386963e-10);
    let lo = a - hi * 4294967296.0;
    var m = vec3<u32>(u32(lo), u32(hi), 0u);
    if (v < 0.0) {
        m = ~m;
        m.x += 1u;
        if (m.x == 0u) {
            m.y += 1u;
            if (m.y == 0u) {
                m.z += 1u;
            }
        }
    }
    return m;
}

// Adds m to the global entry at word `b`, carrying between words (modulo 2^96).
fn add_global(b: u32, m: vec3<u32>) {
    var c1 = 0u;
    if (m.x != 0u) {
        let o = atomicAdd(&acc[b], m.x);
        if (o + m.x < o) {
            c1 = 1u;
        }
    }
    let mid = m.y + c1;
    var c2 = select(0u, 1u, mid < m.y);
    if (mid != 0u) {
        let o = atomicAdd(&acc[b + 1u], mid);
        if (o + mid < o) {
            c2 += 1u;
        }
    }
    let top = m.z + c2;
    if (top != 0u) {
        atomicAdd(&acc[b + 2u], top);
    }
}

// s + m modulo 2^96, in registers.
fn add96(s: vec3<u32>, m: vec3<u32>) -> vec3<u32> {
    let lo = s.x + m.x;
    let t = s.y + m.y;
    let mid = t + select(0u, 1u, lo < s.x);
    let c2 = select(0u, 1u, t < s.y) + select(0u, 1u, mid < t);
    return vec3<u32>(lo, mid, s.z + m.z + c2);
}
