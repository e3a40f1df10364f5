//! Files: the data directory, log segments, checkpoints, quarantine.
//!
//! Everything durable goes through here. "Durable" is the contract's word:
//! written and `fdatasync`ed, and for a newly created file its directory
//! synced too. Layout of a data directory:
//!
//! ```text
//! DIR/origin                 the log's origin (fixed at creation)
//! DIR/log.key                the log's Ed25519 key, a private JWK (0600)
//! DIR/pipeline.key           the pipeline's event key for agent vigil (0600)
//! DIR/admin.token            generated token when none is configured (0600)
//! DIR/log-keys.txt           every verifier key the log has used, newest first
//! DIR/keys/snapshot.jsonl    every agent public key ever used (for verify)
//! DIR/log/<first index>.seg  receipt log segments (receipt body + event bytes)
//! DIR/checkpoints.log        every signed checkpoint, in order
//! DIR/quarantine/<n>.q       bounded quarantine of input that got no receipt
//! ```

pub mod checkpoints;
pub mod datadir;
pub mod fsutil;
pub mod quarantine;
pub mod segments;
