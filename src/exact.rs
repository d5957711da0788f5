//! Exact sums of `f64` values, so that partial sums from any split of the rows (Spark
//! partitions of any number and order) reduce to the same bits.
//!
//! A finite `f64` is `m · 2^e` with an integer `m < 2^53` and `-1074 ≤ e ≤ 971`: a fixed-point
//! number with 2098 bits covers every one. [`ExactSum`] keeps that number as 32-bit digits held
//! in `i64` words, so an addition touches at most three words and 2^30 additions fit before a
//! carry must be propagated. The sum is exact; only [`ExactSum::value`] rounds, and it rounds
//! the same exact number the same way whatever the order of the additions was.
//!
//! Products of two `f32` values (a weight and a feature, a weight and a squared distance) are
//! exact in `f64`, so a weighted sum over rows of `f32` data is exact end to end.

use crate::error::{Error, Result};

/// 32-bit digits from 2^-1074 up, with room for the carries of 2^30 · 2^1024.
const DIGITS: usize = 68;
/// Additions between carry propagations (each adds below 2^32 to a word).
const BETWEEN_CARRIES: u32 = 1 << 30;

/// An exact running sum of `f64` values.
#[derive(Clone, Debug)]
pub struct ExactSum {
    digits: [i64; DIGITS],
    pending: u32,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            digits: [0; DIGITS],
            pending: 0,
        }
    }
}

impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = (self.clone(), other.clone());
        a.carry();
        b.carry();
        a.digits == b.digits
    }
}

impl ExactSum {
    /// Adds `v` exactly. Not finite values are the caller's to reject (rows are checked on
    /// read), so they are ignored here rather than poisoning the sum.
    #[inline]
    pub fn add(&mut self, v: f64) {
        if v == 0.0 || !v.is_finite() {
            return;
        }
        let bits = v.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i64;
        let frac = bits & ((1 << 52) - 1);
        let (m, pos) = if exp == 0 {
            (frac, 0)
        } else {
            (frac | (1 << 52), (exp - 1) as usize)
        };
        let (word, shift) = (pos / 32, pos % 32);
        let wide = (m as u128) << shift;
        let sign = if v < 0.0 { -1 } else { 1 };
        // All three words, zero or not: a branch per word costs more than the adds, as the
        // digits of row data are as good as random. `word + 2 < DIGITS` as pos ≤ 2046.
        for i in 0..3 {
            self.digits[word + i] += sign * ((wide >> (32 * i)) & 0xffff_ffff) as i64;
        }
        self.pending += 1;
        if self.pending == BETWEEN_CARRIES {
            self.carry();
        }
    }

    /// Adds another exact sum.
    pub fn merge(&mut self, other: &ExactSum) {
        let mut o = other.clone();
        o.carry();
        self.carry();
        for (a, b) in self.digits.iter_mut().zip(o.digits) {
            *a += b;
        }
        self.pending = 1;
    }

    /// Propagates carries: every word but the top one ends in `[0, 2^32)`, which makes the
    /// representation of a value unique.
    fn carry(&mut self) {
        for i in 0..DIGITS - 1 {
            let c = self.digits[i] >> 32;
            self.digits[i] -= c << 32;
            self.digits[i + 1] += c;
        }
        self.pending = 0;
    }

    /// The sum rounded to `f64` (infinite if it overflows).
    pub fn value(&self) -> f64 {
        let mut s = self.clone();
        s.carry();
        // A negative sum carries into a negative top word; round its magnitude instead.
        let negative = s.digits[DIGITS - 1] < 0;
        if negative {
            s.digits.iter_mut().for_each(|d| *d = -*d);
            s.carry();
        }
        // Most significant first, so the small words land on an already large total.
        let mut acc = 0.0f64;
        for (i, &d) in s.digits.iter().enumerate().rev() {
            if d != 0 {
                acc += d as f64 * pow2(32 * i as i32 - 1074);
            }
        }
        if negative { -acc } else { acc }
    }

    /// A compact encoding: the first non-zero word, the count, then the words (little-endian).
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut s = self.clone();
        s.carry();
        let lo = s.digits.iter().position(|&d| d != 0).unwrap_or(0);
        let hi = s.digits.iter().rposition(|&d| d != 0).map_or(0, |h| h + 1);
        let n = hi.saturating_sub(lo);
        out.push(lo as u8);
        out.push(n as u8);
        for d in &s.digits[lo..lo + n] {
            out.extend_from_slice(&d.to_le_bytes());
        }
    }

    /// Reads what [`ExactSum::write`] wrote from the front of `bytes`, and moves past it.
    pub fn read(bytes: &mut &[u8]) -> Result<ExactSum> {
        let bad = || Error::Input("corrupt exact-sum encoding".into());
        if bytes.len() < 2 {
            return Err(bad());
        }
        let (lo, n, rest) = (bytes[0] as usize, bytes[1] as usize, &bytes[2..]);
        if lo + n > DIGITS || rest.len() < 8 * n {
            return Err(bad());
        }
        let mut s = ExactSum::default();
        for (i, w) in rest[..8 * n].chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            s.digits[lo + i] = i64::from_le_bytes(b);
        }
        *bytes = &rest[8 * n..];
        Ok(s)
    }
}

/// 2^e, built from bits (subnormal below -1022, infinite above 1023).
fn pow2(e: i32) -> f64 {
    if e > 1023 {
        f64::INFINITY
    } else if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(v: &[f64]) -> ExactSum {
        let mut s = ExactSum::default();
        v.iter().for_each(|&x| s.add(x));
        s
    }

    #[test]
    fn the_order_of_additions_does_not_matter() {
        let mut rng = crate::rng::Rng::derive(1, 2);
        let v: Vec<f64> = (0..10_000)
            .map(|i| {
                let m = rng.uniform() - 0.5;
                m * pow2(i % 90 - 45)
            })
            .collect();
        let a = sum(&v);
        let mut rev = v.clone();
        rev.reverse();
        let b = sum(&rev);
        let (mut c, d) = (sum(&v[..3_333]), sum(&v[3_333..]));
        c.merge(&d);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.value().to_bits(), c.value().to_bits());
        let naive: f64 = v.iter().sum();
        assert!((a.value() - naive).abs() <= 1e-9 * v.iter().map(|x| x.abs()).sum::<f64>());
    }

    #[test]
    fn cancellation_is_exact() {
        let s = sum(&[1e300, 1.0, -1e300, 1e-300, f64::MIN_POSITIVE / 4.0]);
        assert_eq!(s.value(), 1.0 + 1e-300);
        // 0.1 + 0.2 - 0.3 of the f64 values is exactly 2^-55.
        assert_eq!(sum(&[0.1, 0.2, -0.3]).value(), pow2(-55));
        assert_eq!(sum(&[-2.5, 0.5]).value(), -2.0);
        assert_eq!(sum(&[-1e-300, -3.0]).value(), -3.0);
        assert_eq!(sum(&[-f64::MAX, -f64::MAX]).value(), f64::NEG_INFINITY);
        assert_eq!(sum(&[5e-324, 5e-324]).value(), 1e-323);
    }

    #[test]
    fn encoding_round_trips() {
        let a = sum(&[3.25, -1e-10, 7e20]);
        let mut buf = Vec::new();
        a.write(&mut buf);
        ExactSum::default().write(&mut buf);
        let mut r: &[u8] = &buf;
        assert_eq!(ExactSum::read(&mut r).unwrap(), a);
        assert_eq!(ExactSum::read(&mut r).unwrap().value(), 0.0);
        assert!(r.is_empty());
        assert!(ExactSum::read(&mut r).is_err());
    }
}
