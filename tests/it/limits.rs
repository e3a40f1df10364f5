//! Hostile input against the running server (issue 14): a 100 MB line,
//! a million distinct agent ids, ten thousand idle connections. Each gets
//! a clear answer, the server keeps serving, and its peak memory (VmHWM,
//! printed for the README) stays bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::util::*;

/// Sends a request head and then `len` bytes of `fill` (ignoring a reset
/// once the server has answered), and reads the answer.
fn post_streamed(s: &Server, path: &str, len: usize, fill: u8) -> (u16, String) {
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: vigil\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {len}\r\n\r\n",
        s.token
    )
    .unwrap();
    let chunk = vec![fill; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        if stream.write_all(&chunk[..n]).is_err() {
            break; // the server answered and closed: read what it said
        }
        left -= n;
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn a_100_mb_line_gets_413_or_a_quarantined_item_with_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[]);
    // At the default max_body_bytes (10 MiB): 413 with what to do.
    let (status, text) = post_streamed(&s, "/v1/events", 100 << 20, b'x');
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("max_body_bytes"),
        "the answer names the setting: {text}"
    );
    let (status, text) = post_streamed(&s, "/services/collector/event", 100 << 20, b' ');
    assert_eq!(status, 413, "{text}");
    let peak = s.peak_rss_mib();
    eprintln!("peak RSS after two 100 MB bodies refused: {peak} MiB");
    assert!(peak < 256, "peak RSS {peak} MiB");
    assert_eq!(s.stop(), Some(0));

    // A server that takes 128 MiB bodies: the line is one item, too large
    // to be an event (64 KiB), quarantined with its first 64 KiB.
    let cfg = dir.path().join("big.toml");
    std::fs::write(&cfg, "[server]\nmax_body_bytes = 134217728\n").unwrap();
    let mut s = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let (status, text) = post_streamed(&s, "/v1/events", 100 << 20, b'x');
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"status\":\"rejected\""), "{text}");
    assert!(text.contains("\"reason\":\"unparseable\""), "{text}");
    let q = s.req("GET", "/v1/quarantine", None, b"").json();
    assert_eq!(q["entries"].as_array().map(Vec::len), Some(1), "{q}");
    let peak = s.peak_rss_mib();
    eprintln!("peak RSS taking one 100 MB line: {peak} MiB");
    assert!(peak < 640, "peak RSS {peak} MiB for a 100 MB body");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn a_million_distinct_agent_ids_are_quarantined_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new(81, "real", "real#1");
    let jwks = dir.path().join("agents.jwks.json");
    write_jwks(&jwks, &[signer.jwk(json!({}))]);
    let mut s = Server::start(
        &dir.path().join("data"),
        &["--keys", jwks.to_str().unwrap()],
    );
    let (total, mut body, mut answered) = (1_000_000, Vec::with_capacity(10 << 20), 0);
    for i in 0..total {
        let line = format!(
            "{{\"spec\":\"vigil.event/v1\",\"event_id\":\"ghost-{i}\",\"agent_id\":\"ghost-{i}\",\"key_id\":\"ghost-{i}#1\",\
             \"occurred_at\":\"2026-11-30T12:00:00.000Z\",\"action\":{{\"type\":\"tool.call\",\"tool\":\"x\"}},\"signature\":\"AAAA\"}}\n"
        );
        body.extend_from_slice(line.as_bytes());
        if body.len() > 9_800_000 || i + 1 == total {
            let r = s.req("POST", "/v1/events", Some("application/x-ndjson"), &body);
            assert_eq!(r.status, 200, "{}", r.text());
            let j = r.json();
            let rejected = j["rejected"].as_u64().unwrap();
            assert_eq!(rejected as usize, j["results"].as_array().unwrap().len());
            assert_eq!(
                j["results"][0]["reason"], "unknown_agent",
                "{}",
                j["results"][0]
            );
            assert!(
                j["results"][0].get("receipt").is_none(),
                "nothing is receipted for an unknown agent"
            );
            answered += rejected;
            body.clear();
        }
    }
    assert_eq!(answered, total as u64);
    // The real agent still gets through, and the log did not grow by a
    // million records.
    let r = s.post_ndjson(&[signer.sign(&signer.event("real-1", json!({})))]);
    assert_eq!(r["accepted"], 1, "{r}");
    assert!(s.log_size() < 10, "log size {}", s.log_size());
    let q = s.req("GET", "/v1/quarantine?limit=10000", None, b"").json();
    let kept = q["entries"].as_array().unwrap().len();
    assert!(kept <= 10_000, "the quarantine keeps its bound: {kept}");
    let metrics = s.req("GET", "/metrics", None, b"").text();
    assert!(
        metrics.contains("vigil_quarantine_dropped_total 99"),
        "what the bound dropped is counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("quarantine"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let peak = s.peak_rss_mib();
    eprintln!("peak RSS after a million distinct unknown agent ids: {peak} MiB");
    assert!(peak < 512, "peak RSS {peak} MiB");
    assert_eq!(s.stop(), Some(0));
}

#[test]
fn ten_thousand_idle_connections_are_bounded_and_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        "[server]\nmax_connections = 500\nheader_timeout_s = 10\n",
    )
    .unwrap();
    let mut s = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let mut idle: Vec<Option<TcpStream>> = (0..10_000)
        .map(|i| {
            let c = TcpStream::connect(s.addr).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            c.set_nonblocking(true).unwrap();
            Some(c)
        })
        .collect();
    let peak = s.peak_rss_mib();
    // Every connection ends: over the limit it is answered 503 at once and
    // closed; within it, closed after header_timeout_s without a request.
    let (mut refused, mut timed_out) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while idle.iter().any(Option::is_some) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} idle connections still open after 120 s",
            idle.iter().flatten().count()
        );
        for slot in idle.iter_mut() {
            let Some(c) = slot else { continue };
            let mut buf = [0u8; 512];
            match c.read(&mut buf) {
                Ok(0) => timed_out += 1,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
                    assert!(text.contains("too_many_connections"), "{text}");
                    refused += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => timed_out += 1,
            }
            *slot = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "10k idle connections at max_connections 500: {refused} refused with 503, {timed_out} closed after header_timeout_s; peak RSS {peak} MiB"
    );
    assert!(
        refused > 0 && timed_out >= 500,
        "{refused} refused, {timed_out} timed out"
    );
    assert!(peak < 256, "peak RSS {peak} MiB");
    // The server serves as before, and counted both.
    let metrics = s.req("GET", "/metrics", None, b"").text();
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count("vigil_http_connections_refused_total"),
        refused,
        "{metrics}"
    );
    assert!(
        count("vigil_http_header_timeouts_total") >= timed_out as u64 - 5,
        "{metrics}"
    );
    assert_eq!(s.stop(), Some(0));
}
