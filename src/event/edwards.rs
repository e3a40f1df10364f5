//! Variable-time fixed-base arithmetic on edwards25519, for verification.
//!
//! ed25519-dalek's verification computes `[S]B - [k]A` with a double-base
//! multiplication: about 253 doublings whatever the key. Agent keys are few
//! and reused, so each hot key gets a table of its multiples at every
//! window (signed radix `2^w`), and the base point one shared table:
//! `[S]B - [k]A` is then one addition per non-zero digit of each scalar, no
//! doublings, with entries read by index (the inputs of a verification are
//! public, so nothing here needs to be constant-time). A compact table
//! keeps one window in `s` ([`FixedBase::with_stride`]) and pays `w (s -
//! 1)` doublings instead: many keys' tables then fit where few would.
//!
//! The field is fiat-crypto's (formally verified) 64-bit arithmetic modulo
//! `2^255 - 19`; the point formulas are the usual extended twisted Edwards
//! ones (Hisil–Wong–Carter–Dawson 2008), which are complete on this curve.
//! Everything here is checked against curve25519-dalek in this module's
//! tests and against `verify_strict` in [`super::tables`]'.
//!
//! On a CPU with AVX-512 IFMA, batches run eight at a time in 64-bit
//! lanes (`ifma`): [`base_minus_all`] for keys with a table, and
//! [`base_minus_cold`] for keys without one (variable-base, four doublings
//! per 4-bit window). `VIGIL_IFMA=0` keeps the scalar path.

use std::sync::OnceLock;

use fiat_crypto::curve25519_64 as f;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod ifma;

/// A field element modulo `2^255 - 19`, in fiat's tight bounds.
#[derive(Clone, Copy)]
struct Fe(f::fiat_25519_tight_field_element);

/// A field element in fiat's loose bounds (a sum or difference).
#[derive(Clone, Copy)]
struct Loose(f::fiat_25519_loose_field_element);

impl Fe {
    const ZERO: Fe = Fe(f::fiat_25519_tight_field_element([0; 5]));
    const ONE: Fe = Fe(f::fiat_25519_tight_field_element([1, 0, 0, 0, 0]));

    fn from_u64(n: u64) -> Fe {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        Fe::from_bytes(&b)
    }

    /// The element of 32 little-endian bytes, the top bit ignored.
    fn from_bytes(bytes: &[u8; 32]) -> Fe {
        let mut b = *bytes;
        b[31] &= 0x7f;
        let mut out = f::fiat_25519_tight_field_element([0; 5]);
        f::fiat_25519_from_bytes(&mut out, &b);
        Fe(out)
    }

