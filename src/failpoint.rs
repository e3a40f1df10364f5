//! Fault injection for the outside-in tests: `VIGIL_FAILPOINTS` names
//! faults to fire, as `name=key` pairs separated by commas (for example
//! `judge-panic=evt-7` panics in the judging pool on the event whose
//! `event_id` is `evt-7`). Read once at first use; when the variable is
//! unset (always, in production) each check is one load of an empty list.
//!
//! Failpoints in this build:
//! - `judge-panic=<event_id>`: a verification thread panics on that event.
//! - `writer-panic=<event_id>`: the log writer thread panics on that event.

use std::sync::OnceLock;

static POINTS: OnceLock<Vec<(String, String)>> = OnceLock::new();

fn points() -> &'static [(String, String)] {
    POINTS.get_or_init(|| {
        std::env::var("VIGIL_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(n, k)| (n.trim().to_string(), k.trim().to_string()))
            .collect()
    })
}

/// Whether the failpoint `name` is set for `key`.
pub fn hit(name: &str, key: &str) -> bool {
    let points = points();
    !points.is_empty() && points.iter().any(|(n, k)| n == name && k == key)
}
