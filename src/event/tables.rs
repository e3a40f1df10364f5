//! Faster strict verification with a precomputed table per key.
//!
//! Agent keys are few and reused, so each hot key gets a table of its
//! multiples in every window of a signed radix-`2^KEY_WINDOW` expansion
//! ([`super::edwards`]), and the base point one shared table: `[S]B -
//! [k]A` is then one addition per non-zero digit, no doublings. The checks
//! are exactly those of [`super::signature::verify`] (the contract's): `R`
//! not one of the small-order encodings, `S` canonical, `A` vetted when
//! the key was parsed, and the cofactorless equation checked by comparing
//! the canonical encoding of `[S]B - [k]A` with `R`'s bytes.
//!
//! [`TableCache`] keeps tables within a memory budget. The keys loaded
//! from the registry get theirs at load, in the fastest [`TableShape`] in
//! which all of them fit: full tables (161 KiB each; the default budget
//! holds ~400), else compact ones (one 4-bit window in `s`, `4 (s - 1)`
//! doublings a check: 10,000 keys fit the default budget at 5.6 KiB each,
//! with 40 doublings instead of dalek's ~253). A key without a table (a
//! fleet too large even for compact tables, or a key added since) uses
//! the usual path (in a batch on a CPU with AVX-512 IFMA,
//! [`super::edwards::base_minus_cold`]: the same checks, eight at a time,
//! without a table); once it has missed twice, a background thread
//! builds its table (at most [`BUILDS_PER_SECOND`], so that many
//! cold keys cannot spend the CPU on tables that would not pay back), and
//! the least recently used table goes when the budget is full (then at most
//! [`BUILDS_PER_SECOND_WHEN_FULL`]: more active keys than the budget holds
//! would only evict each other).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use curve25519_dalek::Scalar;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};

pub use super::edwards::TableShape;
use super::edwards::{
    base_minus, base_minus_all, base_minus_cold, lanes_available, ColdCombination, Combination,
    FixedBase,
};
use super::signature::{is_small_order_encoding, verify};

/// Window width of a key's table: 2^(w-1) multiples in each of 256/w
/// windows (w = 6: 43 windows of 32, 161 KiB; the default budget holds
/// 406). criterion, `verify/`, 2026-12-01: a verification with one key,
/// 64 keys and 512 keys in turn took 17.6, 20.4 and 22.2 us with w = 5,
/// 16.7, 17.1 and 19.9 with w = 6, and 15.9, 16.6 and 19.8 with w = 7;
/// `[S]B - [k]A` alone 17.2, 15.6, 14.4, 13.7 and 13.2 us for w = 4 to 8.
/// Wider tables cost a budget more and their builds longer: with 10,000
/// agents taken in turn, w = 7 held fewer tables and `bench ingest` did
/// worse (0.54, p99 at 10k events/s 50 ms), so 6 is the compromise.
pub const KEY_WINDOW: u32 = 6;

/// Tables built per second at most.
pub const BUILDS_PER_SECOND: u32 = 200;
/// Tables built per second at most once the budget is full: when more
/// keys are active than the budget holds, each build evicts a table that
/// may be needed next, so replacing them fast would only spend the CPU
/// (measured: 10,000 keys taken in turn, 1,293 builds for 4.5% hits).
pub const BUILDS_PER_SECOND_WHEN_FULL: u32 = 10;
/// Misses of a key before its table is built.
const MISSES_BEFORE_BUILD: u32 = 2;
/// Keys whose misses are counted before the count starts again (~3 MiB):
/// a fleet of many keys taken in turn must reach a key's second miss.
const MISSED_KEYS: usize = 65_536;
/// The default memory budget for tables.
pub const DEFAULT_TABLE_BYTES: usize = 64 << 20;

/// Window width of a compact table.
pub const COMPACT_WINDOW: u32 = 4;
/// The most windows a compact table skips for one it keeps: 16 keeps four
/// (3.8 KiB), and a check then takes 60 doublings, a quarter of those of a
/// check without a table.
const MAX_STRIDE: usize = 16;