    /// The canonical encoding (reduced below `p`).
    fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        f::fiat_25519_to_bytes(&mut out, &self.0);
        out
    }

    fn loose(self) -> Loose {
        let mut out = f::fiat_25519_loose_field_element([0; 5]);
        f::fiat_25519_relax(&mut out, &self.0);
        Loose(out)
    }

    fn add(self, o: Fe) -> Loose {
        let mut out = f::fiat_25519_loose_field_element([0; 5]);
        f::fiat_25519_add(&mut out, &self.0, &o.0);
        Loose(out)
    }

    fn sub(self, o: Fe) -> Loose {
        let mut out = f::fiat_25519_loose_field_element([0; 5]);
        f::fiat_25519_sub(&mut out, &self.0, &o.0);
        Loose(out)
    }

    fn neg(self) -> Fe {
        let mut out = f::fiat_25519_loose_field_element([0; 5]);
        f::fiat_25519_opp(&mut out, &self.0);
        Loose(out).carry()
    }

    fn mul(self, o: Fe) -> Fe {
        self.loose().mul(o.loose())
    }

    fn square(self) -> Fe {
        self.loose().square()
    }

    /// `self^(2^k)`.
    fn pow2k(self, k: u32) -> Fe {
        (0..k).fold(self, |x, _| x.square())
    }

    fn is_zero(self) -> bool {
        self.to_bytes() == [0; 32]
    }

    fn is_negative(self) -> bool {
        self.to_bytes()[0] & 1 == 1
    }

    fn equals(self, o: Fe) -> bool {
        self.to_bytes() == o.to_bytes()
    }

    /// `(self^(2^250 - 1), self^11)`, the common prefix of the inversion
    /// and square-root chains (ref10's).
    fn pow22501(self) -> (Fe, Fe) {
        let t0 = self.square(); // 2
        let t1 = t0.pow2k(2).mul(self); // 9
        let t3 = t0.mul(t1); // 11
        let t5 = t3.square().mul(t1); // 2^5 - 1
        let t7 = t5.pow2k(5).mul(t5); // 2^10 - 1
        let t9 = t7.pow2k(10).mul(t7); // 2^20 - 1
        let t11 = t9.pow2k(20).mul(t9); // 2^40 - 1
        let t13 = t11.pow2k(10).mul(t7); // 2^50 - 1
        let t15 = t13.pow2k(50).mul(t13); // 2^100 - 1
        let t17 = t15.pow2k(100).mul(t15); // 2^200 - 1
        let t19 = t17.pow2k(50).mul(t13); // 2^250 - 1
        (t19, t3)
    }

    /// `1 / self` (`self^(p - 2)`); zero for zero.
    fn invert(self) -> Fe {
        let (t19, t3) = self.pow22501();
        t19.pow2k(5).mul(t3)
    }

    /// `self^((p - 5) / 8)`.
    fn pow_p58(self) -> Fe {
        let (t19, _) = self.pow22501();
        t19.pow2k(2).mul(self)
    }
}

impl Loose {
    fn carry(self) -> Fe {
        let mut out = f::fiat_25519_tight_field_element([0; 5]);
        f::fiat_25519_carry(&mut out, &self.0);
        Fe(out)
    }

    fn mul(self, o: Loose) -> Fe {
        let mut out = f::fiat_25519_tight_field_element([0; 5]);
        f::fiat_25519_carry_mul(&mut out, &self.0, &o.0);
        Fe(out)
    }

    fn square(self) -> Fe {
        let mut out = f::fiat_25519_tight_field_element([0; 5]);
        f::fiat_25519_carry_square(&mut out, &self.0);
        Fe(out)
    }
}

/// The curve's constants, computed once.
struct Constants {
    /// `2d`, `d = -121665 / 121666`.
    d2: Fe,
    d: Fe,
    /// `sqrt(-1)`, `2^((p - 1) / 4)`.
    sqrt_m1: Fe,
}

fn constants() -> &'static Constants {
    static C: OnceLock<Constants> = OnceLock::new();
    C.get_or_init(|| {
        let d = Fe::from_u64(121665)
            .neg()
            .mul(Fe::from_u64(121666).invert());
        // 2^((p-1)/4) = 2^(2^253 - 5) = (2^(2^250 - 1))^8 * 2^3.
        let two = Fe::from_u64(2);
        let sqrt_m1 = two.pow22501().0.pow2k(3).mul(Fe::from_u64(8));
        Constants {
            d2: d.add(d).carry(),
            d,
            sqrt_m1,
        }
    })
}

/// A point in extended coordinates: `x = X/Z`, `y = Y/Z`, `XY = ZT`.
#[derive(Clone, Copy)]
struct Point {
    x: Fe,
    y: Fe,
    z: Fe,
    t: Fe,
}

/// A point `(x, y)` kept as `(y + x, y - x, 2dxy)`: what a mixed addition
/// reads.
#[derive(Clone, Copy)]
struct Niels {
    y_plus_x: Fe,
    y_minus_x: Fe,
    xy2d: Fe,
}

/// The sum before it is put back in extended coordinates (`x = X/Z`,
/// `y = Y/T`).
struct Completed {
    x: Loose,
    y: Loose,
    z: Loose,
    t: Loose,
}

