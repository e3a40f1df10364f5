//! Eight verifications at once with AVX-512 IFMA (52-bit multiply-add).
//!
//! [`super::base_minus_all`] and [`super::base_minus_cold`] hand their
//! combinations here eight at a time, one in each 64-bit lane ([`field`]:
//! a field element is five vectors). Every lane makes the same number of
//! additions (a zero digit, or a lane with nothing to do, adds the
//! identity), with the same complete formulas as the scalar path; the
//! tests check the two agree, and agree with dalek.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{signed_digits, Combination, Fe, FixedBase, Niels, Point, TableShape};

mod cold;
mod field;

pub(super) use cold::base_minus_cold;
use field::{add, lanes_of, mul, negate_where, square, sub, F8};

/// Combinations walked side by side.
const LANES: usize = 8;

/// Whether this CPU has AVX-512F and IFMA (checked once), unless the
/// environment says `VIGIL_IFMA=0` (to compare, or to rule it out).
pub(super) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::env::var_os("VIGIL_IFMA").is_none_or(|v| v != "0") && cpu_has_ifma())
}

/// Whether this CPU has AVX-512F and IFMA, whatever the environment says
/// (the tests compare the lanes with the scalar path wherever they can).
fn cpu_has_ifma() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")
}

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
        let z2 = add(&self.z, &self.z);
        self.add_with(&q.y_plus_x, &q.y_minus_x, &mul(&self.t, &q.xy2d), &z2);
    }

    /// `2^n self` (Hisil-Wong-Carter-Dawson's doubling with `a = -1`;
    /// `T` is not read, so only the last doubling computes it).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn double_times(&mut self, n: u32) {
        for left in (0..n).rev() {
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
            self.z = mul(&f, &g);
            if left == 0 {
                self.t = mul(&e, &h);
            }
        }
    }

    /// The addition shared by [`P8::add_niels`] and `add_cached`: `q`'s `Y
    /// + X` and `Y - X`, `tt = 2d T1 T2` and `zz = 2 Z1 Z2`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn add_with(&mut self, y_plus_x: &F8, y_minus_x: &F8, tt: &F8, zz: &F8) {
        let pp = mul(&add(&self.y, &self.x), y_plus_x);
        let mm = mul(&sub(&self.y, &self.x), y_minus_x);
        let (z, t) = (add(zz, tt), sub(zz, tt));
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
    N8 {
        y_plus_x: F8(plus.map(lanes_of)),
        y_minus_x: F8(minus.map(lanes_of)),
        xy2d: negate_where(negate, &F8(xy2d.map(lanes_of))),
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
    for ((i, d), step) in signed_digits(scalar, table.w).enumerate().zip(steps) {
        if d != 0 {
            step[lane] = LaneStep {
                entry: table.entry(i, d),
                subtract: negate != (d < 0),
            };
        }
    }
}

/// `[s]B - [k]P` of each combination, in order, eight at a time; the
/// tables of `batch` all have one shape (window width and stride).
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn base_minus_points<'a>(batch: &[Combination<'a>]) -> Vec<Point> {
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    let shape = first.table.shape();
    debug_assert!(batch.iter().all(|c| c.table.shape() == shape));
    let TableShape { w, stride } = shape;
    let base = FixedBase::base_point();
    let key_steps = FixedBase::windows(w);
    let steps_of = |chunk: &[Combination<'a>]| {
        let mut steps = vec![[LaneStep::IDENTITY; LANES]; key_steps + FixedBase::windows(base.w)];
        for (lane, c) in chunk.iter().enumerate() {
            debug_assert!(c.s[31] < 0x20 && c.k[31] < 0x20, "scalars below 2^253");
            schedule(&mut steps, lane, c.table, &c.k, true);
            schedule(&mut steps[key_steps..], lane, base, &c.s, false);
        }
        prefetch(&steps);
        steps
    };
    let mut chunks = batch.chunks(LANES);
    let mut next = chunks.next().map(steps_of);
    let mut out = Vec::with_capacity(batch.len());
    while let Some(steps) = next.take() {
        // The next chunk's entries are on their way while this one adds.
        next = chunks.next().map(steps_of);
        // The key's windows by Horner's rule (see `FixedBase`), then the
        // base point's.
        let mut acc = P8::identity();
        for r in (0..stride).rev() {
            if r + 1 < stride {
                acc.double_times(w);
            }
            for step in steps[r..key_steps].iter().step_by(stride) {
                acc.add_niels(&load(*step));
            }
        }
        for step in &steps[key_steps..] {
            acc.add_niels(&load(*step));
        }
        out.extend(acc.points());
    }
    out.truncate(batch.len());
    out
}

/// Asks for the cache lines of every entry of `steps` (into L2: a chunk's
/// entries are ~80 KiB), without waiting for them: the entries are read
/// by index, nothing a hardware prefetcher could guess, and a table held
/// for each of thousands of keys is not in any cache.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn prefetch(steps: &[[LaneStep<'_>; LANES]]) {
    for s in steps.iter().flatten() {
        let at = (s.entry as *const Niels).cast::<i8>();
        for offset in [0, 64, std::mem::size_of::<Niels>() - 1] {
            _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(offset));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{base_minus, base_minus_all, FixedBase};
    use super::*;
    use crate::event::edwards::tests::scalar;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::{EdwardsPoint, Scalar};
    use proptest::prelude::*;

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
        /// tables of different widths and strides in one batch.
        #[test]
        fn lanes_agree_with_the_scalar_path(
            seeds in proptest::collection::vec(
                any::<([u8; 32], [u8; 32], [u8; 32], u8)>(), 2..20),
            zero_s in any::<bool>(),
        ) {
            prop_assume!(cpu_has_ifma());
            let tables: Vec<FixedBase> = seeds
                .iter()
                .map(|(_, _, a, shape)| {
                    let point: EdwardsPoint = ED25519_BASEPOINT_POINT * scalar(a);
                    let (w, stride) = [(6, 1), (4, 1), (4, 11), (4, 16), (5, 3)][*shape as usize % 5];
                    FixedBase::with_stride(&point.compress().to_bytes(), w, stride).unwrap()
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
            let lanes = super::super::by_shape(&batch, |same| {
                // SAFETY: the CPU has IFMA (assumed above).
                #[allow(unsafe_code)]
                unsafe {
                    base_minus_points(same)
                }
            });
            prop_assert_eq!(super::super::compress_all(&lanes), one_by_one);
        }
    }
}
