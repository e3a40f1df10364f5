//! Eight field elements at once: five vectors of radix-`2^51` limbs, limb
//! `i` of every lane in vector `i`, multiplied with IFMA (52-bit
//! multiply-add: the low and high halves of each limb product).
//!
//! Bounds: inputs to a multiplication have limbs below `2^52` (IFMA reads
//! 52 bits); [`carry`] brings any limbs below `2^63` back under that, so
//! every sum and difference is carried before it is multiplied.

use std::arch::x86_64::*;

use super::super::{Fe, Loose};
use super::LANES;
use fiat_crypto::curve25519_64 as f;

/// Eight field elements, limb by limb.
#[derive(Clone, Copy)]
pub(super) struct F8(pub(super) [__m512i; 5]);

pub(super) fn lanes_of(limbs: [u64; LANES]) -> __m512i {
    // SAFETY: both are 64 plain bytes; every bit pattern is valid for each.
    unsafe { std::mem::transmute::<[u64; LANES], __m512i>(limbs) }
}

pub(super) fn limbs_of(v: __m512i) -> [u64; LANES] {
    // SAFETY: as in `lanes_of`.
    unsafe { std::mem::transmute::<__m512i, [u64; LANES]>(v) }
}

impl F8 {
    /// The same element in every lane.
    pub(super) fn splat(limbs: [u64; 5]) -> F8 {
        F8(limbs.map(|l| lanes_of([l; LANES])))
    }

    /// One element per lane.
    pub(super) fn of(elements: [&Fe; LANES]) -> F8 {
        F8(std::array::from_fn(|i| {
            lanes_of(elements.map(|e| e.0 .0[i]))
        }))
    }

    /// Each lane's element, reduced to fiat's tight bounds.
    pub(super) fn elements(&self) -> [Fe; LANES] {
        let limbs = self.0.map(limbs_of);
        std::array::from_fn(|lane| {
            // Limbs below 2^52 are within fiat's loose bounds.
            Loose(f::fiat_25519_loose_field_element(std::array::from_fn(
                |i| limbs[i][lane],
            )))
            .carry()
        })
    }
}

/// `b` in the lanes of `mask`, `a` in the others.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn blend(mask: __mmask8, a: &F8, b: &F8) -> F8 {
    F8(std::array::from_fn(|i| {
        _mm512_mask_blend_epi64(mask, a.0[i], b.0[i])
    }))
}

/// `-a` in the lanes of `mask`, `a` in the others.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn negate_where(mask: __mmask8, a: &F8) -> F8 {
    blend(mask, a, &sub(&F8::splat([0; 5]), a))
}

/// `4p` in radix `2^51`: added before a subtraction so that no limb goes
/// below zero (the subtrahend's limbs are below `2^52`).
const FOUR_P: [u64; 5] = [
    (1 << 53) - 76,
    (1 << 53) - 4,
    (1 << 53) - 4,
    (1 << 53) - 4,
    (1 << 53) - 4,
];

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn times19(x: __m512i) -> __m512i {
    _mm512_add_epi64(
        _mm512_add_epi64(x, _mm512_slli_epi64::<1>(x)),
        _mm512_slli_epi64::<4>(x),
    )
}

/// Limbs below `2^63` to limbs below `2^52` (the first) and `2^51` (the
/// rest), the same element modulo `p`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn carry(mut r: [__m512i; 5]) -> F8 {
    let mask = _mm512_set1_epi64((1 << 51) - 1);
    for i in 0..4 {
        let c = _mm512_srli_epi64::<51>(r[i]);
        r[i] = _mm512_and_si512(r[i], mask);
        r[i + 1] = _mm512_add_epi64(r[i + 1], c);
    }
    let c = _mm512_srli_epi64::<51>(r[4]);
    r[4] = _mm512_and_si512(r[4], mask);
    r[0] = _mm512_add_epi64(r[0], times19(c));
    F8(r)
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn add(a: &F8, b: &F8) -> F8 {
    carry(std::array::from_fn(|i| _mm512_add_epi64(a.0[i], b.0[i])))
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn sub(a: &F8, b: &F8) -> F8 {
    carry(std::array::from_fn(|i| {
        let four_p = _mm512_set1_epi64(FOUR_P[i] as i64);
        _mm512_sub_epi64(_mm512_add_epi64(a.0[i], four_p), b.0[i])
    }))
}

/// `a * b`. Limb products are split at bit 52: the low half weighs
/// `2^(51(i+j))`, the high half twice `2^(51(i+j+1))`; limbs past the
/// fifth wrap around times 19 (`2^255 = 19 mod p`). With inputs below
/// `2^52`, each sum is below `2^62` before [`carry`].
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn mul(a: &F8, b: &F8) -> F8 {
    let zero = _mm512_setzero_si512();
    let mut lo = [zero; 9];
    let mut hi = [zero; 9];
    for i in 0..5 {
        for j in 0..5 {
            lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a.0[i], b.0[j]);
            hi[i + j] = _mm512_madd52hi_epu64(hi[i + j], a.0[i], b.0[j]);
        }
    }
    reduce(lo, hi)
}

