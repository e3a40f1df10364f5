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

use super::{signed_digits, Combination, Fe, FixedBase, Loose, Niels, Point};
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
        let lanes = |e: &F8| -> [Fe; LANES] {
            let limbs = e.0.map(limbs_of);
            std::array::from_fn(|lane| {
                // Limbs below 2^52 are within fiat's loose bounds.
                Loose(f::fiat_25519_loose_field_element(std::array::from_fn(
                    |i| limbs[i][lane],
                )))
                .carry()
            })
        };
        let (x, y, z, t) = (
            lanes(&self.x),
            lanes(&self.y),
            lanes(&self.z),
            lanes(&self.t),
        );
        std::array::from_fn(|l| Point {
            x: x[l],
            y: y[l],
            z: z[l],
            t: t[l],
        })
    }
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
