//! Interoperability: events signed by an implementation that is not
//! Vigil's (Python `cryptography` + `rfc8785`) are accepted, and a byte
//! changed anywhere makes them `rejected:bad_signature`.

use std::process::Command;

use serde_json::{json, Value as J};

use crate::util::*;

const SEED: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

fn python_events(dir: &std::path::Path, count: usize) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let jwks = dir.join("interop.jwks.json");
    let start = vigil::time::Timestamp(vigil::time::Timestamp::now().0 - 3_600_000_000_000)
        .to_rfc3339_millis();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/interop_sign.py"
        ))
        .args([
            "--seed-hex",
            SEED,
            "--agent",
            "interop-agent",
            "--kid",
            "interop-agent#py",
            "--count",
            &count.to_string(),
        ])
        .arg("--jwks-out")
        .arg(&jwks)
        .args(["--start-time", &start])
        .output()
        .expect("python3 runs (the test command installs it)");
    assert!(
        out.status.success(),
        "the Python signer failed (run the README's test command, which installs cryptography and rfc8785): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    (jwks, lines)
}

/// Changes one character of a string value (keeping it schema-valid).
fn bump_char(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'x' { 'y' } else { 'x' };
    chars.into_iter().collect()
}

/// Every single-member change of an event that keeps it I-JSON and
/// schema-valid: each must break the signature.
fn mutations(event: &J) -> Vec<(String, J)> {
    let mut out = Vec::new();
    let obj = event.as_object().unwrap();
    for (k, v) in obj {
        if [
            "spec",
            "event_id",
            "agent_id",
            "key_id",
            "occurred_at",
            "signature",
            "sensitivity",
            "outcome",
        ]
        .contains(&k.as_str())
        {
            continue;
        }
        let mut e = event.clone();
        e[k] = match v {
            J::String(s) => J::String(bump_char(s)),
            J::Number(n) => J::from(n.as_u64().unwrap_or(0) + 1),
            J::Object(_) => {
                let mut o = v.clone();
                o["added_by_forwarder"] = J::Bool(true);
                o
            }
            _ => continue,
        };
        out.push((k.clone(), e));
    }
    let mut e = event.clone();
    e["@timestamp"] = J::String("2026-11-25T00:00:00Z".into());
    out.push(("an added member".into(), e));
    let mut e = event.clone();
    let sig = e["signature"].as_str().unwrap().to_string();
    let flipped: String = sig
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 20 {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    e["signature"] = J::String(flipped);
    out.push(("signature".into(), e));
    out
}

#[test]
fn python_signed_events_are_accepted_and_any_change_breaks_them() {
    let dir = tempfile::tempdir().unwrap();
    let (jwks, lines) = python_events(dir.path(), 12);
    let server = Server::start(
        &dir.path().join("data"),
        &["--keys", jwks.to_str().unwrap()],
    );
    let answer = server.post_ndjson(&lines);
    assert_eq!(answer["accepted"], 12, "{answer}");

    let mut tampered = Vec::new();
    let mut what = Vec::new();
    for line in &lines {
        let event: J = serde_json::from_slice(line).unwrap();
        for (field, e) in mutations(&event) {
            tampered.push(serde_json::to_vec(&e).unwrap());
            what.push(field);
        }
    }
    assert!(tampered.len() > 60, "enough mutations to mean something");
    let answer = server.post_ndjson(&tampered);
    for (r, field) in answer["results"].as_array().unwrap().iter().zip(&what) {
        assert_eq!(
            r["status"], "rejected",
            "changing {field} must not pass: {r}"
        );
        assert_eq!(r["reason"], "bad_signature", "changing {field}: {r}");
        assert_eq!(r["receipt"]["verdict"], "rejected:bad_signature");
    }
}

#[test]
fn one_byte_flipped_anywhere_in_the_raw_line_is_never_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (jwks, lines) = python_events(dir.path(), 1);
    let server = Server::start(
        &dir.path().join("data"),
        &["--keys", jwks.to_str().unwrap()],
    );
    let line = &lines[0];
    let mut variants = Vec::new();
    for i in 0..line.len() {
        let mut v = line.clone();
        v[i] ^= 0x01;
        variants.push(v);
    }
    let answer = server.post_ndjson(&variants);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), variants.len());
    for (i, r) in results.iter().enumerate() {
        // Whitespace or member order changes may leave the event the same; a
        // changed byte of content is never accepted as new content.
        if r["status"] == "accepted" {
            let orig: J = serde_json::from_slice(line).unwrap();
            let now: J = serde_json::from_slice(&variants[i]).unwrap();
            assert_eq!(
                orig, now,
                "byte {i}: an accepted variant must be the same event"
            );
        }
    }
    let accepted = results
        .iter()
        .filter(|r| r["status"] == "accepted" || r["status"] == "duplicate")
        .count();
    assert!(
        accepted < 10,
        "flipping content bytes must break nearly every variant ({accepted} passed)"
    );
}

/// The README's `check_receipt.py` (Python's standard library and
/// openssl), run as written on a real proof: it accepts it, and refuses a
/// changed proof and another log's key.
#[test]
fn the_readme_receipt_check_with_standard_tools_works() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme
        .split("<!-- check_receipt.py")
        .nth(1)
        .expect("the README has the check_receipt.py block");
    let script = after
        .split("```python\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("a python block follows the marker");
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("check_receipt.py");
    std::fs::write(&py, script).unwrap();
    let (signers, jwks) = fleet(dir.path(), "rc", 30, 1);
    let data = dir.path().join("data");
    let server = Server::start_configured(&data, &jwks, &{
        let cfg = dir.path().join("rc.toml");
        std::fs::write(&cfg, "[detection]\nenabled = false\n").unwrap();
        cfg
    });
    let s = &signers[0];
    server.post_ndjson(&[s.sign(&s.event("rc-1", json!({})))]);
    let proof = wait_until(
        std::time::Duration::from_secs(10),
        || {
            server.receipt("rc-0", "rc-1").json()["proof"]
                .as_str()
                .map(String::from)
        },
        || "no proof within 10 s".into(),
    );
    let vkey = std::fs::read_to_string(data.join("log-keys.txt")).unwrap();
    let vkey = vkey.lines().next().unwrap().to_string();
    let check = |proof: &str, vkey: &str| {
        let file = dir.path().join("receipt.proof");
        std::fs::write(&file, proof).unwrap();
        std::process::Command::new("python3")
            .arg(&py)
            .arg(&file)
            .arg(vkey)
            .output()
            .unwrap()
    };
    let ok = check(&proof, &vkey);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("rc-0 rc-1: accepted) is in"), "{out}");
    // A changed body (the verdict) or checkpoint, and another log's key.
    let (head, note) = proof.split_once("\n\n").unwrap();
    let extra = head.lines().nth(1).unwrap().trim_start_matches("extra ");
    let body = String::from_utf8(vigil::event::signature::b64_decode(extra).unwrap()).unwrap();
    let forged = vigil::event::signature::b64(body.replace("\"rc-1\"", "\"rc-2\"").as_bytes());
    let bad_body = proof.replace(extra, &forged);
    let bad_root = format!("{head}\n\n{}", note.replacen('\n', "\n9", 1));
    let other = "other.example+01234567+AQ".to_string() + &"A".repeat(43);
    for (what, p, k) in [
        ("a changed receipt body", bad_body.as_str(), vkey.as_str()),
        ("a changed checkpoint", bad_root.as_str(), vkey.as_str()),
        ("another log's key", proof.as_str(), other.as_str()),
    ] {
        let r = check(p, k);
        assert!(!r.status.success(), "{what} was accepted");
    }
}
