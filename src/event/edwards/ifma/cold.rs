//! Keys without a table, eight at a time: `A` decoded in lanes, `[k](-A)`
//! by four doublings and one addition per 4-bit window from each lane's
//! own table of `-A..-8A`, then `[S]B` from the base point's table.

use std::arch::x86_64::*;

use super::field::{add, blend, lanes_of, mul, negate_where, pow_p58, square, sub, F8};
use super::{load, schedule, LaneStep, LANES, P8};
use crate::event::edwards::{
    constants, signed_digits, ColdCombination, Decoding, FixedBase, Point,
};

/// Eight points as `(Y + X, Y - X, 2Z, 2dT)`.
#[derive(Clone, Copy)]
struct C8 {
    y_plus_x: F8,
    y_minus_x: F8,
    z2: F8,
    t2d: F8,
}

impl P8 {
    /// The form [`P8::add_cached`] reads.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn cached(&self, d2: &F8) -> C8 {
        C8 {
            y_plus_x: add(&self.y, &self.x),
            y_minus_x: sub(&self.y, &self.x),
            z2: add(&self.z, &self.z),
            t2d: mul(&self.t, d2),
        }
    }

    /// `self += q` for a projective `q`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn add_cached(&mut self, q: &C8) {
        let (tt, zz) = (mul(&self.t, &q.t2d), mul(&self.z, &q.z2));
        self.add_with(&q.y_plus_x, &q.y_minus_x, &tt, &zz);
    }
}

/// Decodes eight encodings at once (the square root's exponentiation in
/// lanes, the checks per lane); `None` where one does not decode.
#[target_feature(enable = "avx512f,avx512ifma")]
fn decompress(encodings: [&[u8; 32]; LANES]) -> [Option<Point>; LANES] {
    let starts = encodings.map(Decoding::start);
    // A lane that does not start still computes, on y = 0.
    let fallback = Decoding::start(&[0; 32]).expect("y = 0 is below p");
    let lane = |l: usize| starts[l].as_ref().unwrap_or(&fallback);
    let u = F8::of(std::array::from_fn(|l| &lane(l).u));
    let v = F8::of(std::array::from_fn(|l| &lane(l).v));
    let v3 = mul(&square(&v), &v);
    let v7 = mul(&square(&v3), &v);
    let x = mul(&mul(&u, &v3), &pow_p58(&mul(&u, &v7))).elements();
    std::array::from_fn(|l| starts[l].as_ref().and_then(|s| s.finish(x[l])))
}

/// Signed radix-16 windows of `[k]Q` over a table of `Q`..`8Q` per lane.
const COLD_WINDOW: u32 = 4;

/// `[s]B - [k]A` of each combination, in order, eight at a time; `None`
/// where `A` does not decode. `[k](-A)` takes four doublings and one
/// addition from the lane's own table of `-A`..`-8A` per 4-bit window
/// (the entry picked by comparing indices, not by loading from an address
/// that depends on the scalar); `[s]B` comes from the base point's table.
#[target_feature(enable = "avx512f,avx512ifma")]
pub(crate) fn base_minus_cold(batch: &[ColdCombination]) -> Vec<Option<Point>> {
    let base = FixedBase::base_point();
    let d2 = F8::of([&constants().d2; LANES]);
    let mut out = Vec::with_capacity(batch.len());
    for chunk in batch.chunks(LANES) {
        let decoded = decompress(std::array::from_fn(|l| &chunk[l.min(chunk.len() - 1)].a));
        let minus_a: [Point; LANES] =
            std::array::from_fn(|l| decoded[l].map_or(Point::IDENTITY, |p| p.neg()));
        let q = P8::of(&minus_a);
        // multiples[j] = (j + 1) (-A).
        let once = q.cached(&d2);
        let mut multiples = [once; 8];
        let mut m = q;
        for entry in multiples.iter_mut().skip(1) {
            m.add_cached(&once);
            *entry = m.cached(&d2);
        }
        let digits: [Vec<i32>; LANES] = std::array::from_fn(|l| {
            let k = chunk.get(l).map_or([0; 32], |c| c.k);
            signed_digits(&k, COLD_WINDOW).collect()
        });
        let mut acc = P8::identity();
        let windows = FixedBase::windows(COLD_WINDOW);
        for i in (0..windows).rev() {
            if i + 1 < windows {
                acc.double_times(COLD_WINDOW);
            }
            acc.add_cached(&select(&multiples, std::array::from_fn(|l| digits[l][i])));
        }
        let mut steps = vec![[LaneStep::IDENTITY; LANES]; FixedBase::windows(base.w)];
        for (l, c) in chunk.iter().enumerate() {
            debug_assert!(c.s[31] < 0x20 && c.k[31] < 0x20, "scalars below 2^253");
            schedule(&mut steps, l, base, &c.s, false);
        }
        for step in steps {
            acc.add_niels(&load(step));
        }
        let points = acc.points();
        out.extend((0..chunk.len()).map(|l| decoded[l].map(|_| points[l])));
    }
    out
}

