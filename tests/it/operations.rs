//! Running Vigil in production (issue 14): the log key from a file, the
//! environment or a mounted secret and its rotation, SIGHUP reloading keys
//! and tokens while events flow, and a bounded drain on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as J};

use crate::util::*;

/// Makes a log key (a private JWK) at `path`.
fn log_key(path: &Path, kid: &str) {
    let out = run_vigil(&[
        "keygen",
        "--agent",
        "vigil-log",
        "--kid",
        kid,
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "keygen: {out:?}");
}

/// The verifier keys `GET /v1/log-key` lists, in order.
fn listed_keys(s: &Server) -> Vec<String> {
    let r = http(s.addr, "GET", "/v1/log-key", &[], b"");
    assert_eq!(r.status, 200);
    r.text().lines().map(String::from).collect()
}

/// Accepts one event and waits for its receipt's proof; returns the
/// `{receipt, proof}` answer.
fn receipted_with_proof(s: &Server, signer: &Signer, id: &str) -> J {
    let r = s.post_ndjson(&[signer.sign(&signer.event(id, json!({})))]);
    assert_eq!(r["accepted"], 1, "{r}");
    wait_until(
        Duration::from_secs(30),
        || {
            let j = s.receipt(&signer.agent, id).json();
            j["proof"].is_string().then_some(j)
        },
        || format!("no proof for {id}"),
    )
}

/// `vigil verify-proof` of a receipt answer against one verifier key.
fn proof_verifies(dir: &Path, answer: &J, vkey: &str) -> bool {
    let proof = dir.join("proof.txt");
    std::fs::write(&proof, answer["proof"].as_str().unwrap()).unwrap();
    let out = run_vigil(&["verify-proof", proof.to_str().unwrap(), "--vkey", vkey]);
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("verify-proof failed to run: {out:?}"),
    }
}

fn signature_lines(note: &str) -> usize {
    note.lines().filter(|l| l.starts_with('\u{2014}')).count()
}

#[test]
fn the_log_key_rotates_with_both_keys_signing_and_old_receipts_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = Signer::new(61, "rot", "rot#1");
    let jwks = dir.path().join("agents.jwks.json");
    write_jwks(&jwks, &[signer.jwk(json!({}))]);
    let (old_key, new_key) = (dir.path().join("old.jwk"), dir.path().join("new.jwk"));
    log_key(&old_key, "log-2026-11");
    log_key(&new_key, "log-2026-12");
    let keys = ["--keys", jwks.to_str().unwrap()];

    // 1. The key from the environment (a secret injected as a variable).
    let mut cmd = vigil();
    cmd.env("VIGIL_LOG_KEY", std::fs::read_to_string(&old_key).unwrap());
    let mut s = Server::start_with(cmd, &data, &keys);
    let old_vkeys = listed_keys(&s);
    assert_eq!(old_vkeys.len(), 1, "{old_vkeys:?}");
    let old_vkey = old_vkeys[0].clone();
    let before = receipted_with_proof(&s, &signer, "rot-1");
    assert!(proof_verifies(dir.path(), &before, &old_vkey));
    assert!(
        !std::fs::exists(data.join("log.key")).unwrap(),
        "no key is generated when one is given"
    );
    assert_eq!(s.stop(), Some(0));

    // 2. The change: the new key (a mounted secret file, through
    //    $VIGIL_LOG_KEY_FILE) signs first, the old one co-signs.
    let mut cmd = vigil();
    cmd.env("VIGIL_LOG_KEY_FILE", &new_key);
    let mut args = keys.to_vec();
    args.extend(["--log-key-previous", old_key.to_str().unwrap()]);
    let mut s = Server::start_with(cmd, &data, &args);
    let both = listed_keys(&s);
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(
        both[1], old_vkey,
        "the current key first, then the previous: {both:?}"
    );
    let new_vkey = both[0].clone();
    let during = receipted_with_proof(&s, &signer, "rot-2");
    assert!(proof_verifies(dir.path(), &during, &new_vkey));
    assert!(
        proof_verifies(dir.path(), &during, &old_vkey),
        "an auditor holding only the old key still verifies during the change"
    );
    let note = http(s.addr, "GET", "/checkpoint", &[], b"").text();
    assert_eq!(signature_lines(&note), 2, "{note}");
    assert_eq!(s.stop(), Some(0));

    // 3. Done: only the new key signs; every old receipt still verifies.
    let mut s = Server::start(
        &data,
        &[&keys[..], &["--log-key", new_key.to_str().unwrap()]].concat(),
    );
    assert_eq!(listed_keys(&s), vec![new_vkey.clone(), old_vkey.clone()]);
    let after = receipted_with_proof(&s, &signer, "rot-3");
    assert!(proof_verifies(dir.path(), &after, &new_vkey));
    assert!(
        !proof_verifies(dir.path(), &after, &old_vkey),
        "the old key no longer signs"
    );
    assert!(
        proof_verifies(dir.path(), &before, &old_vkey),
        "a receipt from before the change"
    );
    assert!(proof_verifies(dir.path(), &during, &old_vkey));
    assert_eq!(s.stop(), Some(0));
    assert_log_verifies(&data);
}

#[test]
fn a_log_key_that_does_not_load_stops_the_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = vigil()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("VIGIL_LOG_KEY", "{\"kty\":\"OKP\"}")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("VIGIL_LOG_KEY"),
        "names where the key came from: {err}"
    );
}

