//! Files: the data directory, log segments, tiles, the duplicate index,
//! checkpoints, quarantine, and the log's read side.
//!
//! Everything durable goes through here. "Durable" is the contract's word:
//! written and `fdatasync`ed, and for a newly created file its directory
//! synced too. [`layout`] names every path of a data directory.
//!
//! - [`segments`]: appending records with group commit and reading them by index.
//! - [`walk`]: the one walk of the log, shared by recovery, verification and cursors.
//! - [`recover`]: making the files durable at start and finding where the log ends.
//! - [`dedupe`]: the persisted duplicate index.
//! - [`tiles`]: the Merkle tree as C2SP tlog-tiles on disk.
//! - [`checkpoints`]: every signed checkpoint, in order.
//! - [`view`]: the read side (receipts, proofs, checkpoints, a durable cursor).
//! - [`datadir`], [`quarantine`], [`fsutil`].

pub mod checkpoints;
pub mod datadir;
pub mod dedupe;
pub mod fsutil;
pub mod layout;
pub mod quarantine;
pub mod recent;
pub mod recover;
pub mod segments;
pub mod tiles;
pub mod view;
pub mod walk;
