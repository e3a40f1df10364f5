//! Eight table walks at once with AVX-512 IFMA (52-bit multiply-add).
//!
//! [`super::base_minus_all`] hands its combinations here eight at a time,
//! one in each 64-bit lane: a field element is five vectors (limb `i` of
//! every lane in vector `i`, radix `2^51` as in fiat's arithmetic), and a
//! product's partial sums are IFMA's low and high 52 bits of each limb
//! product. Every lane makes the same number of additions (a zero digit,
//! or a lane with nothing to do, adds the identity), with the same
//! complete formulas as the scalar path; the tests check the two agree.
//!
//! Bounds: inputs to a multiplication have limbs below `2^52` (IFMA reads
//! 52 bits); [`carry`] brings any limbs below `2^63` back under that, so
//! every sum and difference is carried before it is multiplied.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{
    constants, signed_digits, ColdCombination, Combination, Decoding, Fe, FixedBase, Loose, Niels,
    Point,
};
use fiat_crypto::curve25519_64 as f;

/// Combinations walked side by side.
const LANES: usize = 8;

/// Whether this CPU has AVX-512F and IFMA (checked once), unless the
/// environment says `VIGIL_IFMA=0` (to compare, or to rule it out).
pub(super) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("VIGIL_IFMA").is_none_or(|v| v != "0")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512ifma")
    })
}

/// Eight field elements, limb by limb.
#[derive(Clone, Copy)]
struct F8([__m512i; 5]);

/// Eight points in extended coordinates.
struct P8 {
    x: F8,
    y: F8,
    z: F8,
    t: F8,
}

/// Eight Niels entries, each already negated where its lane subtracts.
struct N8 {
    y_plus_x: F8,
    y_minus_x: F8,
    xy2d: F8,
}

/// What one lane adds at one step: a table entry, and whether it is
/// subtracted.
#[derive(Clone, Copy)]
struct LaneStep<'a> {
    entry: &'a Niels,
    subtract: bool,
}

fn lanes_of(limbs: [u64; LANES]) -> __m512i {
    // SAFETY: both are 64 plain bytes; every bit pattern is valid for each.
    unsafe { std::mem::transmute::<[u64; LANES], __m512i>(limbs) }
}

fn limbs_of(v: __m512i) -> [u64; LANES] {
    // SAFETY: as in `lanes_of`.
    unsafe { std::mem::transmute::<__m512i, [u64; LANES]>(v) }
}

impl F8 {
    /// The same element in every lane.
    fn splat(limbs: [u64; 5]) -> F8 {
        F8(limbs.map(|l| lanes_of([l; LANES])))
    }

    /// One element per lane.
    fn of(elements: [&Fe; LANES]) -> F8 {
        F8(std::array::from_fn(|i| {
            lanes_of(elements.map(|e| e.0 .0[i]))
        }))
    }