impl Completed {
    fn extended(&self) -> Point {
        Point {
            x: self.x.mul(self.t),
            y: self.y.mul(self.z),
            z: self.z.mul(self.t),
            t: self.x.mul(self.y),
        }
    }
}

/// A decoding under way: `y`, and `x^2 = u / v` to solve.
struct Decoding {
    bytes: [u8; 32],
    y: Fe,
    u: Fe,
    v: Fe,
}

impl Decoding {
    /// `y` from the encoding (`None` if it is not below `p`), and `u =
    /// y^2 - 1`, `v = d y^2 + 1`.
    fn start(bytes: &[u8; 32]) -> Option<Decoding> {
        let y = Fe::from_bytes(bytes);
        let mut y_bytes = *bytes;
        y_bytes[31] &= 0x7f;
        if y.to_bytes() != y_bytes {
            return None; // y >= p: not canonical
        }
        let yy = y.square();
        Some(Decoding {
            bytes: *bytes,
            y,
            u: yy.sub(Fe::ONE).carry(),
            v: yy.mul(constants().d).add(Fe::ONE).carry(),
        })
    }

    /// The point, from the candidate `x = u v^3 (u v^7)^((p-5)/8)`; `None`
    /// if `u / v` has no square root or the sign bit is impossible.
    fn finish(&self, candidate: Fe) -> Option<Point> {
        let (u, v) = (self.u, self.v);
        let mut x = candidate;
        let vxx = v.mul(x.square());
        if vxx.equals(u.neg()) {
            x = x.mul(constants().sqrt_m1);
        } else if !vxx.equals(u) {
            return None;
        }
        let sign = self.bytes[31] >> 7 == 1;
        if x.is_zero() && sign {
            return None;
        }
        if x.is_negative() != sign {
            x = x.neg();
        }
        Some(Point {
            x,
            y: self.y,
            z: Fe::ONE,
            t: x.mul(self.y),
        })
    }
}

impl Point {
    const IDENTITY: Point = Point {
        x: Fe::ZERO,
        y: Fe::ONE,
        z: Fe::ONE,
        t: Fe::ZERO,
    };

    /// RFC 8032 section 5.1.3 decoding (the key was vetted as canonical and
    /// not of small order before it gets here).
    fn decompress(bytes: &[u8; 32]) -> Option<Point> {
        let start = Decoding::start(bytes)?;
        let (u, v) = (start.u, start.v);
        let v3 = v.square().mul(v);
        let v7 = v3.square().mul(v);
        start.finish(u.mul(v3).mul(u.mul(v7).pow_p58()))
    }

    /// `-self`.
    fn neg(&self) -> Point {
        Point {
            x: self.x.neg(),
            t: self.t.neg(),
            ..*self
        }
    }
    /// The canonical 32-byte encoding.
    fn compress(&self) -> [u8; 32] {
        let zinv = self.z.invert();
        let x = self.x.mul(zinv);
        let mut out = self.y.mul(zinv).to_bytes();
        out[31] ^= (x.is_negative() as u8) << 7;
        out
    }

    /// `self + o`, complete (it also doubles).
    fn add(&self, o: &Point) -> Point {
        let a = self.y.sub(self.x).mul(o.y.sub(o.x));
        let b = self.y.add(self.x).mul(o.y.add(o.x));
        let c = self.t.mul(constants().d2).mul(o.t);
        let d = self.z.add(self.z).carry().mul(o.z);
        Completed {
            x: b.sub(a),
            y: b.add(a),
            z: d.add(c),
            t: d.sub(c),
        }
        .extended()
    }