/// Each lane's `digit * Q` from its `multiples` of `Q` (`digit` in `[-8,
/// 8)`; zero picks the identity).
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn select(multiples: &[C8; 8], digits: [i32; LANES]) -> C8 {
    let index = lanes_of(digits.map(|d| d.unsigned_abs() as u64));
    let negative = digits
        .iter()
        .enumerate()
        .fold(0u8, |m, (l, d)| m | ((*d < 0) as u8) << l);
    let one = F8::splat([1, 0, 0, 0, 0]);
    let mut c = C8 {
        y_plus_x: one,
        y_minus_x: one,
        z2: F8::splat([2, 0, 0, 0, 0]),
        t2d: F8::splat([0; 5]),
    };
    for (j, m) in multiples.iter().enumerate() {
        let pick = _mm512_cmpeq_epi64_mask(index, _mm512_set1_epi64(j as i64 + 1));
        c = C8 {
            y_plus_x: blend(pick, &c.y_plus_x, &m.y_plus_x),
            y_minus_x: blend(pick, &c.y_minus_x, &m.y_minus_x),
            z2: blend(pick, &c.z2, &m.z2),
            t2d: blend(pick, &c.t2d, &m.t2d),
        };
    }
    // -(x, y) = (-x, y): Y + X and Y - X trade places, and T changes sign.
    C8 {
        y_plus_x: blend(negative, &c.y_plus_x, &c.y_minus_x),
        y_minus_x: blend(negative, &c.y_minus_x, &c.y_plus_x),
        z2: c.z2,
        t2d: negate_where(negative, &c.t2d),
    }
}

#[cfg(test)]
mod tests {
    use super::super::cpu_has_ifma;
    use super::*;
    use crate::event::edwards::tests::scalar;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::{EdwardsPoint, Scalar};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Keys without a table, eight at a time: dalek's double-base
        /// result for each, and `None` for an encoding that is not a point.
        #[test]
        fn cold_lanes_agree_with_dalek(
            seeds in proptest::collection::vec(any::<([u8; 32], [u8; 32], [u8; 32])>(), 2..19),
            not_a_point in any::<prop::sample::Index>(),
        ) {
            prop_assume!(cpu_has_ifma());
            let mut batch: Vec<ColdCombination> = seeds
                .iter()
                .map(|(s, k, a)| ColdCombination {
                    s: scalar(s).to_bytes(),
                    k: scalar(k).to_bytes(),
                    a: (ED25519_BASEPOINT_POINT * scalar(a)).compress().to_bytes(),
                })
                .collect();
            // y = 2 has no x on the curve.
            let bad = not_a_point.index(batch.len());
            batch[bad].a = [0; 32];
            batch[bad].a[0] = 2;
            // SAFETY: the CPU has IFMA (assumed above).
            #[allow(unsafe_code)]
            let points = unsafe { base_minus_cold(&batch) };
            for (i, (c, p)) in batch.iter().zip(points).enumerate() {
                if i == bad {
                    prop_assert!(p.is_none());
                    continue;
                }
                let a = curve25519_dalek::edwards::CompressedEdwardsY(c.a).decompress().unwrap();
                let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(
                    &Scalar::from_bytes_mod_order(c.k), &-a, &Scalar::from_bytes_mod_order(c.s));
                prop_assert_eq!(p.expect("decodes").compress(), expected.compress().to_bytes());
            }
        }
    }
}
