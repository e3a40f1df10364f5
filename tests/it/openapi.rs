//! The API description (issue 14): `GET /v1/openapi.json` serves
//! `schemas/openapi.json`, and Schemathesis (from PyPI, installed by the
//! test script) checks a live server against it: property-based requests
//! to every operation, no 5xx, every answer as the document says.

use std::path::PathBuf;

use serde_json::json;

use crate::util::*;

fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("SCHEMATHESIS") {
        return p.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let p = PathBuf::from(home).join(".cache/vigil-schemathesis/bin/schemathesis");
    assert!(
        p.exists(),
        "schemathesis is not installed at {}: run ./scripts/test.sh, which installs it, or set SCHEMATHESIS",
        p.display()
    );
    p
}

#[test]
fn the_server_serves_its_description_and_agrees_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (signers, jwks) = fleet(dir.path(), "oa", 90, 3);
    let s = Server::start(
        &dir.path().join("data"),
        &["--keys", jwks.to_str().unwrap()],
    );
    let served = http(s.addr, "GET", "/v1/openapi.json", &[], b"");
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.json")).unwrap();
    assert_eq!(
        served.body, file,
        "the served document is schemas/openapi.json byte for byte"
    );
    let doc = served.json();
    assert_eq!(doc["openapi"], "3.1.0");

    // Some real data for the operations to find.
    for (i, signer) in signers.iter().enumerate() {
        let r = s.post_ndjson(&[signer.sign(&signer.event(&format!("oa-{i}"), json!({})))]);
        assert_eq!(r["accepted"], 1, "{r}");
    }
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/schemathesis_run.sh"
        ))
        .env("VIGIL_URL", format!("http://{}", s.addr))
        .env("VIGIL_TOKEN", &s.token)
        .env("SCHEMATHESIS", schemathesis())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .rev()
        .take(25)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    eprintln!("{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found disagreements:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log_text()
            .lines()
            .filter(|l| l.contains("panicked") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// What Schemathesis found against the first version of the document,
/// each asked again from outside.
#[test]
fn the_inputs_schemathesis_found_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (signers, jwks) = fleet(dir.path(), "sf", 95, 1);
    let s = Server::start(
        &dir.path().join("data"),
        &["--keys", jwks.to_str().unwrap()],
    );
    let x = signers[0].jwk(json!({}))["x"].as_str().unwrap().to_string();
    let error = |r: &Resp, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.json()["error"], code, "{}", r.text());
        assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    // A number that is not exact in I-JSON: refused, not a crash that
    // leaves the key in the admin file.
    let body = format!(r#"{{"kid":"k1","x":"{x}","exp":9007199254740993}}"#);
    error(
        &s.req(
            "POST",
            "/v1/agents/z1/keys",
            Some("application/json"),
            body.as_bytes(),
        ),
        400,
        "bad_request",
    );
    let body = br#"{"role":"r","owner":"o","actions":[9007199254740993]}"#;
    error(
        &s.req("PUT", "/v1/agents/a2", Some("application/json"), body),
        400,
        "bad_request",
    );
    // A registration needs a role and an owner; ids are ids.
    error(
        &s.req("PUT", "/v1/agents/new-agent", None, b""),
        400,
        "bad_request",
    );
    error(
        &s.req(
            "PUT",
            "/v1/agents/bad%20id",
            Some("application/json"),
            br#"{"role":"r","owner":"o"}"#,
        ),
        400,
        "bad_request",
    );
    error(
        &s.req("POST", "/v1/agents/nobody/decommission", None, b""),
        404,
        "unknown_agent",
    );
    error(
        &s.req(
            "POST",
            "/v1/agents/sf-0/keys/sf-0%231/revoke",
            Some("application/json"),
            b"[]",
        ),
        400,
        "bad_request",
    );
    // The server still starts on this data directory and takes changes.
    let ok = s.req(
        "PUT",
        "/v1/agents/sf-0",
        Some("application/json"),
        br#"{"role":"r","owner":"o"}"#,
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Access report times outside what the store holds: 400.
    let r = s.req(
        "GET",
        "/v1/reports/access?from=0000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        None,
        b"",
    );
    error(&r, 400, "bad_request");
    // SQL nulls are JSON nulls.
    let r = s.req(
        "POST",
        "/v1/query",
        Some("application/json"),
        br#"{"sql":"select NULL as n"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rows"], json!([[null]]));
    // Rejections of axum's extractors and routing in the contract's form.
    error(
        &s.req("GET", "/v1/receipts/%FF?agent_id=x", None, b""),
        400,
        "bad_request",
    );
    error(
        &s.req("GET", "/assets/no-such-file", None, b""),
        404,
        "not_found",
    );
    let big = vec![b' '; 11 << 20];
    let r = s.req("POST", "/v1/query", Some("application/json"), &big);
    error(&r, 413, "too_large");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("max_body_bytes"));
    // A session cookie with a non-bearer Authorization header still needs
    // the CSRF header.
    let signed_in = http(
        s.addr,
        "POST",
        "/v1/session",
        &[("Content-Type", "application/json")],
        json!({"token": s.token}).to_string().as_bytes(),
    );
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let r = http(
        s.addr,
        "POST",
        "/v1/agents/sf-0/restore",
        &[("Cookie", &cookie), ("Authorization", "Basic Zm9vOmJhcg==")],
        b"",
    );
    error(&r, 403, "csrf");
    let r = http(s.addr, "GET", "/readyz", &[], b"");
    assert_eq!(r.status, 200, "the server is still ready: {}", r.text());
}
