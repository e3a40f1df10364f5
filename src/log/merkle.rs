//! The RFC 9162 (section 2.1) Merkle tree: hashes, proofs, verification.
//!
//! Proofs are computed over any [`NodeSource`]: something that can give
//! the hash of a complete, aligned subtree (the server's tiles on disk, or
//! the in-memory [`Tree`] used by tests and tools). [`CompactRange`] keeps
//! only the right edge of a growing tree (one hash per level), enough for
//! its root at every size: the checkpointer and the verifier use it, so
//! neither holds the whole tree. The verification functions take nothing
//! but hashes, as an outside auditor would.

use crate::event::{sha256, Hash};

/// RFC 9162 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 9162 interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    sha256(b"")
}

/// Largest power of two strictly less than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of a complete subtree: `level` 0 is a leaf, and the node at
/// (`level`, `index`) covers leaves `[index * 2^level, (index + 1) * 2^level)`.
pub trait NodeSource {
    /// Why a node could not be read (an I/O error for tiles on disk).
    type Error;

    /// The hash of the complete subtree at (`level`, `index`).
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// MTH(D[lo:hi]) for `lo < hi`, from complete subtrees.
pub fn subtree<S: NodeSource>(src: &S, lo: u64, hi: u64) -> Result<Hash, S::Error> {
    let n = hi - lo;
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        let level = n.trailing_zeros();
        return src.node(level, lo >> level);
    }
    let k = split_point(n);
    Ok(node_hash(
        &subtree(src, lo, lo + k)?,
        &subtree(src, lo + k, hi)?,
    ))
}

/// The root of the tree of the first `size` leaves.
pub fn root<S: NodeSource>(src: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        Ok(empty_root())
    } else {
        subtree(src, 0, size)
    }
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves
/// (RFC 9162 section 2.1.3.1); `index < size`.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    assert!(index < size, "inclusion proof out of range");
    let mut proof = Vec::new();
    let (mut lo, mut hi) = (0, size);
    let mut siblings = Vec::new();
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index - lo < k {
            siblings.push((lo + k, hi));
            hi = lo + k;
        } else {
            siblings.push((lo, lo + k));
            lo += k;
        }
    }
    for (a, b) in siblings.into_iter().rev() {
        proof.push(subtree(src, a, b)?);
    }
    Ok(proof)
}

/// The consistency proof from `from` to `to` leaves (RFC 9162 section
/// 2.1.4.1); empty when they are equal; `1 <= from <= to`.
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, S::Error> {
    assert!(from >= 1 && from <= to, "consistency proof out of range");
    let mut ranges = Vec::new();
    if from < to {
        subproof_ranges(from, 0, to, true, &mut ranges);
    }
    ranges
        .into_iter()
        .map(|(a, b)| subtree(src, a, b))
        .collect()
}

