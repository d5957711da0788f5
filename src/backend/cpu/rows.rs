//! The few-centroid kernel on AVX2: eight rows per vector.
//!
//! With centroids in lanes ([`super::Kernel::Lanes`]), k = 10 fills 10 of 16 lanes, and every
//! row ends in a horizontal minimum, a mask and a bit scan. Here the vectors hold eight rows
//! instead: each block of eight rows is transposed once (one vector per feature), every
//! centroid's feature is broadcast, and the running minimum and its index are plain lane-wise
//! compares and blends. No lane is wasted at any k, and a row's score is built up exactly as in
//! the other kernels (⟨x, c⟩ by fused multiply-adds in feature order, then ‖c‖² − 2⟨x, c⟩), so
//! the labels are the same bits.
//!
//! The centroids are scanned in groups of at most [`MAX_GROUP`], whose accumulators stay in
//! registers while the features stream past. The distance to the winner and the update are then
//! computed row by row in the rows' own layout, as [`super::Pass`]'s settle does, so every kernel
//! gives the same bits; the eight distances of a batch are reduced together.
//!
//! AVX-512 machines run this kernel too (they have AVX2): sixteen-row vectors would need a
//! 16 × 16 transpose for little gain at these sizes.

use std::arch::x86_64::*;

use super::x86::{Avx2, diff_sq8};
use super::{BlockRows, Partial, Pass};

/// Most centroids whose accumulators stay in registers (16 vector registers on AVX2).
const MAX_GROUP: usize = 12;
/// Most centroids the kernel takes: measured faster than the lane kernel up to 64 and than the
/// panels at 96; at 128 and above the panels are as fast.
pub const MAX_K: usize = 96;
/// Most features: the transposed batch lives in a fixed stack buffer.
pub const MAX_DIM: usize = 128;

/// Centroids laid out for the kernel: `ct[t * padded + j]` = feature t of centroid j, in
/// `groups` groups of `group` (padding centroids are zero with norm +∞, so they never win).
pub struct Cols {
    group: usize,
    padded: usize,
    ct: Vec<f32>,
    norms: Vec<f32>,
}

impl Cols {
    pub fn new(centroids: &[f32], k: usize, dim: usize) -> Cols {
        let groups = k.div_ceil(MAX_GROUP).max(1);
        let group = k.div_ceil(groups).max(1);
        let padded = groups * group;
        let mut ct = vec![0.0f32; dim * padded];
        let mut norms = vec![f32::INFINITY; padded];
        for (j, c) in centroids.chunks_exact(dim).take(k).enumerate() {
            for (t, &v) in c.iter().enumerate() {
                ct[t * padded + j] = v;
            }
            norms[j] = super::sq_norm(c);
        }
        Cols {
            group,
            padded,
            ct,
            norms,
        }
    }
}

/// The whole-block pass.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `pass.dim <= MAX_DIM` and `pass.k <= MAX_K`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn block(pass: &Pass, cols: &Cols, mut b: BlockRows) -> Partial {
    let mut part = Partial::zero(pass.k, pass.dim, pass.update, b.w.is_none());
    // SAFETY: compiled for AVX2 and FMA; the caller keeps the shape within the limits.
    unsafe {
        match cols.group {
            1 => run::<1>(pass, cols, &mut b, &mut part),
            2 => run::<2>(pass, cols, &mut b, &mut part),
            3 => run::<3>(pass, cols, &mut b, &mut part),
            4 => run::<4>(pass, cols, &mut b, &mut part),
            5 => run::<5>(pass, cols, &mut b, &mut part),
            6 => run::<6>(pass, cols, &mut b, &mut part),
            7 => run::<7>(pass, cols, &mut b, &mut part),
            8 => run::<8>(pass, cols, &mut b, &mut part),
            9 => run::<9>(pass, cols, &mut b, &mut part),
            10 => run::<10>(pass, cols, &mut b, &mut part),
            11 => run::<11>(pass, cols, &mut b, &mut part),
            _ => run::<12>(pass, cols, &mut b, &mut part),
        }
    }
    part.finish(pass.dim);
    part
}

/// A row of zeros that short batches read in place of missing rows.
static ZEROS: [f32; MAX_DIM] = [0.0; MAX_DIM];

