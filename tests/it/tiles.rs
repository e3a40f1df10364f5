//! Issue 8: the log as C2SP tlog-tiles, checked by an independent client
//! written in Python from the specs alone (tests/py/tlog_client.py): it
//! verifies the checkpoint with the log's verifier key, recomputes the
//! root from the tiles, checks every entry bundle against the level-0
//! tiles, and builds inclusion proofs from tiles; over HTTP and from a
//! plain copy of DIR/tlog (what a static file server or CDN would serve).

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value as J};

use crate::util::*;

/// Runs the independent client; returns its exit code, JSON summary and output.
pub fn client(source: &str, vkey: &str, inclusion: &[u64]) -> (Option<i32>, J, String) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("python3");
    cmd.arg(here.join("tests/py/tlog_client.py")).args([
        "--source",
        source,
        "--vkey",
        vkey,
        "--entries",
        "--json",
    ]);
    if !inclusion.is_empty() {
        cmd.arg("--inclusion");
        cmd.args(inclusion.iter().map(u64::to_string));
    }
    let out = cmd.output().expect("python3 runs the tlog client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = serde_json::from_str(&stdout).unwrap_or(J::Null);
    (out.status.code(), summary, stderr + &stdout)
}

#[test]
fn an_independent_tlog_tiles_client_follows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (signers, jwks) = fleet(dir.path(), "tiler", 40, 3);
    let mut server = Server::start(&data, &["--keys", jwks.to_str().unwrap()]);
    for round in 0..4 {
        let lines: Vec<Vec<u8>> = (0..250)
            .map(|i| {
                let s = &signers[i % signers.len()];
                s.sign(&s.event(&format!("tile-{round}-{i}"), json!({})))
            })
            .collect();
        server.post_ndjson(&lines);
    }
    let size = server.log_size();
    // Wait for a checkpoint of everything.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !http(server.addr, "GET", "/checkpoint", &[], b"")
        .text()
        .contains(&format!("\n{size}\n"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of size {size}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let vkey = http(server.addr, "GET", "/v1/log-key", &[], b"").text();
    let vkey = vkey.lines().next().unwrap().to_string();

    // Over HTTP.
    let url = format!("http://{}", server.addr);
    let (code, summary, out) = client(&url, &vkey, &[0, 1, 255, 256, size - 1]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(summary["size"], size, "{out}");
    assert_eq!(summary["entries_checked"], size, "{out}");
    assert_eq!(summary["ok"], true, "{out}");

    // Full tiles are immutable; the checkpoint is not cached.
    let full = http(server.addr, "GET", "/tile/0/000", &[], b"");
    assert_eq!(full.status, 200);
    assert_eq!(full.body.len(), 256 * 32);
    assert_eq!(
        full.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        full.header("content-type"),
        Some("application/octet-stream")
    );
    let bundle = http(server.addr, "GET", "/tile/entries/000", &[], b"");
    assert_eq!(bundle.status, 200);
    let cp = http(server.addr, "GET", "/checkpoint", &[], b"");
    assert_eq!(cp.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        cp.text(),
        http(server.addr, "GET", "/v1/checkpoint", &[], b"").text()
    );
    for missing in [
        "/tile/0/999",
        "/tile/0/00",
        "/tile/1/000",
        "/tile/0/000.p/0",
        "/tile/../origin",
    ] {
        assert_eq!(
            http(server.addr, "GET", missing, &[], b"").status,
            404,
            "{missing}"
        );
    }

    // From a plain copy of DIR/tlog, as a static file server would serve it.
    assert_eq!(server.stop(), Some(0));
    let copy = dir.path().join("mirror");
    let status = Command::new("cp")
        .arg("-r")
        .arg(data.join("tlog"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let (code, summary, out) = client(copy.to_str().unwrap(), &vkey, &[7, size / 2]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(summary["size"], size, "{out}");

    // The client notices a changed byte in a copied tile.
    let tile = copy.join("tile/0/001");
    let mut bytes = std::fs::read(&tile).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&tile, bytes).unwrap();
    let (code, _, out) = client(copy.to_str().unwrap(), &vkey, &[]);
    assert_eq!(code, Some(1), "{out}");
}

/// The Python client's own known answers (sizes 0 to 70,000, the spec's
/// example, the contract's vectors, tampered tiles).
#[test]
fn the_tlog_client_passes_its_self_test() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(here.join("tests/py/test_tlog_client.py"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