    /// `self += q` (`negate`: `self -= q`), in place: the accumulator is
    /// not copied on each of the ~75 additions of a verification.
    fn add_niels(&mut self, q: &Niels, negate: bool) {
        let (p_q, m_q) = match negate {
            false => (&q.y_plus_x, &q.y_minus_x),
            true => (&q.y_minus_x, &q.y_plus_x),
        };
        let pp = self.y.add(self.x).mul(p_q.loose());
        let mm = self.y.sub(self.x).mul(m_q.loose());
        let txy2d = self.t.mul(q.xy2d);
        let z2 = self.z.add(self.z).carry();
        let (z, t) = match negate {
            false => (z2.add(txy2d), z2.sub(txy2d)),
            true => (z2.sub(txy2d), z2.add(txy2d)),
        };
        let (x, y) = (pp.sub(mm), pp.add(mm));
        self.x = x.mul(t);
        self.y = y.mul(z);
        self.z = z.mul(t);
        self.t = x.mul(y);
    }
}

/// Windows of the narrowest table (`w = 2`).
const MAX_WINDOWS: usize = 128;

/// Window width of the base point's table: 22 additions for `[S]B`, from
/// 5.3 MiB of entries (22 windows of 2048) shared by every verification.
/// Measured against 8 bits (32 additions, 480 KiB) with criterion: one
/// verification 14.7-15.0 µs against 16.7-17.0 µs, and 15.1-15.6 µs
/// against 17.0 µs with 64 keys in turn; the entries are read by index,
/// their cache lines all requested before the first addition, so a table
/// larger than L2 costs little.
const BASE_WINDOW: u32 = 12;

// Entries are indexed by `u16`.
const _: () = assert!(FixedBase::windows(BASE_WINDOW) << (BASE_WINDOW - 1) <= 1 << 16);

/// Builds the base point's table now (about 10 ms) rather than during
/// the first verification.
pub fn prepare_base_point() {
    FixedBase::base_point();
}

/// How a table is laid out: its window width, and one window kept in
/// `stride` (see [`FixedBase`]). Tables of one shape are walked side by
/// side (their lanes double together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableShape {
    /// Window width in bits.
    pub w: u32,
    /// One window kept in this many.
    pub stride: usize,
}

/// Multiples of one point for a signed radix-`2^w` expansion, at every
/// `stride`-th window: `entries[j * half + m] = (m + 1) * 2^(w stride j) *
/// P`, `half = 2^(w-1)`.
///
/// With a stride of 1 every window has its entries, and `[k]P` is one
/// addition per non-zero digit. A stride of `s` keeps one window in `s`
/// (a table `s` times smaller) and reaches the others by Horner's rule:
/// the digits of windows `r, r + s, r + 2s, ...` are added for `r` from
/// `s - 1` down to 0, with `w` doublings of the sum between two `r`.
pub struct FixedBase {
    w: u32,
    stride: usize,
    entries: Vec<Niels>,
}

impl FixedBase {
    /// Windows for scalars below `2^253` (the reduced `k` and a canonical
    /// `S`): enough that the last digit never carries out.
    const fn windows(w: u32) -> usize {
        256usize.div_ceil(w as usize)
    }

    /// Bytes a table of window width `w` and `stride` takes.
    pub const fn bytes_for(w: u32, stride: usize) -> usize {
        Self::windows(w).div_ceil(stride) * (1usize << (w - 1)) * std::mem::size_of::<Niels>()
            + std::mem::size_of::<FixedBase>()
    }

    /// The table of the point encoded as `point`, for windows of `w` bits
    /// (2 to 12) and every window kept; `None` if the encoding is not
    /// canonical or not on the curve.
    pub fn new(point: &[u8; 32], w: u32) -> Option<FixedBase> {
        Self::with_stride(point, w, 1)
    }