// The shapes a key's table takes here (defined with the table itself).
impl TableShape {
    /// Every window of [`KEY_WINDOW`] bits: the fastest checks.
    pub const FULL: TableShape = TableShape {
        w: KEY_WINDOW,
        stride: 1,
    };

    /// Bytes one table of this shape takes.
    pub const fn bytes(self) -> usize {
        FixedBase::bytes_for(self.w, self.stride) + std::mem::size_of::<KeyTable>()
    }

    /// The fastest shape in which the tables of `keys` keys fit `budget`
    /// bytes: full tables, else compact ones ([`COMPACT_WINDOW`] bits)
    /// keeping as many windows as fit; `None` when even one window in
    /// [`MAX_STRIDE`] does not.
    pub fn fitting(keys: usize, budget: usize) -> Option<TableShape> {
        let each = budget.checked_div(keys)?;
        let compact = (1..=MAX_STRIDE).map(|stride| TableShape {
            w: COMPACT_WINDOW,
            stride,
        });
        std::iter::once(Self::FULL)
            .chain(compact)
            .find(|shape| shape.bytes() <= each)
    }
}

/// The precomputed table of one public key.
pub struct KeyTable {
    table: FixedBase,
    a: [u8; 32],
    shape: TableShape,
}

impl KeyTable {
    /// The table of `key` (which [`super::signature::parse_public_key`]
    /// vetted), laid out as `shape`.
    pub fn new(key: &VerifyingKey, shape: TableShape) -> KeyTable {
        KeyTable {
            table: FixedBase::with_stride(key.as_bytes(), shape.w, shape.stride)
                .expect("a parsed public key decompresses"),
            a: key.to_bytes(),
            shape,
        }
    }

    /// Verifies `sig` over `msg` with the contract's semantics.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        self.scalars(msg, sig)
            .is_some_and(|(s, k)| base_minus(&s, &k, &self.table) == sig[..32])
    }

    fn scalars(&self, msg: &[u8], sig: &[u8; 64]) -> Option<([u8; 32], [u8; 32])> {
        scalars(&self.a, msg, sig)
    }
}

/// `S` and `k = H(R || A || msg)` of a signature by `a`, or `None` when it
/// is refused before any curve arithmetic (small-order `R`, non-canonical
/// `S`).
fn scalars(a: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Option<([u8; 32], [u8; 32])> {
    let r = &sig[..32];
    if is_small_order_encoding(r) {
        return None;
    }
    let s: [u8; 32] = sig[32..].try_into().expect("32 bytes");
    if !is_canonical_scalar(&s) {
        return None;
    }
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Some((s, k.to_bytes()))
}

/// The verdicts of the `cold` checks (keys without a table): eight at a
/// time where the lanes are available, else the usual path one by one.
fn verify_cold(checks: &[Check<'_>], cold: &[usize], verdicts: &mut [bool]) {
    let usual = |i: usize| verify(checks[i].key, checks[i].msg, checks[i].sig);
    if cold.len() < 2 || !lanes_available() {
        cold.iter().for_each(|&i| verdicts[i] = usual(i));
        return;
    }
    let mut batch = Vec::with_capacity(cold.len());
    let mut of = Vec::with_capacity(cold.len());
    for &i in cold {
        let c = &checks[i];
        let a = c.key.to_bytes();
        // Refused before any arithmetic: the verdict stays false.
        if let Some((s, k)) = scalars(&a, c.msg, c.sig) {
            batch.push(ColdCombination { s, k, a });
            of.push(i);
        }
    }
    match base_minus_cold(&batch) {
        Some(encodings) => {
            for (&i, enc) in of.iter().zip(encodings) {
                verdicts[i] = enc.map_or_else(|| usual(i), |enc| enc == checks[i].sig[..32]);
            }
        }
        // One left after the refusals.
        None => of.iter().for_each(|&i| verdicts[i] = usual(i)),
    }
}

/// The group order `L = 2^252 + 27742317777372353535851937790883648493`,
/// little-endian.
const ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Whether little-endian `s` is below `L`: a canonical `S`. What
/// `Scalar::from_canonical_bytes` decides, by comparing bytes from the
/// most significant (`S` is public, so variable time is fine) instead of
/// reducing it.
fn is_canonical_scalar(s: &[u8; 32]) -> bool {
    s.iter().rev().lt(ORDER.iter().rev())
}

/// One signature to check: see [`TableCache::verify_all`].
#[derive(Clone, Copy)]
pub struct Check<'a> {
    /// The signer's key.
    pub key: &'a VerifyingKey,
    /// The signed message.
    pub msg: &'a [u8],
    /// The signature.
    pub sig: &'a [u8; 64],
}

struct Entry {
    table: Arc<KeyTable>,
    last_used: AtomicU64,
}

/// The tables held, and the bytes they take.
#[derive(Default)]
struct Held {
    tables: HashMap<[u8; 32], Entry>,
    bytes: usize,
}

/// What the builder thread is asked for.
enum Build {
    /// The table of a key that keeps missing, paced.
    Missed(VerifyingKey),
    /// The tables of keys just loaded, all of them at once.
    Loaded(Vec<VerifyingKey>),
}

/// Counters of a table cache.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Verifications that used a table.
    pub hits: AtomicU64,
    /// Verifications that did not find one.
    pub misses: AtomicU64,
    /// Tables built.
    pub builds: AtomicU64,
    /// Tables evicted to keep the budget.
    pub evictions: AtomicU64,
}

