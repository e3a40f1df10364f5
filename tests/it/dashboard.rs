//! The SOC dashboard from outside: sign-in, session cookie and CSRF over
//! HTTP, then the page in headless Chromium (Playwright) against `vigil
//! demo`: sign in, a live anomaly appears, open it, press "False positive",
//! and the feedback is in the log. Screenshots are kept in
//! target/test-artifacts.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as J};

use crate::services::free_port;
use crate::util::*;

/// `vigil demo`, killed on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn browser_ready() {
    let ok = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and Python's playwright: run ./scripts/test.sh, which installs both"
    );
}

#[test]
fn a_soc_analyst_signs_in_sees_a_live_attack_and_marks_it_a_false_positive() {
    browser_ready();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = vigil()
        .args([
            "demo",
            "--duration",
            "300",
            "--listen",
            &addr.to_string(),
            "--data",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    // The demo prints where to look once it serves; keep draining it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    wait_until(
        Duration::from_secs(120),
        || rx.try_iter().find(|l| l.contains("server")).map(|_| ()),
        || "the demo never said where it serves".into(),
    );
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    // Over HTTP: the page without a session, sign-in, cookie, CSRF.
    let page = http(addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 401);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(!page.text().contains(&token));
    let json_type = [("Content-Type", "application/json")];
    let bad = http(
        addr,
        "POST",
        "/v1/session",
        &json_type,
        br#"{"token":"wrong"}"#,
    );
    assert_eq!(bad.status, 401);
    let body = serde_json::to_vec(&json!({ "token": token })).unwrap();
    let as_form = http(
        addr,
        "POST",
        "/v1/session",
        &[("Content-Type", "text/plain")],
        &body,
    );
    assert_eq!(
        as_form.status, 415,
        "a cross-site form cannot sign a browser in"
    );
    let body = serde_json::to_vec(&json!({ "token": token })).unwrap();
    let signed = http(
        addr,
        "POST",
        "/v1/session",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(signed.status, 200, "{}", signed.text());
    let cookie = signed.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let csrf = signed.json()["csrf"].as_str().unwrap().to_string();
    assert_eq!(
        http(addr, "GET", "/", &[("Cookie", &session)], b"").status,
        200
    );
    let feedback = br#"{"verdict":"confirmed"}"#;
    let no_csrf = http(
        addr,
        "POST",
        "/v1/anomalies/x/feedback",
        &[("Cookie", &session)],
        feedback,
    );
    assert_eq!(no_csrf.status, 403);
    assert_eq!(no_csrf.json()["error"], "csrf");
    let wrong = http(
        addr,
        "POST",
        "/v1/anomalies/x/feedback",
        &[("Cookie", &session), ("X-CSRF-Token", "0000")],
        feedback,
    );
    assert_eq!(wrong.status, 403);
    let with = http(
        addr,
        "POST",
        "/v1/anomalies/x/feedback",
        &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
        feedback,
    );
    assert_ne!(
        with.status,
        403,
        "the CSRF header lets the request through: {}",
        with.text()
    );
    let css = http(addr, "GET", "/assets/app.css", &[], b"");
    assert_eq!(css.status, 200);

    // In the browser.
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/dashboard_browser.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("http://{addr}/"))
        .arg(&token)
        .arg(&shots)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let anomaly = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(shots.join("dashboard-anomaly.png").exists());

    // The feedback is stored and receipted.
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str())];
    let verdict = wait_until(
        Duration::from_secs(30),
        || {
            let list = http(addr, "GET", "/v1/anomalies?limit=10000", &h, b"").json();
            list["anomalies"]
                .as_array()?
                .iter()
                .find(|a| a["anomaly_id"] == json!(anomaly))
                .and_then(|a| a["feedback"]["verdict"].as_str().map(String::from))
        },
        || format!("no feedback on {anomaly}"),
    );
    assert_eq!(verdict, "false_positive");
    let q = serde_json::to_vec(&json!({"sql": format!(
        "SELECT count(*) FROM events WHERE action = 'vigil.anomaly_feedback' AND verdict = 'accepted' AND attributes LIKE '%{anomaly}%'"
    )}))
    .unwrap();
    let r = http(
        addr,
        "POST",
        "/v1/query",
        &[h[0], ("Content-Type", "application/json")],
        &q,
    );
    let n: &J = &r.json()["rows"][0][0];
    assert!(
        n.as_i64().unwrap_or(0) >= 1,
        "the feedback's receipt: {}",
        r.text()
    );
    drop(demo);
}