/// `a^2`: the ten cross products once, doubled, then the five squares
/// (15 limb products instead of 25). Each partial sum is bounded as in
/// [`mul`]: at most two cross products, doubled, and one square.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn square(a: &F8) -> F8 {
    let zero = _mm512_setzero_si512();
    let mut lo = [zero; 9];
    let mut hi = [zero; 9];
    for i in 0..5 {
        for j in i + 1..5 {
            lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a.0[i], a.0[j]);
            hi[i + j] = _mm512_madd52hi_epu64(hi[i + j], a.0[i], a.0[j]);
        }
    }
    for k in 0..9 {
        lo[k] = _mm512_slli_epi64::<1>(lo[k]);
        hi[k] = _mm512_slli_epi64::<1>(hi[k]);
    }
    for i in 0..5 {
        lo[2 * i] = _mm512_madd52lo_epu64(lo[2 * i], a.0[i], a.0[i]);
        hi[2 * i] = _mm512_madd52hi_epu64(hi[2 * i], a.0[i], a.0[i]);
    }
    reduce(lo, hi)
}

/// A product from its partial sums: `lo[k]` weighs `2^(51k)`, `hi[k]`
/// twice `2^(51(k+1))`; limbs past the fifth wrap around times 19.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn reduce(lo: [__m512i; 9], hi: [__m512i; 9]) -> F8 {
    let zero = _mm512_setzero_si512();
    let mut r = [zero; 5];
    for k in 0..5 {
        let below = if k > 0 {
            _mm512_add_epi64(lo[k], _mm512_slli_epi64::<1>(hi[k - 1]))
        } else {
            lo[0]
        };
        let above_lo = if k + 5 < 9 { lo[k + 5] } else { zero };
        let above = _mm512_add_epi64(above_lo, _mm512_slli_epi64::<1>(hi[k + 4]));
        r[k] = _mm512_add_epi64(below, times19(above));
    }
    carry(r)
}

/// `x^(2^k)` in each lane.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn pow2k(x: &F8, k: u32) -> F8 {
    let mut y = *x;
    for _ in 0..k {
        y = square(&y);
    }
    y
}

/// `x^((p - 5) / 8)` in each lane: the scalar [`Fe::pow_p58`]'s chain.
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn pow_p58(x: &F8) -> F8 {
    let t0 = square(x); // 2
    let t1 = mul(&pow2k(&t0, 2), x); // 9
    let t3 = mul(&t0, &t1); // 11
    let t5 = mul(&square(&t3), &t1); // 2^5 - 1
    let t7 = mul(&pow2k(&t5, 5), &t5); // 2^10 - 1
    let t9 = mul(&pow2k(&t7, 10), &t7); // 2^20 - 1
    let t11 = mul(&pow2k(&t9, 20), &t9); // 2^40 - 1
    let t13 = mul(&pow2k(&t11, 10), &t7); // 2^50 - 1
    let t15 = mul(&pow2k(&t13, 50), &t13); // 2^100 - 1
    let t17 = mul(&pow2k(&t15, 100), &t15); // 2^200 - 1
    let t19 = mul(&pow2k(&t17, 50), &t13); // 2^250 - 1
    mul(&pow2k(&t19, 2), x)
}

#[cfg(test)]
mod tests {
    use super::super::cpu_has_ifma;
    use super::*;

    /// Limbs at the top of every bound the arithmetic allows (`2^52 - 1`,
    /// every partial sum at its largest).
    const TOP: [u64; 5] = [(1 << 52) - 1; 5];
    /// Limbs at and around the bounds, and zero.
    const MIXED: [u64; 5] = [(1 << 52) - 1, 1 << 51, (1 << 51) - 1, 0, (1 << 52) - 19];

    /// The largest limbs reduce to what fiat computes.
    #[test]
    fn the_largest_limbs_multiply_like_fiat() {
        if !cpu_has_ifma() {
            eprintln!("no AVX-512 IFMA here: the lanes are not used");
            return;
        }
        for (a, b) in [(TOP, TOP), (TOP, MIXED), (MIXED, MIXED)] {
            // SAFETY: the CPU has IFMA (checked above).
            #[allow(unsafe_code)]
            let got = unsafe { mul_once(a, b) };
            let loose = |l: [u64; 5]| Loose(f::fiat_25519_loose_field_element(l));
            let expected = loose(a).mul(loose(b)).to_bytes();
            assert_eq!(got, expected);
        }
    }

    /// Squaring gives what multiplying by itself gives.
    #[test]
    fn squares_are_products() {
        if !cpu_has_ifma() {
            eprintln!("no AVX-512 IFMA here: the lanes are not used");
            return;
        }
        for a in [TOP, MIXED, [12345, 0, 1, 1 << 50, 7]] {
            // SAFETY: the CPU has IFMA (checked above).
            #[allow(unsafe_code)]
            let (sq, product) = unsafe { (square_once(a), mul_once(a, a)) };
            assert_eq!(sq, product);
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    fn square_once(a: [u64; 5]) -> [u8; 32] {
        square(&F8::splat(a)).elements()[5].to_bytes()
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    fn mul_once(a: [u64; 5], b: [u64; 5]) -> [u8; 32] {
        let p = mul(&F8::splat(a), &F8::splat(b));
        let lanes = p.0.map(limbs_of);
        Loose(f::fiat_25519_loose_field_element(std::array::from_fn(
            |i| lanes[i][3],
        )))
        .carry()
        .to_bytes()
    }
}
