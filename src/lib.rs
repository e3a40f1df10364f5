//! Vigil: the audit and anomaly-detection pipeline behind AI agents.
//!
//! Agents sign every action they take; Vigil verifies each event against the
//! agent key registry, gives every identifiable event a receipt in an
//! append-only, hash-chained log with an RFC 9162 Merkle tree and signed
//! C2SP checkpoints, and lets anyone verify a receipt offline. The external
//! contract (formats, hashes, HTTP paths, exit codes) is `CONTRACT.md`.
//!
//! # Layout
//!
//! Core, bytes in and bytes out, no I/O:
//! - [`json`]: the strict I-JSON parser and RFC 8785 canonical form.
//! - [`event`]: the `vigil.event/v1` object, its field rules and signatures.
//! - [`log`]: receipts, the Merkle tree, signed notes, checkpoints, proofs.
//! - [`time`]: the contract's timestamps.
//! - [`detect`]: per-agent baselines and explained anomalies, in event
//!   time (its [`detect::stage`] follows the log's durable cursor).
//!
//! Around it:
//! - [`keys`]: JWKS loading, the key set events are judged against.
//! - [`store`]: the data directory's files, each write made durable.
//! - [`pipeline`]: judging in parallel, the single log writer with group
//!   commit, recovery, checkpoints; shared by every ingest source.
//! - [`ingest`]: turning request bodies (JSON, NDJSON, Splunk HEC) into items.
//! - [`api`]: the HTTP server (axum), roles and tokens.
//! - [`verify`]: the offline auditor (`vigil verify`).
//! - [`audit`]: sealed segments as Parquet and SQL over them (DataFusion).
//! - [`ocsf`]: anomalies and agent actions as OCSF 1.3.0 for SIEMs.
//! - [`server`]: `vigil serve` put together; [`shutdown`] the stop signal
//!   its background tasks obey; [`config`], [`telemetry`], [`cli`],
//!   [`demo`], [`loadgen`], [`failpoint`] (fault injection for tests),
//!   [`simulate`] (a labelled fleet, and `vigil eval` that scores detection).

#![deny(unsafe_code)]

#[cfg(feature = "server")]
pub mod agents;
#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod audit;
pub mod background;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod client;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod demo;
#[cfg(feature = "server")]
pub mod detect;
pub mod event;
pub mod failpoint;
pub mod hexenc;
#[cfg(feature = "server")]
pub mod hygiene;
pub mod ingest;
pub mod json;
pub mod keys;
pub mod live;
#[cfg(feature = "server")]
pub mod loadgen;
pub mod log;
#[cfg(feature = "server")]
pub mod ocsf;
pub mod pipeline;
#[cfg(feature = "server")]
pub mod respond;
#[cfg(feature = "server")]
pub mod server;
pub mod shutdown;
#[cfg(feature = "server")]
pub mod simulate;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod time;
#[cfg(feature = "server")]
pub mod verify;
