//! Agent keys from an https JWKS source (a local TLS server,
//! tests/py/jwks_server.py): fetched at start and refreshed with ETag and
//! Cache-Control; a refused document or a failing source keeps the
//! previous keys and is counted; a restart while the source is down starts
//! from the last good copy; every change is in the log.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as J};

use crate::detection::metric;
use crate::services::free_port;
use crate::util::*;

struct JwksServer {
    child: Child,
    url: String,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> JwksServer {
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/jwks_server.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        || Some(()).filter(|_| dir.join("ready").exists()),
        || "the JWKS server did not start".into(),
    );
    JwksServer {
        child,
        url: format!("https://127.0.0.1:{port}/jwks.json"),
    }
}

fn publish(dir: &Path, keys: &[J]) {
    let tmp = dir.join("jwks.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("jwks.json")).unwrap();
}

fn verdict(server: &Server, s: &Signer, id: &str) -> String {
    server.post_ndjson(&[s.sign(&s.event(id, json!({})))]);
    server.receipt(&s.agent, id).json()["receipt"]["verdict"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn keys_from_an_https_source_refresh_and_survive_its_failures() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let a = Signer::new(101, "r-0", "r-0#1");
    let b = Signer::new(102, "r-1", "r-1#1");
    let owner = json!({"owner": "ops"});
    publish(&src, &[a.jwk(owner.clone())]);
    let jwks = serve(&src);
    let cfg = dir.path().join("remote.toml");
    std::fs::write(
        &cfg,
        format!(
            "[keys]\njwks = [\"{}\"]\npoll_s = 5\nca_file = \"{}\"\n",
            jwks.url,
            src.join("ca.pem").display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(verdict(&server, &a, "a-1"), "accepted");
    assert_eq!(
        verdict(&server, &b, "b-1"),
        "",
        "r-1 has no key yet: no receipt"
    );

    // A new document is fetched within its max-age (5 s) and taken.
    publish(&src, &[a.jwk(owner.clone()), b.jwk(owner.clone())]);
    let mut n = 0;
    wait_until(
        Duration::from_secs(30),
        || {
            n += 1;
            Some(()).filter(|_| verdict(&server, &b, &format!("b-wait-{n}")) == "accepted")
        },
        || "the new key was not fetched".into(),
    );
    // Refreshes are conditional: an unchanged document is a 304.
    let requests = || std::fs::read_to_string(src.join("requests")).unwrap_or_default();
    wait_until(
        Duration::from_secs(30),
        || Some(()).filter(|_| requests().lines().any(|l| l.starts_with("304 \""))),
        || format!("no conditional refresh: {}", requests()),
    );

    // A refused document (a key for agent vigil) and a failing source
    // keep the keys in force, and are counted.
    let vigil_key = Signer::new(103, "vigil", "v#1");
    publish(&src, &[a.jwk(owner.clone()), vigil_key.jwk(json!({}))]);
    let failures = |server: &Server| metric(server, "vigil_jwks_fetch_failures_total");
    wait_until(
        Duration::from_secs(30),
        || Some(()).filter(|_| failures(&server) >= 1),
        || "the refused document was not counted".into(),
    );
    assert_eq!(
        verdict(&server, &b, "b-2"),
        "accepted",
        "previous keys stay"
    );
    std::fs::write(src.join("status"), "503").unwrap();
    let before = failures(&server);
    wait_until(
        Duration::from_secs(30),
        || Some(()).filter(|_| failures(&server) > before),
        || "the failing source was not counted".into(),
    );
    assert_eq!(
        verdict(&server, &a, "a-2"),
        "accepted",
        "previous keys stay"
    );

    // A restart while the source is down starts from the last good copy.
    assert_eq!(server.stop(), Some(0));
    let mut server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(verdict(&server, &b, "b-3"), "accepted");
    assert_eq!(server.stop(), Some(0));
    assert_log_verifies(&data);

    // Plain http is refused, and with no copy the start stops, saying why.
    let plain = dir.path().join("plain.toml");
    std::fs::write(
        &plain,
        "[keys]\njwks = [\"http://127.0.0.1:1/jwks.json\"]\n",
    )
    .unwrap();
    let out = run_vigil(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().join("data2").to_str().unwrap(),
        "--config",
        plain.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("https only") && err.contains("no earlier copy"),
        "{err}"
    );
}