    /// Each lane's element, reduced to fiat's tight bounds.
    fn elements(&self) -> [Fe; LANES] {
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
fn add(a: &F8, b: &F8) -> F8 {
    carry(std::array::from_fn(|i| _mm512_add_epi64(a.0[i], b.0[i])))
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn sub(a: &F8, b: &F8) -> F8 {
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
fn mul(a: &F8, b: &F8) -> F8 {
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
fn square(a: &F8) -> F8 {
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

impl P8 {
    fn identity() -> P8 {
        P8 {
            x: F8::splat([0; 5]),
            y: F8::splat([1, 0, 0, 0, 0]),
            z: F8::splat([1, 0, 0, 0, 0]),
            t: F8::splat([0; 5]),
        }
    }

    /// `self += q` in each lane: the scalar [`Point::add_niels`], with the
    /// subtractions folded into `q`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn add_niels(&mut self, q: &N8) {
        let pp = mul(&add(&self.y, &self.x), &q.y_plus_x);
        let mm = mul(&sub(&self.y, &self.x), &q.y_minus_x);
        let txy2d = mul(&self.t, &q.xy2d);
        let z2 = add(&self.z, &self.z);
        let (z, t) = (add(&z2, &txy2d), sub(&z2, &txy2d));
        let (x, y) = (sub(&pp, &mm), add(&pp, &mm));
        self.x = mul(&x, &t);
        self.y = mul(&y, &z);
        self.z = mul(&z, &t);
        self.t = mul(&x, &y);
    }

    /// The eight points.
    fn points(&self) -> [Point; LANES] {
        let (x, y) = (self.x.elements(), self.y.elements());
        let (z, t) = (self.z.elements(), self.t.elements());
        std::array::from_fn(|l| Point {
            x: x[l],
            y: y[l],
            z: z[l],
            t: t[l],
        })
    }

    /// One point per lane.
    fn of(points: &[Point; LANES]) -> P8 {
        P8 {
            x: F8::of(std::array::from_fn(|l| &points[l].x)),
            y: F8::of(std::array::from_fn(|l| &points[l].y)),
            z: F8::of(std::array::from_fn(|l| &points[l].z)),
            t: F8::of(std::array::from_fn(|l| &points[l].t)),
        }
    }

    /// `2 self` (Hisil-Wong-Carter-Dawson's doubling with `a = -1`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn double(&mut self) {
        let a = square(&self.x);
        let b = square(&self.y);
        let zz = square(&self.z);
        let c = add(&zz, &zz);
        let a_plus_b = add(&a, &b);
        let xy = add(&self.x, &self.y);
        let e = sub(&square(&xy), &a_plus_b);
        let g = sub(&b, &a);
        let f = sub(&g, &c);
        let h = sub(&F8::splat([0; 5]), &a_plus_b);
        self.x = mul(&e, &f);
        self.y = mul(&g, &h);
        self.t = mul(&e, &h);
        self.z = mul(&f, &g);
    }

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
        let pp = mul(&add(&self.y, &self.x), &q.y_plus_x);
        let mm = mul(&sub(&self.y, &self.x), &q.y_minus_x);
        let tt = mul(&self.t, &q.t2d);
        let zz = mul(&self.z, &q.z2);
        let (z, t) = (add(&zz, &tt), sub(&zz, &tt));
        let (x, y) = (sub(&pp, &mm), add(&pp, &mm));
        self.x = mul(&x, &t);
        self.y = mul(&y, &z);
        self.z = mul(&z, &t);
        self.t = mul(&x, &y);
    }
}

/// Eight points as `(Y + X, Y - X, 2Z, 2dT)`.
#[derive(Clone, Copy)]
struct C8 {
    y_plus_x: F8,
    y_minus_x: F8,
    z2: F8,
    t2d: F8,
}

/// The entries of one step, one per lane, transposed into vectors; a
/// subtracted entry is `(y - x, y + x, -2dxy)`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn load(steps: [LaneStep<'_>; LANES]) -> N8 {
    let mut plus = [[0u64; LANES]; 5];
    let mut minus = [[0u64; LANES]; 5];
    let mut xy2d = [[0u64; LANES]; 5];
    let mut negate: __mmask8 = 0;
    for (lane, s) in steps.iter().enumerate() {
        let (p, m) = match s.subtract {
            false => (&s.entry.y_plus_x, &s.entry.y_minus_x),
            true => (&s.entry.y_minus_x, &s.entry.y_plus_x),
        };
        for i in 0..5 {
            plus[i][lane] = p.0 .0[i];
            minus[i][lane] = m.0 .0[i];
            xy2d[i][lane] = s.entry.xy2d.0 .0[i];
        }
        negate |= (s.subtract as u8) << lane;
    }
    let xy2d = F8(xy2d.map(lanes_of));
    let negated = sub(&F8::splat([0; 5]), &xy2d);
    N8 {
        y_plus_x: F8(plus.map(lanes_of)),
        y_minus_x: F8(minus.map(lanes_of)),
        xy2d: F8(std::array::from_fn(|i| {
            _mm512_mask_blend_epi64(negate, xy2d.0[i], negated.0[i])
        })),
    }
}

impl LaneStep<'static> {
    /// What a zero digit adds: the identity.
    const IDENTITY: LaneStep<'static> = LaneStep {
        entry: &Niels {
            y_plus_x: Fe::ONE,
            y_minus_x: Fe::ONE,
            xy2d: Fe::ZERO,
        },
        subtract: false,
    };
}