/// The leaf ranges whose hashes make SUBPROOF(m, D[lo:hi], complete).
fn subproof_ranges(m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push((lo, hi));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof_ranges(m, lo, lo + k, complete, out);
        out.push((lo + k, hi));
    } else {
        subproof_ranges(m - k, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

/// The right edge of a growing tree: the roots of its complete subtrees,
/// largest first (one per set bit of the size). Appending is amortised
/// O(1); the root at the current size is O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    peaks: Vec<(u32, Hash)>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// The range of a tree of `size` leaves, from a source of its nodes.
    pub fn from_source<S: NodeSource>(src: &S, size: u64) -> Result<CompactRange, S::Error> {
        let mut peaks = Vec::new();
        let mut start = 0;
        for level in (0..64).rev() {
            if size & (1 << level) != 0 {
                peaks.push((level, src.node(level, start >> level)?));
                start += 1 << level;
            }
        }
        Ok(CompactRange { size, peaks })
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its peaks' hashes, largest subtree first: with the size, all it
    /// takes to go on appending (a proof of everything before a range).
    pub fn hashes(&self) -> Vec<Hash> {
        self.peaks.iter().map(|(_, h)| *h).collect()
    }

    /// The range of a tree of `size` leaves from its peaks' hashes (as
    /// [`CompactRange::hashes`] gives them); `None` when their number is
    /// not the number of set bits of `size`.
    pub fn from_hashes(size: u64, hashes: &[Hash]) -> Option<CompactRange> {
        let levels: Vec<u32> = (0..64).rev().filter(|l| size & (1 << l) != 0).collect();
        if levels.len() != hashes.len() {
            return None;
        }
        Some(CompactRange {
            size,
            peaks: levels.into_iter().zip(hashes.iter().copied()).collect(),
        })
    }

    /// Appends a leaf hash; calls `completed(level, index, hash)` for every
    /// complete subtree it closes (the leaf itself at level 0 first).
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let mut level = 0;
        let mut hash = leaf;
        let mut index = self.size;
        completed(0, index, &hash);
        while let Some(&(l, left)) = self.peaks.last() {
            if l != level {
                break;
            }
            self.peaks.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            completed(level, index, &hash);
        }
        self.peaks.push((level, hash));
        self.size += 1;
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _, _| {});
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// An append-only Merkle tree held whole in memory (every complete
/// subtree's hash, about two hashes per leaf): for tests and small tools;
/// the server reads its tree from tiles.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// `levels[k][i]` is the hash of leaves `[i*2^k, (i+1)*2^k)`.
    levels: Vec<Vec<Hash>>,
}

impl NodeSource for Tree {
    type Error = std::convert::Infallible;

    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        Ok(self.levels[level as usize][index as usize])
    }
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree {
            levels: vec![Vec::new()],
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(index as usize).copied()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let l = &self.levels[level];
            let parent = node_hash(&l[l.len() - 2], &l[l.len() - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// The root of the tree made of the first `size` leaves.
    pub fn root(&self, size: u64) -> Hash {
        assert!(
            size <= self.size(),
            "root of size {size} asked of a tree of {}",
            self.size()
        );
        let Ok(r) = root(self, size);
        r
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Vec<Hash> {
        assert!(size <= self.size(), "inclusion proof out of range");
        let Ok(p) = inclusion_proof(self, index, size);
        p
    }

    /// The consistency proof from `from` to `to` leaves (empty when equal).
    pub fn consistency_proof(&self, from: u64, to: u64) -> Vec<Hash> {
        assert!(to <= self.size(), "consistency proof out of range");
        let Ok(p) = consistency_proof(self, from, to);
        p
    }
}

/// Verifies an inclusion proof (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Verifies a consistency proof (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 || first > second || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_root);
    }
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *first_root && sr == *second_root && snode == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u64) -> Tree {
        let mut t = Tree::new();
        for i in 0..n {
            t.push(leaf_hash(format!("leaf-{i}").as_bytes()));
        }
        t
    }

    #[test]
    fn a_range_continues_from_the_hashes_of_what_came_before() {
        let t = tree(40);
        for first in 0..40 {
            let before = CompactRange::from_source(&t, first).unwrap();
            let mut r = CompactRange::from_hashes(first, &before.hashes()).unwrap();
            for i in first..40 {
                r.push(t.leaf(i).unwrap());
                assert_eq!(r.root(), t.root(i + 1), "{first}..={i}");
            }
            let mut fewer = before.hashes();
            if fewer.pop().is_some() {
                assert!(CompactRange::from_hashes(first, &fewer).is_none());
            }
        }
    }

    #[test]
    fn proofs_verify_for_all_small_trees() {
        let t = tree(40);
        for size in 1..=40 {
            let root = t.root(size);
            for i in 0..size {
                let p = t.inclusion_proof(i, size);
                assert!(
                    verify_inclusion(i, size, &t.leaf(i).unwrap(), &p, &root),
                    "{i}/{size}"
                );
                assert!(!verify_inclusion(i, size, &leaf_hash(b"other"), &p, &root));
            }
            for from in 1..=size {
                let p = t.consistency_proof(from, size);
                assert!(
                    verify_consistency(from, size, &t.root(from), &root, &p),
                    "{from}->{size}"
                );
                if from < size {
                    assert!(!verify_consistency(
                        from,
                        size,
                        &t.root(from),
                        &t.root(from),
                        &p
                    ));
                }
            }
        }
    }

    #[test]
    fn the_compact_range_gives_every_root_and_every_completed_node() {
        let t = tree(300);
        let mut c = CompactRange::new();
        assert_eq!(c.root(), empty_root());
        for i in 0..300 {
            let mut seen = Vec::new();
            c.push_with(t.leaf(i).unwrap(), |level, index, hash| {
                assert_eq!(*hash, t.node(level, index).unwrap(), "{level}/{index}");
                seen.push(level);
            });
            assert_eq!(seen.len() as u32, (i + 1).trailing_zeros() + 1);
            assert_eq!(c.root(), t.root(i + 1), "size {}", i + 1);
            assert_eq!(CompactRange::from_source(&t, i + 1).unwrap(), c);
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn tree_of(n: u64, salt: u8) -> Tree {
            let mut t = Tree::new();
            for i in 0..n {
                t.push(leaf_hash(&[&i.to_le_bytes()[..], &[salt]].concat()));
            }
            t
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// Every leaf's inclusion proof verifies against the root of any
            /// tree that holds it, and fails for another leaf, another
            /// index or any changed hash.
            #[test]
            fn inclusion_proofs_verify_and_any_change_fails(
                size in 1u64..600,
                pick in any::<u64>(),
                flip in any::<(usize, u8)>(),
            ) {
                let t = tree_of(size, 1);
                let index = pick % size;
                let root = t.root(size);
                let leaf = t.leaf(index).unwrap();
                let proof = t.inclusion_proof(index, size);
                prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root));
                let other = t.leaf((index + 1) % size).unwrap();
                prop_assert!(size == 1 || !verify_inclusion(index, size, &other, &proof, &root));
                prop_assert!(size == 1 || !verify_inclusion((index + 1) % size, size, &leaf, &proof, &root));
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    let (at, bit) = (flip.0 % bad.len(), flip.1);
                    bad[at][usize::from(bit) % 32] ^= 1 << (bit % 8);
                    prop_assert!(!verify_inclusion(index, size, &leaf, &bad, &root));
                }
            }

            /// A consistency proof between any two sizes verifies, and not
            /// against the root of a tree that differs in one leaf.
            #[test]
            fn consistency_proofs_verify_and_a_forked_tree_fails(
                second in 1u64..600,
                pick in any::<u64>(),
                fork in any::<u64>(),
            ) {
                let first = 1 + pick % second;
                let t = tree_of(second, 1);
                let proof = t.consistency_proof(first, second);
                prop_assert!(verify_consistency(first, second, &t.root(first), &t.root(second), &proof));
                // The same sizes, one leaf before `first` changed: another history.
                let changed = fork % first;
                let mut forked = Tree::new();
                for i in 0..second {
                    let salt = if i == changed { 2 } else { 1 };
                    forked.push(leaf_hash(&[&i.to_le_bytes()[..], &[salt]].concat()));
                }
                prop_assert!(!verify_consistency(first, second, &forked.root(first), &t.root(second), &proof));
            }
        }
    }
}
