//! The (agent, event id) pairs accepted so far in a walk, to find one
//! accepted twice.
//!
//! Each pair is its 128-bit duplicate-index key (a SHA-256 prefix, so
//! already uniform): the set hashes a key by its first 8 bytes instead of
//! running SipHash over it, and is sized for the log up front so that it
//! never holds two tables while growing. About 17 bytes of memory per
//! accepted record (the one structure of `vigil verify` that grows with
//! the log).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The accepted pairs met so far.
pub struct Claims {
    set: HashSet<u128, BuildHasherDefault<FirstBytes>>,
}

impl Claims {
    /// A set sized for `expected` accepted records.
    pub fn with_capacity(expected: usize) -> Claims {
        Claims {
            set: HashSet::with_capacity_and_hasher(expected, BuildHasherDefault::default()),
        }
    }

    /// Adds a key; `false` when it was already there.
    pub fn insert(&mut self, key: [u8; 16]) -> bool {
        self.set.insert(u128::from_le_bytes(key))
    }
}

/// Hashes a uniformly distributed `u128` by its low 64 bits.
#[derive(Default)]
struct FirstBytes(u64);

impl Hasher for FirstBytes {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*b) << (8 * i);
        }
    }

    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_key_met_before() {
        let mut c = Claims::with_capacity(4);
        let a = [1u8; 16];
        let mut b = a;
        b[15] = 2; // same first 8 bytes, another key
        assert!(c.insert(a));
        assert!(c.insert(b));
        assert!(!c.insert(a));
        assert!(!c.insert(b));
    }
}