/// Puts the additions of `scalar * P` (or its negation) from `P`'s table
/// in `lane` of `steps`, one step per window.
fn schedule<'a>(
    steps: &mut [[LaneStep<'a>; LANES]],
    lane: usize,
    table: &'a FixedBase,
    scalar: &[u8; 32],
    negate: bool,
) {
    let half = 1usize << (table.w - 1);
    for ((i, d), step) in signed_digits(scalar, table.w).enumerate().zip(steps) {
        if d != 0 {
            step[lane] = LaneStep {
                entry: &table.entries[i * half + d.unsigned_abs() as usize - 1],
                subtract: negate != (d < 0),
            };
        }
    }
}

/// `[s]B - [k]P` of each combination, in order, eight at a time.
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn base_minus_points(batch: &[Combination<'_>]) -> Vec<Point> {
    let base = FixedBase::base_point();
    let base_steps = FixedBase::windows(base.w);
    let mut out = Vec::with_capacity(batch.len());
    for chunk in batch.chunks(LANES) {
        let key_steps = chunk.iter().map(|c| FixedBase::windows(c.table.w)).max();
        let mut steps = vec![[LaneStep::IDENTITY; LANES]; base_steps + key_steps.unwrap_or(0)];
        for (lane, c) in chunk.iter().enumerate() {
            debug_assert!(c.s[31] < 0x20 && c.k[31] < 0x20, "scalars below 2^253");
            schedule(&mut steps, lane, base, &c.s, false);
            schedule(&mut steps[base_steps..], lane, c.table, &c.k, true);
        }
        // Request every entry's cache lines before the first addition, as
        // the scalar path does.
        let touched = (steps.iter().flatten()).fold(0u64, |t, s| {
            t ^ s.entry.y_plus_x.0 .0[0] ^ s.entry.xy2d.0 .0[4]
        });
        std::hint::black_box(touched);
        let mut acc = P8::identity();
        for step in steps {
            acc.add_niels(&load(step));
        }
        out.extend(acc.points().into_iter().take(chunk.len()));
    }
    out
}

/// `x^(2^k)` in each lane.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn pow2k(x: &F8, k: u32) -> F8 {
    let mut y = *x;
    for _ in 0..k {
        y = square(&y);
    }
    y
}

/// `x^((p - 5) / 8)` in each lane: the scalar [`Fe::pow_p58`]'s chain.
#[target_feature(enable = "avx512f,avx512ifma")]
fn pow_p58(x: &F8) -> F8 {
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
pub(super) fn base_minus_cold(batch: &[ColdCombination]) -> Vec<Option<Point>> {
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
                for _ in 0..COLD_WINDOW {
                    acc.double();
                }
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
        let blend = |into: &mut F8, from: &F8| {
            for i in 0..5 {
                into.0[i] = _mm512_mask_blend_epi64(pick, into.0[i], from.0[i]);
            }
        };
        blend(&mut c.y_plus_x, &m.y_plus_x);
        blend(&mut c.y_minus_x, &m.y_minus_x);
        blend(&mut c.z2, &m.z2);
        blend(&mut c.t2d, &m.t2d);
    }
    let negated_t2d = sub(&F8::splat([0; 5]), &c.t2d);
    C8 {
        y_plus_x: F8(std::array::from_fn(|i| {
            _mm512_mask_blend_epi64(negative, c.y_plus_x.0[i], c.y_minus_x.0[i])
        })),
        y_minus_x: F8(std::array::from_fn(|i| {
            _mm512_mask_blend_epi64(negative, c.y_minus_x.0[i], c.y_plus_x.0[i])
        })),
        z2: c.z2,
        t2d: F8(std::array::from_fn(|i| {
            _mm512_mask_blend_epi64(negative, c.t2d.0[i], negated_t2d.0[i])
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_minus, base_minus_all, FixedBase};
    use super::*;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::{EdwardsPoint, Scalar};
    use proptest::prelude::*;

    fn scalar(seed: &[u8; 32]) -> Scalar {
        let mut wide = [0u8; 64];
        wide[..32].copy_from_slice(seed);
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    #[test]
    fn this_machine_has_ifma_or_the_scalar_path_runs() {
        // The tests below compare the lanes with the scalar path only where
        // the CPU has IFMA; say which ran.
        eprintln!("AVX-512 IFMA available: {}", available());
        let t = FixedBase::new(
            &ED25519_BASEPOINT_POINT.compress().to_bytes(),
            super::super::BASE_WINDOW,
        )
        .unwrap();
        let (s, k) = (Scalar::from(5u64).to_bytes(), Scalar::from(3u64).to_bytes());
        let c = |table| Combination { s, k, table };
        // [5]B - [3]B = [2]B, twice.
        let two_b = (ED25519_BASEPOINT_POINT + ED25519_BASEPOINT_POINT)
            .compress()
            .to_bytes();
        assert_eq!(base_minus_all(&[c(&t), c(&t)]), vec![two_b, two_b]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Eight lanes at a time give what the scalar path gives, for any
        /// batch size (full and partial chunks), scalars and keys, with
        /// tables of different widths side by side.
        #[test]
        fn lanes_agree_with_the_scalar_path(
            seeds in proptest::collection::vec(
                any::<([u8; 32], [u8; 32], [u8; 32], bool)>(), 2..20),
            zero_s in any::<bool>(),
        ) {
            prop_assume!(available());
            let tables: Vec<FixedBase> = seeds
                .iter()
                .map(|(_, _, a, wide)| {
                    let point: EdwardsPoint = ED25519_BASEPOINT_POINT * scalar(a);
                    FixedBase::new(&point.compress().to_bytes(), if *wide { 6 } else { 4 }).unwrap()
                })
                .collect();
            let batch: Vec<Combination> = seeds
                .iter()
                .zip(&tables)
                .enumerate()
                .map(|(i, ((s, k, _, _), table))| Combination {
                    // Some scalars zero: every digit adds the identity.
                    s: if zero_s && i == 0 { [0; 32] } else { scalar(s).to_bytes() },
                    k: scalar(k).to_bytes(),
                    table,
                })
                .collect();
            let one_by_one: Vec<[u8; 32]> =
                batch.iter().map(|c| base_minus(&c.s, &c.k, c.table)).collect();
            // SAFETY: `available` is true (assumed above).
            #[allow(unsafe_code)]
            let lanes = unsafe { base_minus_points(&batch) };
            prop_assert_eq!(super::super::compress_all(&lanes), one_by_one);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Keys without a table, eight at a time: dalek's double-base
        /// result for each, and `None` for an encoding that is not a point.
        #[test]
        fn cold_lanes_agree_with_dalek(
            seeds in proptest::collection::vec(any::<([u8; 32], [u8; 32], [u8; 32])>(), 2..19),
            not_a_point in any::<prop::sample::Index>(),
        ) {
            prop_assume!(available());
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
            // SAFETY: `available` is true (assumed above).
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

    /// Limbs at the top of every bound the arithmetic allows (`2^52 - 1`,
    /// every partial sum at its largest) reduce to what fiat computes.
    #[test]
    fn the_largest_limbs_multiply_like_fiat() {
        if !available() {
            eprintln!("no AVX-512 IFMA here: the lanes are not used");
            return;
        }
        let top = [(1u64 << 52) - 1; 5];
        let mixed = [(1u64 << 52) - 1, 1 << 51, (1 << 51) - 1, 0, (1 << 52) - 19];
        for (a, b) in [(top, top), (top, mixed), (mixed, mixed)] {
            // SAFETY: `available` is true (checked above).
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
        if !available() {
            eprintln!("no AVX-512 IFMA here: the lanes are not used");
            return;
        }
        let top = [(1u64 << 52) - 1; 5];
        let mixed = [(1u64 << 52) - 1, 1 << 51, (1 << 51) - 1, 0, (1 << 52) - 19];
        let small = [12345, 0, 1, 1 << 50, 7];
        for a in [top, mixed, small] {
            // SAFETY: `available` is true (checked above).
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