/// One request on an open keep-alive connection; returns the status.
fn keep_alive_get(stream: &mut TcpStream, path: &str, token: &str) -> u16 {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: vigil\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the connection stays open"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

fn config_with_tokens(tokens: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("[server]\ncheckpoint_interval_ms = 200\n");
    for (name, token, roles) in tokens {
        text.push_str(&format!(
            "\n[[tokens]]\nname = \"{name}\"\ntoken = \"{token}\"\nroles = [{roles}]\n"
        ));
    }
    text
}

fn hup(s: &Server) {
    let pid = s.child.as_ref().unwrap().id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
}

fn status_with(s: &Server, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    http(
        s.addr,
        "GET",
        "/v1/quarantine",
        &[("Authorization", &auth)],
        b"",
    )
    .status
}

#[test]
fn sighup_reloads_keys_and_tokens_while_events_flow_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let flow = Signer::new(71, "flow", "flow#1");
    let late = Signer::new(72, "late", "late#1");
    let jwks = dir.path().join("agents.jwks.json");
    write_jwks(&jwks, &[flow.jwk(json!({}))]);
    let cfg = dir.path().join("vigil.toml");
    let ingest = ("ingest", "tok-ingest", "\"ingest\", \"audit\"");
    std::fs::write(
        &cfg,
        config_with_tokens(&[ingest, ("old", "tok-old", "\"audit\"")]),
    )
    .unwrap();
    let mut s = Server::start_configured(&dir.path().join("data"), &jwks, &cfg);
    s.token = "tok-ingest".into();
    assert_eq!(status_with(&s, "tok-old"), 200);
    assert_eq!(status_with(&s, "tok-new"), 401);

    // Events flow from another thread the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sender = {
        let (addr, stop, sent, failed) = (s.addr, stop.clone(), sent.clone(), failed.clone());
        let flow = Signer::new(71, "flow", "flow#1");
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let lines: Vec<u8> = (0..20)
                    .flat_map(|i| {
                        let mut l = flow.sign(&flow.event(&format!("flow-{n}-{i}"), json!({})));
                        l.push(b'\n');
                        l
                    })
                    .collect();
                let r = http(
                    addr,
                    "POST",
                    "/v1/events",
                    &[
                        ("Authorization", "Bearer tok-ingest"),
                        ("Content-Type", "application/x-ndjson"),
                    ],
                    &lines,
                );
                if r.status == 200 && r.json()["accepted"] == 20 {
                    sent.fetch_add(20, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                n += 1;
            }
        })
    };
    wait_until(
        Duration::from_secs(30),
        || (sent.load(Ordering::SeqCst) >= 200).then_some(()),
        || "no events flow".into(),
    );
    // A client that keeps its connection across the reload.
    let mut kept = TcpStream::connect(s.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(keep_alive_get(&mut kept, "/v1/quarantine", "tok-old"), 200);

    // A broken file changes nothing and says why.
    std::fs::write(&cfg, "[server]\nno_such_key = 1\n").unwrap();
    hup(&s);
    wait_until(
        Duration::from_secs(20),
        || s.log_text().contains("was not reloaded").then_some(()),
        || s.log_text(),
    );
    assert_eq!(status_with(&s, "tok-old"), 200);

    // The real change: "old" goes, "new" comes, a new agent's key is added.
    std::fs::write(
        &cfg,
        config_with_tokens(&[ingest, ("new", "tok-new", "\"audit\"")]),
    )
    .unwrap();
    write_jwks(&jwks, &[flow.jwk(json!({})), late.jwk(json!({}))]);
    hup(&s);
    wait_until(
        Duration::from_secs(20),
        || (status_with(&s, "tok-new") == 200).then_some(()),
        || s.log_text(),
    );
    assert_eq!(
        status_with(&s, "tok-old"),
        401,
        "a removed token is refused at once"
    );
    assert_eq!(
        keep_alive_get(&mut kept, "/v1/quarantine", "tok-new"),
        200,
        "the kept connection was not dropped"
    );
    let r = s.post_ndjson(&[late.sign(&late.event("late-1", json!({})))]);
    assert_eq!(r["accepted"], 1, "the new agent's key is in force: {r}");

    let at_reload = sent.load(Ordering::SeqCst);
    wait_until(
        Duration::from_secs(30),
        || (sent.load(Ordering::SeqCst) >= at_reload + 200).then_some(()),
        || "events stopped flowing after the reload".into(),
    );
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request failed across the reloads"
    );
    let acknowledged = sent.load(Ordering::SeqCst) as u64 + 1;
    assert_eq!(s.stop(), Some(0));
    let out = run_vigil(&["verify", "--data", s.data.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // The log also holds the key events of each reload.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let in_log: u64 = stdout
        .split(" accepted")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no accepted count in {stdout}"));
    assert!(
        in_log >= acknowledged,
        "{acknowledged} acknowledged, {in_log} in the log: {stdout}"
    );
}

#[test]
fn sigterm_closes_an_endless_event_stream_within_the_drain_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, "[server]\ndrain_timeout_s = 2\n").unwrap();
    let mut s = Server::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let mut stream = TcpStream::connect(s.addr).unwrap();
    write!(
        stream,
        "GET /v1/anomalies/stream HTTP/1.1\r\nHost: vigil\r\nAuthorization: Bearer {}\r\n\r\n",
        s.token
    )
    .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let started = Instant::now();
    assert_eq!(s.stop(), Some(0), "{}", s.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped after {:?}: {}",
        started.elapsed(),
        s.log_text()
    );
    assert_log_verifies(&s.data);
}

#[test]
fn vigil_health_answers_0_when_ready_and_1_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("data"), &[]);
    let url = format!("http://{}/readyz", s.addr);
    let out = run_vigil(&["health", "--url", &url]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let missing = format!("http://{}/no-such-route", s.addr);
    let out = run_vigil(&["health", "--url", &missing]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    assert_eq!(s.stop(), Some(0));
    let out = run_vigil(&["health", "--url", &url]);
    assert_eq!(out.status.code(), Some(1), "a stopped server: {out:?}");
}
