//! Vigil's outside-in tests: the real binary, real HTTP, real files.
//! One test binary, one module per area.

mod util;

mod cli;
mod http;
mod interop;
mod keys;
mod schemas;
mod vectors;