/// Per-key tables within a memory budget (see the module docs).
pub struct TableCache {
    budget: usize,
    held: RwLock<Held>,
    /// The shape of the tables built from now on ([`TableCache::prepare`]).
    shape: Mutex<TableShape>,
    missed: Mutex<HashMap<[u8; 32], u32>>,
    builder: Mutex<Option<SyncSender<Build>>>,
    clock: AtomicU64,
    /// Hits, misses, builds and evictions so far.
    pub stats: TableStats,
}

impl TableCache {
    /// A cache of at most `budget_bytes` of tables (0 disables tables),
    /// with its builder thread.
    pub fn new(budget_bytes: usize) -> Arc<TableCache> {
        let cache = Arc::new(TableCache {
            budget: budget_bytes,
            held: RwLock::new(Held::default()),
            shape: Mutex::new(TableShape::FULL),
            missed: Mutex::new(HashMap::new()),
            builder: Mutex::new(None),
            clock: AtomicU64::new(0),
            stats: TableStats::default(),
        });
        if cache.budget > 0 {
            let (tx, rx) = sync_channel::<Build>(1024);
            let weak = Arc::downgrade(&cache);
            let spawned = std::thread::Builder::new()
                .name("vigil-tables".into())
                .spawn(move || {
                    super::edwards::prepare_base_point();
                    // Ends when the cache (the only sender) is dropped.
                    while let Ok(build) = rx.recv() {
                        if !build_tables(&weak, build) {
                            return;
                        }
                    }
                });
            if spawned.is_ok() {
                *cache
                    .builder
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
            }
        }
        cache
    }

    /// Verifies with the key's table when it has one, else the usual way
    /// (noting the miss); the verdict is the same either way.
    pub fn verify(&self, key: &VerifyingKey, msg: &[u8], sig: &[u8; 64]) -> bool {
        match self.table_for(key) {
            Some(t) => t.verify(msg, sig),
            None => verify(key, msg, sig),
        }
    }

