//! Vigil's outside-in tests: the real binary, real HTTP, real files.
//! One test binary, one module per area.

mod util;

mod access;
mod admin;
mod cli;
mod crash;
mod dashboard;
mod dashboards;
mod detection;
mod durability;
mod export;
mod http;
mod hygiene;
mod interop;
mod kafka;
mod keys;
mod limits;
mod openapi;
mod operations;
mod panics;
mod query;
mod remote_keys;
mod response;
mod schemas;
mod services;
mod tamper;
mod tiles;
mod traces;
mod vectors;
