//! The receipt log's formats and algorithms, without I/O (contract 3 and 4).
//!
//! - [`receipt`]: the receipt body, its JCS bytes, leaf hash and chain.
//! - [`merkle`]: the RFC 9162 tree, inclusion and consistency proofs.
//! - [`note`]: C2SP signed notes, checkpoints and verifier keys.
//! - [`proof`]: c2sp.org/tlog-proof@v1 texts, built and verified.
//! - [`tiles`]: C2SP tlog-tiles paths and tile math.
//! - [`record`]: the framing of records in log segments.
//!
//! Files, fsync and recovery live in [`crate::store`].

pub mod merkle;
pub mod note;
pub mod proof;
pub mod receipt;
pub mod record;
pub mod tiles;