    /// [`TableCache::verify`] of each check, in order; the checks that
    /// have tables share one field inversion.
    pub fn verify_all(&self, checks: &[Check<'_>]) -> Vec<bool> {
        let mut verdicts = vec![false; checks.len()];
        let mut tabled = Vec::with_capacity(checks.len());
        let mut cold = Vec::new();
        for (i, c) in checks.iter().enumerate() {
            match self.table_for(c.key) {
                Some(t) => {
                    if let Some((s, k)) = t.scalars(c.msg, c.sig) {
                        tabled.push((i, s, k, t));
                    }
                }
                None => cold.push(i),
            }
        }
        verify_cold(checks, &cold, &mut verdicts);
        let batch: Vec<Combination> = tabled
            .iter()
            .map(|(_, s, k, t)| Combination {
                s: *s,
                k: *k,
                table: &t.table,
            })
            .collect();
        for ((i, ..), enc) in tabled.iter().zip(base_minus_all(&batch)) {
            verdicts[*i] = enc == checks[*i].sig[..32];
        }
        verdicts
    }

    /// The key's table, counting the hit or noting the miss.
    fn table_for(&self, key: &VerifyingKey) -> Option<Arc<KeyTable>> {
        let table = self.held().tables.get(key.as_bytes()).map(|e| {
            e.last_used.store(
                self.clock.fetch_add(1, Ordering::Relaxed),
                Ordering::Relaxed,
            );
            e.table.clone()
        });
        match &table {
            Some(_) => self.stats.hits.fetch_add(1, Ordering::Relaxed),
            None => {
                self.note_miss(key);
                self.stats.misses.fetch_add(1, Ordering::Relaxed)
            }
        };
        table
    }

    fn note_miss(&self, key: &VerifyingKey) {
        if self.budget == 0 {
            return;
        }
        let ready = {
            let mut missed = self
                .missed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if missed.len() >= MISSED_KEYS.max(4 * self.budget / self.shape().bytes()) {
                missed.clear(); // cold keys do not pile up
            }
            let n = missed.entry(key.to_bytes()).or_insert(0);
            *n += 1;
            *n == MISSES_BEFORE_BUILD
        };
        if ready {
            let builder = self
                .builder
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(tx) = builder.as_ref() {
                if let Err(TrySendError::Full(_)) = tx.try_send(Build::Missed(*key)) {
                    // Too many waiting: the key will miss again and retry.
                    self.missed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(key.as_bytes());
                }
            }
        }
    }

    /// Builds, in the background, the tables of those of `keys` that have
    /// none, in the fastest [`TableShape`] in which all of them fit the
    /// budget: a fleet's keys are loaded before its traffic, so each
    /// agent's first events already find its table. A fleet too large even
    /// for compact tables gets full tables on use instead (for keys that
    /// miss repeatedly): which of its keys will be active is not known at
    /// load.
    pub fn prepare<'a>(&self, keys: impl IntoIterator<Item = &'a VerifyingKey>) {
        let keys: Vec<&VerifyingKey> = keys.into_iter().collect();
        let shape = TableShape::fitting(keys.len(), self.budget);
        *self
            .shape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = shape.unwrap_or(TableShape::FULL);
        if shape.is_none() {
            return;
        }
        let missing: Vec<VerifyingKey> = {
            let held = self.held();
            keys.into_iter()
                .filter(|k| !held.tables.contains_key(k.as_bytes()))
                .copied()
                .collect()
        };
        let builder = self
            .builder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = builder.as_ref() {
            // A full queue leaves them to be built on use.
            let _ = tx.try_send(Build::Loaded(missing));
        }
    }