/// # Safety
/// As [`block`], with `G == cols.group`.
#[inline(always)]
unsafe fn run<const G: usize>(pass: &Pass, cols: &Cols, b: &mut BlockRows, part: &mut Partial) {
    let (dim, rows) = (pass.dim, b.labels.len());
    assert!(dim <= MAX_DIM && cols.group == G && cols.ct.len() == dim * cols.padded);
    let full = dim / 8;
    unsafe {
        let tail = super::x86::tail_mask(dim % 8);
        let minus2 = _mm256_set1_ps(-2.0);
        let mut xt = [_mm256_setzero_ps(); MAX_DIM];
        let mut i = 0;
        while i < rows {
            let n = (rows - i).min(8);
            let xp: [*const f32; 8] = std::array::from_fn(|r| {
                if r < n {
                    b.x.as_ptr().add((i + r) * dim)
                } else {
                    ZEROS.as_ptr()
                }
            });
            // Transpose the batch: xt[t] holds feature t of the eight rows. The `from_fn`
            // closures here and below call intrinsics and are inlined at this size (plain
            // loops measured 4% slower). Out of line, a closure is built without AVX2 and every
            // intrinsic in it becomes a call, 3 to 5 times slower: after growing this function,
            // look for calls to `core::array::try_from_fn` in its disassembly.
            for q in 0..dim.div_ceil(8) {
                let r8: [__m256; 8] = std::array::from_fn(|r| {
                    if q < full {
                        _mm256_loadu_ps(xp[r].add(8 * q))
                    } else {
                        _mm256_maskload_ps(xp[r].add(8 * q), tail)
                    }
                });
                let t8 = transpose8(r8);
                xt[8 * q..8 * q + 8].copy_from_slice(&t8);
            }
            // Running minimum over the centroids in index order; strict `<` keeps the lowest
            // index on ties, as the other kernels do.
            let mut best = _mm256_set1_ps(f32::INFINITY);
            let mut bi = _mm256_setzero_si256();
            for g0 in (0..cols.padded).step_by(G) {
                let mut acc = [_mm256_setzero_ps(); G];
                let mut c = cols.ct.as_ptr().add(g0);
                for xv in &xt[..dim] {
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(*xv, _mm256_broadcast_ss(&*c.add(j)), *a);
                    }
                    c = c.add(cols.padded);
                }
                for (j, a) in acc.iter().enumerate() {
                    let s = _mm256_fmadd_ps(minus2, *a, _mm256_broadcast_ss(&cols.norms[g0 + j]));
                    let lt = _mm256_cmp_ps::<_CMP_LT_OQ>(s, best);
                    best = _mm256_blendv_ps(best, s, lt);
                    bi = _mm256_blendv_epi8(
                        bi,
                        _mm256_set1_epi32((g0 + j) as i32),
                        _mm256_castps_si256(lt),
                    );
                }
            }
            let mut lab = [0u32; 8];
            _mm256_storeu_si256(lab.as_mut_ptr() as *mut __m256i, bi);
            // Each row against its winner in the rows' layout, as `Pass::settle` does, eight
            // distances reduced together; then recorded as `settle` records them.
            // Short batches read the zero row against centroid 0 (their lanes are not used).
            let diffs: [__m256; 8] = std::array::from_fn(|r| {
                diff_sq8(xp[r], pass.cents.as_ptr().add(lab[r] as usize * dim), dim)
            });
            let dv = reduce8(diffs);
            if n == 8 && b.w.is_none() {
                record8(pass, b, part, i, bi, &lab, dv);
            } else {
                let mut dist = [0.0f32; 8];
                _mm256_storeu_ps(dist.as_mut_ptr(), dv);
                for r in 0..n {
                    pass.record::<Avx2>(b, part, i + r, lab[r] as usize, dist[r]);
                }
            }
            i += 8;
        }
    }
}

/// [`Pass::record`] for a whole batch of eight unweighted rows from `i`, whose labels are
/// `bi` (and `lab`) and distances `dv`: the label changes, labels, distances and inertia
/// lanes eight at a time, the cluster sums row by row. The same operations in the same
/// order per cluster and lane, so the same bits.
///
/// # Safety
/// AVX2 must be enabled in the caller; rows `i..i + 8` exist in `b`.
#[inline(always)]
unsafe fn record8(
    pass: &Pass,
    b: &mut BlockRows,
    part: &mut Partial,
    i: usize,
    bi: __m256i,
    lab: &[u32; 8],
    dv: __m256,
) {
    let dim = pass.dim;
    unsafe {
        let at = b.labels.as_mut_ptr().add(i) as *mut __m256i;
        part.changed += if pass.first {
            8
        } else {
            let same = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(
                _mm256_loadu_si256(at),
                bi,
            )));
            8 - same.count_ones() as u64
        };
        _mm256_storeu_si256(at, bi);
        _mm256_storeu_ps(b.dists.as_mut_ptr().add(i), dv);
        // Lane r of the inertia takes row r's distance (times a weight of 1, exact).
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(dv));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(dv));
        let l = part.lanes.as_mut_ptr();
        _mm256_storeu_pd(l, _mm256_add_pd(_mm256_loadu_pd(l), lo));
        _mm256_storeu_pd(l.add(4), _mm256_add_pd(_mm256_loadu_pd(l.add(4)), hi));
        if pass.update {
            assert!(part.unit && part.sub.len() == pass.k * dim && part.sub_rows.len() == pass.k);
            // `Partial::add_row` for unweighted rows, by pointer and checked once per batch:
            // calling it per row measured 3-5% slower at 5M x 16, k = 10 and 5M x 8, k = 8.
            let (sub, counts) = (part.sub.as_mut_ptr(), part.sub_rows.as_mut_ptr());
            let x = b.x[i * dim..(i + 8) * dim].as_ptr();
            for (r, &j) in lab.iter().enumerate() {
                let j = (j as usize).min(pass.k - 1);
                *counts.add(j) += 1;
                super::x86::add8(sub.add(j * dim), x.add(r * dim), dim);
            }
            if (i + 8).is_multiple_of(super::SUB_ROWS) {
                part.fold(dim);
            }
        }
    }
}

/// Eight rows of eight values into eight vectors of one column each.
#[inline(always)]
pub(super) unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

/// Lane r = the sum of `p[r]`'s lanes, in the order of [`super::x86::tree8`]:
/// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
#[inline(always)]
unsafe fn reduce8(p: [__m256; 8]) -> __m256 {
    unsafe {
        let h0 = _mm256_hadd_ps(p[0], p[1]);
        let h1 = _mm256_hadd_ps(p[2], p[3]);
        let h2 = _mm256_hadd_ps(p[4], p[5]);
        let h3 = _mm256_hadd_ps(p[6], p[7]);
        let g0 = _mm256_hadd_ps(h0, h1);
        let g1 = _mm256_hadd_ps(h2, h3);
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(g0, g1),
            _mm256_permute2f128_ps::<0x31>(g0, g1),
        )
    }
}