    /// [`FixedBase::new`], keeping one window in `stride` (1 to the number
    /// of windows).
    pub fn with_stride(point: &[u8; 32], w: u32, stride: usize) -> Option<FixedBase> {
        assert!((2..=12).contains(&w), "window width {w} is not in 2..=12");
        assert!(
            (1..=Self::windows(w)).contains(&stride),
            "stride {stride} is not in 1..={}",
            Self::windows(w)
        );
        let p = Point::decompress(point)?;
        let half = 1usize << (w - 1);
        let kept = Self::windows(w).div_ceil(stride);
        let mut points = Vec::with_capacity(kept * half);
        let mut base = p;
        for _ in 0..kept {
            let mut m = base;
            for _ in 0..half {
                points.push(m);
                m = m.add(&base);
            }
            // The next kept window's base: 2^(w stride) base, from 2^w
            // base = 2 (half base).
            let last = points[points.len() - 1];
            base = last.add(&last);
            for _ in w..stride as u32 * w {
                base = base.add(&base);
            }
        }
        Some(FixedBase {
            w,
            stride,
            entries: to_niels(&points),
        })
    }

    /// The entry for digit `d` (non-zero) of window `i`.
    fn entry(&self, i: usize, d: i32) -> &Niels {
        let half = 1usize << (self.w - 1);
        &self.entries[(i / self.stride) * half + d.unsigned_abs() as usize - 1]
    }

    /// The table's window width and stride.
    fn shape(&self) -> TableShape {
        TableShape {
            w: self.w,
            stride: self.stride,
        }
    }

    /// The table of the Ed25519 base point, in windows of
    /// [`BASE_WINDOW`] bits, built once (see [`prepare_base_point`]).
    fn base_point() -> &'static FixedBase {
        static B: OnceLock<FixedBase> = OnceLock::new();
        B.get_or_init(|| {
            let b = curve25519_dalek::constants::ED25519_BASEPOINT_COMPRESSED.to_bytes();
            FixedBase::new(&b, BASE_WINDOW).expect("the base point decompresses")
        })
    }

    /// Adds (or subtracts) `scalar * P` into `acc`, digit by digit; with
    /// a stride above 1, `acc` is doubled on the way (Horner's rule), so it
    /// must start at the identity.
    ///
    /// The entries are known before the first addition, and read by index
    /// (nothing a prefetcher could guess), so one load of each of their
    /// cache lines is issued first: their misses overlap instead of
    /// stalling one addition after another.
    fn accumulate(&self, acc: &mut Point, scalar: &[u8; 32], negate: bool) {
        let mut digits = [0i32; MAX_WINDOWS];
        let mut touched = 0u64;
        for (i, d) in signed_digits(scalar, self.w).enumerate() {
            digits[i] = d;
            if d != 0 {
                let e = self.entry(i, d);
                touched ^= e.y_plus_x.0[0] ^ e.y_minus_x.0[0] ^ e.xy2d.0[4];
            }
        }
        std::hint::black_box(touched);
        let windows = Self::windows(self.w);
        for r in (0..self.stride).rev() {
            if r + 1 < self.stride {
                for _ in 0..self.w {
                    *acc = acc.add(acc);
                }
            }
            for i in (r..windows).step_by(self.stride) {
                if digits[i] != 0 {
                    acc.add_niels(self.entry(i, digits[i]), negate != (digits[i] < 0));
                }
            }
        }
    }
}

/// The canonical encoding of `[s]B - [k]P` for `P`'s table; `s` and `k`
/// are canonical scalars' little-endian bytes (below `2^253`).
pub fn base_minus(s: &[u8; 32], k: &[u8; 32], p: &FixedBase) -> [u8; 32] {
    debug_assert!(s[31] < 0x20 && k[31] < 0x20, "scalars below 2^253");
    let mut acc = Point::IDENTITY;
    p.accumulate(&mut acc, k, true);
    FixedBase::base_point().accumulate(&mut acc, s, false);
    acc.compress()
}

/// One `[s]B - [k]P` of a batch: see [`base_minus_all`].
#[derive(Clone, Copy)]
pub struct Combination<'a> {
    /// `s`, a canonical scalar's little-endian bytes.
    pub s: [u8; 32],
    /// `k`, likewise.
    pub k: [u8; 32],
    /// `P`'s table.
    pub table: &'a FixedBase,
}