    /// The shape of the tables built now.
    fn shape(&self) -> TableShape {
        *self
            .shape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn held(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Builds and adds the table of `key` (unless it has one), evicting the
    /// least recently used while the budget is exceeded.
    pub fn insert(&self, key: &VerifyingKey) {
        let shape = self.shape();
        if shape.bytes() > self.budget || self.has_table(key) {
            return;
        }
        let table = Arc::new(KeyTable::new(key, shape));
        self.stats.builds.fetch_add(1, Ordering::Relaxed);
        let mut held = self
            .held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while held.bytes + shape.bytes() > self.budget {
            let Some(victim) = (held.tables.iter())
                .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(gone) = held.tables.remove(&victim) {
                held.bytes -= gone.table.shape.bytes();
            }
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            table,
            last_used: AtomicU64::new(now),
        };
        if let Some(old) = held.tables.insert(key.to_bytes(), entry) {
            held.bytes -= old.table.shape.bytes();
        }
        held.bytes += shape.bytes();
        drop(held);
        self.missed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key.as_bytes());
    }

    fn has_table(&self, key: &VerifyingKey) -> bool {
        self.held().tables.contains_key(key.as_bytes())
    }

    /// Whether another table of the current shape would evict one.
    fn is_full(&self) -> bool {
        self.held().bytes + self.shape().bytes() > self.budget
    }

    /// Tables held now.
    pub fn len(&self) -> usize {
        self.held().tables.len()
    }

    /// Whether no table is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the tables take now.
    pub fn bytes(&self) -> usize {
        self.held().bytes
    }
}

/// Runs one request of the builder thread; `false` once the cache is gone.
fn build_tables(cache: &std::sync::Weak<TableCache>, build: Build) -> bool {
    match build {
        Build::Loaded(keys) => {
            for key in keys {
                let Some(cache) = cache.upgrade() else {
                    return false;
                };
                cache.insert(&key);
            }
        }
        Build::Missed(key) => {
            let started = Instant::now();
            let Some(cache) = cache.upgrade() else {
                return false;
            };
            cache.insert(&key);
            let per_second = match cache.is_full() {
                true => BUILDS_PER_SECOND_WHEN_FULL,
                false => BUILDS_PER_SECOND,
            };
            drop(cache);
            let pace = Duration::from_secs(1) / per_second;
            std::thread::sleep(pace.saturating_sub(started.elapsed()));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::signature::{parse_public_key, sign};
    use ed25519_dalek::{Signature, SigningKey};
    use proptest::prelude::*;

    fn strict(key: &VerifyingKey, msg: &[u8], sig: &[u8; 64]) -> bool {
        key.verify_strict(msg, &Signature::from_bytes(sig)).is_ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The table path and verify_strict agree on valid signatures and
        /// on any single-bit change of the signature or the message.
        #[test]
        fn the_table_path_agrees_with_verify_strict(
            seed in any::<[u8; 32]>(),
            msg in proptest::collection::vec(any::<u8>(), 0..700),
            flip in 0usize..(64 * 8 + 64),
            stride in 0usize..=MAX_STRIDE,
        ) {
            let sk = SigningKey::from_bytes(&seed);
            let key = parse_public_key(sk.verifying_key().as_bytes()).unwrap();
            // Full tables, and compact ones of every stride.
            let shape = match stride {
                0 => TableShape::FULL,
                stride => TableShape { w: COMPACT_WINDOW, stride },
            };
            let table = KeyTable::new(&key, shape);
            let sig = sign(&sk, &msg);
            prop_assert!(table.verify(&msg, &sig));
            prop_assert!(strict(&key, &msg, &sig));
            let (mut bad_sig, mut bad_msg) = (sig, msg.clone());
            if flip < 512 {
                bad_sig[flip / 8] ^= 1 << (flip % 8);
            } else if !bad_msg.is_empty() {
                let i = (flip - 512) % bad_msg.len();
                bad_msg[i] ^= 1;
            }
            prop_assert_eq!(table.verify(&bad_msg, &bad_sig), strict(&key, &bad_msg, &bad_sig));
        }
    }

    /// `S` is canonical exactly when dalek says so, at `L` and around it.
    #[test]
    fn canonical_s_is_decided_as_dalek_decides() {
        let dalek = |s: [u8; 32]| bool::from(Scalar::from_canonical_bytes(s).is_some());
        let mut cases = vec![ORDER, [0; 32], [0xff; 32]];
        for delta in [1u8, 2, 0xff] {
            let (mut below, mut above) = (ORDER, ORDER);
            below[0] = below[0].wrapping_sub(delta);
            above[0] = above[0].wrapping_add(delta);
            cases.extend([below, above]);
        }
        let mut rng = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..4096 {
            let mut s = proptest::strategy::ValueTree::current(
                &any::<[u8; 32]>().new_tree(&mut rng).unwrap(),
            );
            // Near L: the top byte 0x0f, 0x10 or 0x11, the middle zero or not.
            s[31] = 0x0f + s[30] % 3;
            if s[29].is_multiple_of(2) {
                s[16..31].fill(0);
            }
            cases.push(s);
        }
        for s in cases {
            assert_eq!(is_canonical_scalar(&s), dalek(s), "{s:02x?}");
        }
    }

    /// A batch gives each check the verdict `verify_strict` gives it,
    /// keys with and without tables mixed, valid, corrupted and
    /// small-order signatures.
    #[test]
    fn verify_all_gives_each_check_its_own_verdict() {
        let cache = TableCache::new(DEFAULT_TABLE_BYTES);
        let sks: Vec<SigningKey> = (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let keys: Vec<VerifyingKey> = sks
            .iter()
            .map(|sk| parse_public_key(sk.verifying_key().as_bytes()).unwrap())
            .collect();
        cache.insert(&keys[0]);
        cache.insert(&keys[1]);
        let mut cases = Vec::new();
        for (i, sk) in sks.iter().enumerate() {
            let msg = format!("message {i}").into_bytes();
            let sig = sign(sk, &msg);
            let mut corrupted = sig;
            corrupted[40] ^= 4;
            let mut small = sig;
            small[..32].copy_from_slice(&[0; 32]);
            small[0] = 1;
            cases.extend([
                (i, msg.clone(), sig),
                (i, msg.clone(), corrupted),
                (i, msg, small),
            ]);
        }
        let checks: Vec<Check> = cases
            .iter()
            .map(|(i, msg, sig)| Check {
                key: &keys[*i],
                msg,
                sig,
            })
            .collect();
        let expected: Vec<bool> = cases
            .iter()
            .map(|(i, msg, sig)| strict(&keys[*i], msg, sig))
            .collect();
        assert_eq!(expected.iter().filter(|v| **v).count(), 4);
        assert_eq!(cache.verify_all(&checks), expected);
        assert!(
            cache.stats.hits.load(Ordering::Relaxed) >= 6,
            "two keys by table"
        );
    }

    /// A small-order R with S = k*a satisfies the cofactorless equation;
    /// both paths refuse it, as verify_strict does.
    #[test]
    fn small_order_r_is_refused_by_the_table_path() {
        let sk = SigningKey::from_bytes(&[9u8; 32]);
        let key = parse_public_key(sk.verifying_key().as_bytes()).unwrap();
        let msg = b"small order R";
        let mut r = [0u8; 32];
        r[0] = 1;
        let mut h = Sha512::new();
        h.update(r);
        h.update(key.as_bytes());
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = k * sk.to_scalar();
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice(s.as_bytes());
        assert!(!KeyTable::new(&key, TableShape::FULL).verify(msg, &sig));
        assert!(!strict(&key, msg, &sig));
        // S >= L is refused too.
        let mut big_s = sign(&sk, msg);
        big_s[63] |= 0xf0;
        assert!(!KeyTable::new(&key, TableShape::FULL).verify(msg, &big_s));
    }

    /// `R` plus a point of order 8 (a mixed-order `R`, which cofactored
    /// batch verifiers accept) is refused by both paths.
    #[test]
    fn a_mixed_order_r_is_refused_by_the_table_path() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let sk = SigningKey::from_bytes(&[11u8; 32]);
        let key = parse_public_key(sk.verifying_key().as_bytes()).unwrap();
        let table = KeyTable::new(&key, TableShape::FULL);
        let msg = b"mixed order R";
        let sig = sign(&sk, msg);
        assert!(table.verify(msg, &sig));
        let r = CompressedEdwardsY(sig[..32].try_into().unwrap())
            .decompress()
            .unwrap();
        let mut bads = Vec::new();
        for t in &EIGHT_TORSION[1..] {
            let mut bad = sig;
            bad[..32].copy_from_slice((r + t).compress().as_bytes());
            assert!(!table.verify(msg, &bad));
            assert!(!strict(&key, msg, &bad));
            bads.push(bad);
        }
        // The same batch through a cache with no tables (the cold path,
        // eight at a time where the CPU allows): only the real one passes.
        let no_tables = TableCache::new(0);
        let mut checks = vec![Check {
            key: &key,
            msg,
            sig: &sig,
        }];
        checks.extend(bads.iter().map(|sig| Check {
            key: &key,
            msg,
            sig,
        }));
        let verdicts = no_tables.verify_all(&checks);
        assert!(verdicts[0], "{verdicts:?}");
        assert!(verdicts[1..].iter().all(|v| !v), "{verdicts:?}");
    }

    #[test]
    fn the_cache_builds_tables_for_keys_that_miss_and_keeps_its_budget() {
        let cache = TableCache::new(2 * TableShape::FULL.bytes());
        let keys: Vec<SigningKey> = (1..=3u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        for sk in &keys {
            let key = parse_public_key(sk.verifying_key().as_bytes()).unwrap();
            let sig = sign(sk, b"m");
            for _ in 0..MISSES_BEFORE_BUILD {
                assert!(cache.verify(&key, b"m", &sig));
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while cache.stats.builds.load(Ordering::Relaxed)
                < keys.iter().position(|k| k == sk).unwrap() as u64 + 1
            {
                assert!(Instant::now() < deadline, "a table is built");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(cache.verify(&key, b"m", &sig));
            assert!(!cache.verify(&key, b"n", &sig));
        }
        assert!(cache.stats.hits.load(Ordering::Relaxed) >= 2);
        assert_eq!(cache.bytes(), 2 * TableShape::FULL.bytes());
        assert_eq!(cache.stats.evictions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn keys_that_fit_the_budget_get_tables_at_load_and_a_larger_fleet_on_use() {
        let keys: Vec<VerifyingKey> = (1..=3u8)
            .map(|i| {
                parse_public_key(SigningKey::from_bytes(&[i; 32]).verifying_key().as_bytes())
                    .unwrap()
            })
            .collect();
        let fits = TableCache::new(3 * TableShape::FULL.bytes());
        fits.prepare(&keys);
        let deadline = Instant::now() + Duration::from_secs(5);
        while fits.bytes() < 3 * TableShape::FULL.bytes() {
            assert!(Instant::now() < deadline, "the three tables are built");
            std::thread::sleep(Duration::from_millis(5));
        }
        fits.prepare(&keys); // already held: nothing is built again
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(fits.stats.builds.load(Ordering::Relaxed), 3);
        assert_eq!(fits.stats.misses.load(Ordering::Relaxed), 0);

        // Three keys in the room of two full tables: compact ones, which
        // verify as the full ones do, eight at a time where the CPU allows.
        let compact = TableCache::new(2 * TableShape::FULL.bytes());
        compact.prepare(&keys);
        while compact.len() < 3 {
            assert!(Instant::now() < deadline, "the three tables are built");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(compact.bytes() <= 2 * TableShape::FULL.bytes());
        assert_eq!(compact.shape().w, COMPACT_WINDOW);
        let sks: Vec<SigningKey> = (1..=3u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let sigs: Vec<[u8; 64]> = sks.iter().map(|sk| sign(sk, b"m")).collect();
        let checks: Vec<Check> = (0..6)
            .map(|i| Check {
                key: &keys[i % 3],
                msg: if i < 3 { b"m" } else { b"n" },
                sig: &sigs[i % 3],
            })
            .collect();
        assert_eq!(
            compact.verify_all(&checks),
            [true, true, true, false, false, false]
        );
        assert_eq!(compact.stats.hits.load(Ordering::Relaxed), 6);

        // Not even the most compact fit: which keys will be active is
        // unknown, so none is built at load.
        let too_many = TableCache::new(TableShape::fitting(1, 4 << 10).unwrap().bytes());
        too_many.prepare(&keys);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(too_many.bytes(), 0, "which keys will be active is unknown");
    }

    #[test]
    fn the_shape_is_the_fastest_that_fits() {
        let full = TableShape::FULL.bytes();
        assert_eq!(TableShape::fitting(10, 10 * full), Some(TableShape::FULL));
        assert_eq!(TableShape::fitting(0, full), None);
        // 10,000 keys in the default budget: 6.7 KiB each.
        let shape = TableShape::fitting(10_000, DEFAULT_TABLE_BYTES).unwrap();
        assert_eq!(
            shape,
            TableShape {
                w: COMPACT_WINDOW,
                stride: 11
            }
        );
        assert!(10_000 * shape.bytes() <= DEFAULT_TABLE_BYTES);
        let wider = TableShape {
            w: COMPACT_WINDOW,
            stride: 10,
        };
        assert!(10_000 * wider.bytes() > DEFAULT_TABLE_BYTES);
        // 100,000 keys: not even four windows of 4 bits each.
        assert_eq!(TableShape::fitting(100_000, DEFAULT_TABLE_BYTES), None);
    }
}
