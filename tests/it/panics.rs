//! Issue 7, finding 10: a panic in the judging pool or in the log writer
//! marks the pipeline failed, makes `/readyz` answer 503 with the reason,
//! is logged, and makes `vigil serve` exit non-zero, instead of aborting
//! the process (rayon's default) or answering "ready" while refusing every
//! event. Faults are injected with `VIGIL_FAILPOINTS`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

fn panic_on(failpoint: &str, event_id: &str) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = vector_jwks(dir.path());
    let data = dir.path().join("data");
    let mut cmd = vigil();
    cmd.env("VIGIL_FAILPOINTS", format!("{failpoint}={event_id}"));
    let mut s = Server::start_with(cmd, &data, &["--keys", jwks.to_str().unwrap()]);
    let hr = Signer::hr();
    let ok = s.post_ndjson(&[hr.sign(&hr.event("before", json!({})))]);
    assert_eq!(ok["results"][0]["status"], "accepted");
    let r = s.req(
        "POST",
        "/v1/events",
        Some("application/json"),
        &hr.sign(&hr.event(event_id, json!({}))),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("panicked"), "{}", r.text());
    let ready = http(s.addr, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["status"], "failed");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = s.child.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "vigil serve did not exit after the panic: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "exit status {status}");
    assert!(s.log_text().contains("panicked"), "{}", s.log_text());
    s.child = None;
    // What was acknowledged is still there, and the log verifies.
    assert_log_verifies(&data);
    let mut again = Server::start(&data, &["--keys", jwks.to_str().unwrap()]);
    assert_eq!(again.receipt(&hr.agent, "before").status, 200);
    assert_eq!(again.stop(), Some(0));
}

#[test]
fn a_panic_while_judging_fails_the_pipeline_and_exits_non_zero() {
    panic_on("judge-panic", "boom-judge");
}

#[test]
fn a_panic_in_the_log_writer_fails_the_pipeline_and_exits_non_zero() {
    panic_on("writer-panic", "boom-writer");
}
