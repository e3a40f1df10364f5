//! The RFC 9162 (section 2.1) Merkle tree: hashes, proofs, verification.
//!
//! [`Tree`] keeps the hash of every complete subtree in memory (about two
//! hashes per leaf) so that any root, inclusion proof or consistency proof is
//! O(log n) hash lookups. The verification functions take nothing but
//! hashes, as an outside auditor would.

use crate::event::{sha256, Hash};

/// RFC 9162 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut buf = Vec::with_capacity(data.len() + 1);
    buf.push(0);
    buf.extend_from_slice(data);
    sha256(&buf)
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

/// An append-only Merkle tree over leaf hashes.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// `levels[k][i]` is the hash of leaves `[i*2^k, (i+1)*2^k)`.
    levels: Vec<Vec<Hash>>,
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

    /// Removes leaves from `size` on (used when recovery cuts a torn tail).
    pub fn truncate(&mut self, size: u64) {
        for (k, level) in self.levels.iter_mut().enumerate() {
            level.truncate((size >> k) as usize);
        }
    }

    /// MTH(D[lo:hi]) for `lo < hi <= size`.
    fn subtree(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(lo >> k) as usize];
        }
        let k = split_point(n);
        node_hash(&self.subtree(lo, lo + k), &self.subtree(lo + k, hi))
    }

    /// The root of the tree made of the first `size` leaves.
    pub fn root(&self, size: u64) -> Hash {
        assert!(
            size <= self.size(),
            "root of size {size} asked of a tree of {}",
            self.size()
        );
        if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        }
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Vec<Hash> {
        assert!(
            index < size && size <= self.size(),
            "inclusion proof out of range"
        );
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        proof
    }

    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if n == 1 {
            return;
        }
        let k = split_point(n);
        if m - lo < k {
            self.path(m, lo, lo + k, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.path(m, lo + k, hi, out);
            out.push(self.subtree(lo, lo + k));
        }
    }

    /// The consistency proof from `from` to `to` leaves (empty when equal).
    pub fn consistency_proof(&self, from: u64, to: u64) -> Vec<Hash> {
        assert!(
            from >= 1 && from <= to && to <= self.size(),
            "consistency proof out of range"
        );
        let mut proof = Vec::new();
        if from < to {
            self.subproof(from, 0, to, true, &mut proof);
        }
        proof
    }

    fn subproof(&self, m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(self.subtree(lo, hi));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, lo, lo + k, complete, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, out);
            out.push(self.subtree(lo, lo + k));
        }
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
    fn truncate_restores_earlier_roots() {
        let mut t = tree(13);
        let r9 = t.root(9);
        t.truncate(9);
        assert_eq!(t.size(), 9);
        assert_eq!(t.root(9), r9);
        t.push(leaf_hash(b"leaf-9"));
        assert_eq!(t.root(10), tree(10).root(10));
    }
}