/// One `[s]B - [k]A` for a key without a table: see [`base_minus_cold`].
pub struct ColdCombination {
    /// `s`, a canonical scalar's little-endian bytes.
    pub s: [u8; 32],
    /// `k`, likewise.
    pub k: [u8; 32],
    /// `A`'s encoding (a public key vetted when it was parsed).
    pub a: [u8; 32],
}

/// Whether batches run eight at a time here (AVX-512 IFMA, and not
/// turned off with `VIGIL_IFMA=0`).
pub fn lanes_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return ifma::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The canonical encoding of `[s]B - [k]A` for each combination (`None`
/// where `A` does not decode), eight at a time, when [`lanes_available`]
/// and the batch has more than one; otherwise `None`, and the caller takes
/// the usual path.
pub fn base_minus_cold(batch: &[ColdCombination]) -> Option<Vec<Option<[u8; 32]>>> {
    #[cfg(target_arch = "x86_64")]
    if batch.len() > 1 && ifma::available() {
        // SAFETY: `available` found the target features it is compiled for.
        #[allow(unsafe_code)]
        let points = unsafe { ifma::base_minus_cold(batch) };
        let encodings = compress_all(
            &points
                .iter()
                .map(|p| p.unwrap_or(Point::IDENTITY))
                .collect::<Vec<_>>(),
        );
        return Some(
            points
                .iter()
                .zip(encodings)
                .map(|(p, e)| p.map(|_| e))
                .collect(),
        );
    }
    let _ = batch;
    None
}

/// [`base_minus`] of each combination, with one field inversion for the
/// whole batch (Montgomery's trick) instead of one each; eight at a time
/// on a CPU with AVX-512 IFMA.
pub fn base_minus_all(batch: &[Combination<'_>]) -> Vec<[u8; 32]> {
    #[cfg(target_arch = "x86_64")]
    if batch.len() > 1 && ifma::available() {
        let points = by_shape(batch, |same| {
            // SAFETY: `available` found the target features it is compiled for.
            #[allow(unsafe_code)]
            unsafe {
                ifma::base_minus_points(same)
            }
        });
        return compress_all(&points);
    }
    compress_all(&base_minus_points(batch))
}

/// `walk` of the combinations whose tables have one shape, for each shape
/// in the batch (lanes double together), the points put back in order.
fn by_shape(
    batch: &[Combination<'_>],
    walk: impl Fn(&[Combination<'_>]) -> Vec<Point>,
) -> Vec<Point> {
    let first = batch.first().map(|c| c.table.shape());
    if batch.iter().all(|c| Some(c.table.shape()) == first) {
        return walk(batch);
    }
    let mut points = vec![Point::IDENTITY; batch.len()];
    let mut shapes: Vec<TableShape> = batch.iter().map(|c| c.table.shape()).collect();
    shapes.sort_unstable();
    shapes.dedup();
    for shape in shapes {
        let (at, same): (Vec<usize>, Vec<Combination>) = (batch.iter().enumerate())
            .filter(|(_, c)| c.table.shape() == shape)
            .map(|(i, c)| (i, *c))
            .unzip();
        for (i, p) in at.into_iter().zip(walk(&same)) {
            points[i] = p;
        }
    }
    points
}

/// `[s]B - [k]P` of each combination, one at a time.
fn base_minus_points(batch: &[Combination<'_>]) -> Vec<Point> {
    batch
        .iter()
        .map(|c| {
            debug_assert!(c.s[31] < 0x20 && c.k[31] < 0x20, "scalars below 2^253");
            let mut acc = Point::IDENTITY;
            c.table.accumulate(&mut acc, &c.k, true);
            FixedBase::base_point().accumulate(&mut acc, &c.s, false);
            acc
        })
        .collect()
}

/// The canonical encodings of `points`, sharing one inversion.
fn compress_all(points: &[Point]) -> Vec<[u8; 32]> {
    affine_all(points)
        .map(|(x, y)| {
            let mut enc = y.to_bytes();
            enc[31] ^= (x.is_negative() as u8) << 7;
            enc
        })
        .collect()
}

/// The affine `(x, y)` of each point, in order, with one field inversion
/// for all of them (Montgomery's trick). Every `Z` is non-zero: the
/// addition law is complete on this curve.
fn affine_all(points: &[Point]) -> impl Iterator<Item = (Fe, Fe)> + '_ {
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = Fe::ONE;
    for p in points {
        prefix.push(acc);
        acc = acc.mul(p.z);
    }
    let mut inv = acc.invert();
    let mut zinvs = vec![Fe::ZERO; points.len()];
    for (i, p) in points.iter().enumerate().rev() {
        zinvs[i] = inv.mul(prefix[i]);
        inv = inv.mul(p.z);
    }
    points
        .iter()
        .zip(zinvs)
        .map(|(p, zinv)| (p.x.mul(zinv), p.y.mul(zinv)))
}

/// The digits of `scalar` in signed radix `2^w`, each in
/// `[-2^(w-1), 2^(w-1))`, least significant first. Each window is read
/// from the scalar's 64-bit words at once (this runs twice a
/// verification).
fn signed_digits(scalar: &[u8; 32], w: u32) -> impl Iterator<Item = i32> {
    let words: [u64; 4] = std::array::from_fn(|i| {
        u64::from_le_bytes(scalar[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    });
    let mask = (1u64 << w) - 1;
    let radix = 1i32 << w;
    let mut carry = 0i32;
    (0..FixedBase::windows(w)).map(move |i| {
        // The last window starts below bit 256, so `word` is at most 3.
        let bit = i * w as usize;
        let (word, shift) = (bit / 64, bit % 64);
        let mut window = words[word] >> shift;
        if shift + w as usize > 64 && word < 3 {
            window |= words[word + 1] << (64 - shift);
        }
        let mut d = (window & mask) as i32 + carry;
        carry = (d >= radix / 2) as i32;
        d -= carry * radix;
        d
    })
}

/// Affine Niels forms of `points`, with one shared inversion
/// (Montgomery's trick).
fn to_niels(points: &[Point]) -> Vec<Niels> {
    let d2 = constants().d2;
    affine_all(points)
        .map(|(x, y)| Niels {
            y_plus_x: y.add(x).carry(),
            y_minus_x: y.sub(x).carry(),
            xy2d: x.mul(y).mul(d2),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::{EdwardsPoint, Scalar};
    use proptest::prelude::*;

    /// A scalar from 32 random bytes (reduced).
    pub(super) fn scalar(seed: &[u8; 32]) -> Scalar {
        let mut wide = [0u8; 64];
        wide[..32].copy_from_slice(seed);
        Scalar::from_bytes_mod_order_wide(&wide)
    }

    #[test]
    fn constants_are_the_curves() {
        let c = constants();
        assert!(c.sqrt_m1.square().equals(Fe::ONE.neg()));
        assert!(!c.sqrt_m1.is_negative());
        let d_bytes = c.d.to_bytes();
        assert_eq!(d_bytes[..4], [0xa3, 0x78, 0x59, 0x13], "d = -121665/121666");
    }

    #[test]
    fn decompress_and_compress_agree_with_dalek() {
        for i in 1u64..64 {
            let p = ED25519_BASEPOINT_POINT * Scalar::from(i * 7919);
            let enc = p.compress().to_bytes();
            let mine = Point::decompress(&enc).expect("on the curve");
            assert_eq!(mine.compress(), enc);
            assert_eq!(mine.add(&mine).compress(), (p + p).compress().to_bytes());
        }
        // Not on the curve (y = 2 has no x).
        let mut two = [0u8; 32];
        two[0] = 2;
        assert!(Point::decompress(&two).is_none());
    }

    #[test]
    fn every_digit_expansion_sums_back() {
        let s = scalar(&[0xff; 32]).to_bytes();
        for w in 2..=8 {
            let mut total = Scalar::ZERO;
            let mut weight = Scalar::ONE;
            let radix = Scalar::from(1u64 << w);
            for d in signed_digits(&s, w) {
                assert!((-(1 << (w - 1))..(1 << (w - 1))).contains(&d));
                let m = Scalar::from(d.unsigned_abs() as u64) * weight;
                total += if d < 0 { -m } else { m };
                weight *= radix;
            }
            assert_eq!(total.to_bytes(), s, "w = {w}");
        }
    }

    /// The digits read bit by bit: what [`signed_digits`] reads by words.
    fn digits_bit_by_bit(scalar: &[u8; 32], w: u32) -> Vec<i32> {
        let radix = 1i32 << w;
        let mut carry = 0i32;
        (0..FixedBase::windows(w))
            .map(|i| {
                let mut window = 0i32;
                for b in 0..w as usize {
                    let at = i * w as usize + b;
                    if at < 256 && scalar[at / 8] >> (at % 8) & 1 == 1 {
                        window |= 1 << b;
                    }
                }
                let mut d = window + carry;
                carry = (d >= radix / 2) as i32;
                d -= carry * radix;
                d
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Reading windows by 64-bit words gives the bit-by-bit digits,
        /// across word boundaries, for every width.
        #[test]
        fn digits_read_by_words_are_the_bitwise_ones(s in any::<[u8; 32]>(), w in 2u32..=8) {
            prop_assert_eq!(signed_digits(&s, w).collect::<Vec<_>>(), digits_bit_by_bit(&s, w));
        }

        /// `[s]B - [k]A` from the tables equals dalek's double-base
        /// multiplication, for any scalars, keys, window widths and
        /// strides (one window kept to all of them).
        #[test]
        fn fixed_base_matches_dalek(s in any::<[u8; 32]>(), k in any::<[u8; 32]>(),
                                    a in any::<[u8; 32]>(), w in 3u32..=8, stride in 1usize..=86) {
            let (s, k, a) = (scalar(&s), scalar(&k), scalar(&a));
            let point: EdwardsPoint = ED25519_BASEPOINT_POINT * a;
            let stride = stride.min(FixedBase::windows(w));
            let table = FixedBase::with_stride(&point.compress().to_bytes(), w, stride).unwrap();
            let expected = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-point, &s);
            prop_assert_eq!(base_minus(&s.to_bytes(), &k.to_bytes(), &table),
                            expected.compress().to_bytes());
        }

        /// A batch gives each combination's own result, in order.
        #[test]
        fn a_batch_shares_one_inversion_and_changes_no_result(
            seeds in proptest::collection::vec(any::<([u8; 32], [u8; 32], [u8; 32])>(), 1..6),
        ) {
            let tables: Vec<FixedBase> = seeds
                .iter()
                .map(|(_, _, a)| {
                    let point: EdwardsPoint = ED25519_BASEPOINT_POINT * scalar(a);
                    // Two shapes: a batch walks each apart.
                    let stride = if a[0] % 2 == 0 { 1 } else { 7 };
                    FixedBase::with_stride(&point.compress().to_bytes(), 5, stride).unwrap()
                })
                .collect();
            let batch: Vec<Combination> = seeds
                .iter()
                .zip(&tables)
                .map(|((s, k, _), table)| Combination {
                    s: scalar(s).to_bytes(),
                    k: scalar(k).to_bytes(),
                    table,
                })
                .collect();
            let one_by_one: Vec<[u8; 32]> =
                batch.iter().map(|c| base_minus(&c.s, &c.k, c.table)).collect();
            // The scalar batch, whether or not this CPU runs lanes.
            prop_assert_eq!(&compress_all(&base_minus_points(&batch)), &one_by_one);
            prop_assert_eq!(base_minus_all(&batch), one_by_one);
        }
    }
}
