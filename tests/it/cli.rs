//! The command line: keygen, sign, and the demo, run as a user would.

use serde_json::Value as J;

use crate::util::*;

#[test]
fn keygen_and_sign_make_events_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bot.key.jwk");
    let out = run_vigil(&[
        "keygen",
        "--agent",
        "report-bot-1",
        "--out",
        key.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(public["agent_id"], "report-bot-1");
    assert!(public.get("d").is_none(), "the printed JWK is public");
    assert!(public["kid"]
        .as_str()
        .unwrap()
        .starts_with("report-bot-1#20"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let private: J = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    assert!(private["d"].is_string());
    // keygen never overwrites a key.
    assert_eq!(
        run_vigil(&[
            "keygen",
            "--agent",
            "report-bot-1",
            "--out",
            key.to_str().unwrap()
        ])
        .status
        .code(),
        Some(2)
    );

    let jwks = dir.path().join("keys.json");
    write_jwks(&jwks, std::slice::from_ref(&public));
    let signed = run_vigil_stdin(
        &["sign", "--key", key.to_str().unwrap()],
        br#"{"correlation_id":"c-1","action":"db.query","resource":"db://x"}"#,
    );
    assert_eq!(
        signed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let event: J = serde_json::from_slice(&signed.stdout).unwrap();
    for f in [
        "spec",
        "event_id",
        "occurred_at",
        "key_id",
        "agent_id",
        "signature",
    ] {
        assert!(event[f].is_string(), "sign fills in {f}");
    }
    let refused = run_vigil_stdin(&["sign", "--key", key.to_str().unwrap()], &signed.stdout);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "signing a signed event is refused"
    );

    let server = Server::start(
        &dir.path().join("data"),
        &["--keys", jwks.to_str().unwrap()],
    );
    let answer = server.post_ndjson(std::slice::from_ref(&signed.stdout));
    assert_eq!(answer["results"][0]["status"], "accepted", "{answer}");
}

#[test]
fn demo_runs_and_its_printed_commands_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = run_vigil(&[
        "demo",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "12",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("server       http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rejected:bad_signature"),
        "the demo shows a forgery: {stdout}"
    );
    assert!(stdout.contains("history      replayed 7 days"), "{stdout}");
    assert!(
        stdout.contains("  ALERT "),
        "at its default speed the demo reaches an attack within seconds: {stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("verify-proof"))
        .expect("the demo prints a verify-proof command");
    let words: Vec<&str> = line.split_whitespace().collect();
    let out = vigil().args(&words[1..]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_log_verifies(&data);
    // A second run continues the same log.
    let again = run_vigil(&[
        "demo",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "1",
    ]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        run_vigil(&["verify", "--data", data.to_str().unwrap(), "--quiet"])
            .status
            .code(),
        Some(0)
    );
}
