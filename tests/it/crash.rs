//! Crash safety from the outside: `kill -9` the server at random moments
//! while a client keeps sending batches, restart it on the same data
//! directory, and check that nothing it acknowledged was lost or moved,
//! that the log verifies offline after every crash, and that every
//! checkpoint it ever served stays consistent with the log that follows.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as J;

use crate::util::*;

/// xorshift64*: a small deterministic PRNG, so a failing run can be
/// replayed with the same kill moments.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One HTTP/1.1 request that reports failures instead of panicking (the
/// server may die at any moment).
fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::other(what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete HTTP head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    let lower = head.to_ascii_lowercase();
    if lower.contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(|| bad("a cut chunked body"))?;
    } else if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        if body.len() != len {
            return Err(bad("a cut body"));
        }
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = data.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Where the client sends: the current server's address and token.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    token: String,
}

/// An acknowledged event: its id, the index its receipt had in the 200
/// answer, and its event hash.
#[derive(Clone, Debug)]
struct Ack {
    event_id: String,
    index: u64,
    event_hash: String,
}

struct Shared {
    target: Mutex<Target>,
    acked: Mutex<Vec<Ack>>,
    /// The body of the latest acknowledged batch, to send again.
    last_batch: Mutex<Vec<u8>>,
    acked_batches: AtomicUsize,
    failed_posts: AtomicUsize,
    stop: AtomicBool,
    /// Holds the client while the main thread checks receipts, so the
    /// number of events to check stays bounded.
    pause: AtomicBool,
}

impl Shared {
    /// Nothing sent yet, to `server`.
    fn new(server: &Server) -> Arc<Shared> {
        Arc::new(Shared {
            target: Mutex::new(Target {
                addr: server.addr,
                token: server.token.clone(),
            }),
            acked: Mutex::new(Vec::new()),
            last_batch: Mutex::new(Vec::new()),
            acked_batches: AtomicUsize::new(0),
            failed_posts: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            pause: AtomicBool::new(false),
        })
    }
}

/// The sender: batches of 50 fresh events, forever; records every event
/// of every batch answered 200. Returns an error on any answer that
/// breaks the contract.
fn client(shared: Arc<Shared>, signer: Signer) -> Result<(), String> {
    let mut batch_no = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.pause.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let target = shared.target.lock().unwrap().clone();
        let ids: Vec<String> = (0..50)
            .map(|i| format!("crash-{batch_no:05}-{i:02}"))
            .collect();
        batch_no += 1;
        let mut body = Vec::new();
        for id in &ids {
            body.extend_from_slice(&signer.sign(&signer.event(id, serde_json::json!({}))));
            body.push(b'\n');
        }
        match try_http(
            target.addr,
            "POST",
            "/v1/events",
            &target.token,
            Some("application/x-ndjson"),
            &body,
        ) {
            Ok((200, answer)) => {
                let j: J = serde_json::from_slice(&answer)
                    .map_err(|e| format!("a 200 answer that is not JSON ({e})"))?;
                let results = j["results"]
                    .as_array()
                    .ok_or_else(|| format!("a 200 answer without results: {j}"))?;
                if results.len() != ids.len() {
                    return Err(format!(
                        "{} results for {} events: {j}",
                        results.len(),
                        ids.len()
                    ));
                }
                let mut acks = Vec::new();
                for (id, r) in ids.iter().zip(results) {
                    if r["status"] != "accepted" || r["event_id"] != id.as_str() {
                        return Err(format!("event {id} was not accepted: {r}"));
                    }
                    let receipt = &r["receipt"];
                    if receipt["verdict"] != "accepted" || receipt["event_id"] != id.as_str() {
                        return Err(format!("event {id} has a wrong receipt: {r}"));
                    }
                    acks.push(Ack {
                        event_id: id.clone(),
                        index: receipt["index"]
                            .as_u64()
                            .ok_or_else(|| format!("a receipt without an index: {r}"))?,
                        event_hash: receipt["event_hash"].as_str().unwrap_or("").to_string(),
                    });
                }
                // Both under the `acked` lock, so that the main thread
                // sees a batch's acks and the batch together.
                let mut acked = shared.acked.lock().unwrap();
                acked.extend(acks);
                *shared.last_batch.lock().unwrap() = body;
                drop(acked);
                shared.acked_batches.fetch_add(1, Ordering::SeqCst);
                // A steady stream, not a flood: keeps the count to check bounded.
                thread::sleep(Duration::from_millis(20));
            }
            Ok((status, answer)) => {
                // Not acknowledged (for example 503 while shutting down):
                // nothing is promised about these events.
                if !(500..600).contains(&status) {
                    return Err(format!(
                        "POST /v1/events answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    ));
                }
                shared.failed_posts.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                // The server is dead or restarting: no answer, no promise.
                shared.failed_posts.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

/// Every acknowledged event has its receipt at the acknowledged index; no
/// two acknowledgements name the same index.
fn check_acked(server: &Server, agent: &str, acked: &[Ack], when: &str) {
    let mut seen = std::collections::HashMap::new();
    for a in acked {
        if let Some(other) = seen.insert(a.index, &a.event_id) {
            panic!(
                "{when}: events {other} and {} were both acknowledged with index {}",
                a.event_id, a.index
            );
        }
        let r = server.receipt(agent, &a.event_id);
        assert_eq!(
            r.status,
            200,
            "{when}: acknowledged event {} (index {}) has no receipt: {}",
            a.event_id,
            a.index,
            r.text()
        );
        let j = r.json();
        let receipt = &j["receipt"];
        assert_eq!(
            receipt["verdict"], "accepted",
            "{when}: acknowledged event {}: {j}",
            a.event_id
        );
        assert_eq!(
            receipt["index"].as_u64(),
            Some(a.index),
            "{when}: acknowledged event {} was answered with index {} but its receipt now says {}",
            a.event_id,
            a.index,
            receipt["index"]
        );
        assert_eq!(
            receipt["event_hash"].as_str(),
            Some(a.event_hash.as_str()),
            "{when}: acknowledged event {}: event_hash changed",
            a.event_id
        );
    }
}

/// The tiles of the latest checkpoint, checked by the independent client
/// (its own RFC 9162 computation): the root, every entry, and inclusion
/// proofs of acknowledged records the checkpoint covers.
fn tiles_agree(server: &Server, acked: &[Ack], when: &str) {
    let cp = http(server.addr, "GET", "/checkpoint", &[], b"").text();
    let size: u64 = cp.lines().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let vkey = http(server.addr, "GET", "/v1/log-key", &[], b"").text();
    let some: Vec<u64> = acked
        .iter()
        .map(|a| a.index)
        .filter(|&i| i < size)
        .step_by(97)
        .collect();
    let (code, _, out) = crate::tiles::client(
        &format!("http://{}", server.addr),
        vkey.lines().next().unwrap(),
        &some,
    );
    assert_eq!(code, Some(0), "{when}: the tiles: {out}");
}

/// The latest acknowledged batch, sent again after the restart, is all
/// duplicates with the receipts it was acknowledged with: the (agent,
/// event id) index was rebuilt from the log.
fn resend_is_duplicate(server: &Server, body: &[u8], acked: &[Ack], when: &str) {
    if body.is_empty() {
        return;
    }
    let r = server.req("POST", "/v1/events", Some("application/x-ndjson"), body);
    assert_eq!(r.status, 200, "{when}: resending: {}", r.text());
    let j = r.json();
    assert_eq!(
        j["duplicates"], 50,
        "{when}: a resent batch is all duplicates: {j}"
    );
    for item in j["results"].as_array().unwrap() {
        let id = item["event_id"].as_str().unwrap();
        let ack = acked
            .iter()
            .find(|a| a.event_id == id)
            .unwrap_or_else(|| panic!("{when}: {id} was acknowledged"));
        assert_eq!(
            item["receipt"]["index"].as_u64(),
            Some(ack.index),
            "{when}: the duplicate {id} comes back with another receipt: {item}"
        );
    }
}

fn verify_ok(data: &Path, extra: &[&str], when: &str) {
    let mut args = vec!["verify", "--data", data.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    let out = run_vigil(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{when}: vigil {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Saves the server's latest checkpoint when it is new (errors ignored:
/// the server may be going down).
fn save_checkpoint(addr: SocketAddr, seen: &mut Vec<String>) {
    if let Ok((200, body)) = try_http(addr, "GET", "/v1/checkpoint", "", None, b"") {
        let text = String::from_utf8(body).expect("a checkpoint is UTF-8");
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
}

fn set_target(shared: &Shared, server: &Server) {
    *shared.target.lock().unwrap() = Target {
        addr: server.addr,
        token: server.token.clone(),
    };
}

#[test]
fn kill9_during_ingest_loses_nothing_acknowledged() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = Signer::new(41, "crash-agent", "crash-agent#1");
    let jwks = dir.path().join("keys.jwks.json");
    write_jwks(
        &jwks,
        &[signer.jwk(serde_json::json!({"status": "active"}))],
    );
    // Checkpoints every 50 ms instead of every second: more of them to
    // check across crashes, and more kills while one is being written.
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "[server]\ncheckpoint_interval_ms = 50\n").unwrap();
    let args = [
        "--keys",
        jwks.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let mut server = Server::start(&data, &args);

    let shared = Shared::new(&server);
    let sender = {
        let shared = shared.clone();
        let signer = Signer::new(41, "crash-agent", "crash-agent#1");
        thread::spawn(move || client(shared, signer))
    };

    let mut rng = Rng::new(0x7669_6769_6c2d_6b39); // "vigil-k9"
    let mut checkpoints: Vec<String> = Vec::new();
    let kills = 6;
    for round in 0..kills {
        // Kill during ingest: wait until this server acknowledged a batch.
        let before = shared.acked_batches.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while shared.acked_batches.load(Ordering::SeqCst) == before {
            assert!(
                !sender.is_finished(),
                "the client stopped early: {:?}",
                sender.join()
            );
            assert!(
                Instant::now() < deadline,
                "round {round}: no batch was acknowledged within 20 s: {}",
                server.log_text()
            );
            thread::sleep(Duration::from_millis(5));
        }
        let delay = Duration::from_millis(rng.range(50, 600));
        let until = Instant::now() + delay;
        while Instant::now() < until {
            save_checkpoint(server.addr, &mut checkpoints);
            thread::sleep(
                Duration::from_millis(40).min(until.saturating_duration_since(Instant::now())),
            );
        }
        server.kill9();
        let when = format!("after kill {} ({} ms)", round + 1, delay.as_millis());
        // Whatever was acknowledged so far was answered before the kill.
        let (acked, last_batch) = {
            let acked = shared.acked.lock().unwrap();
            (acked.clone(), shared.last_batch.lock().unwrap().clone())
        };
        verify_ok(&data, &[], &when);
        shared.pause.store(true, Ordering::SeqCst);
        server = Server::start(&data, &args);
        set_target(&shared, &server);
        save_checkpoint(server.addr, &mut checkpoints);
        check_acked(&server, &signer.agent, &acked, &when);
        resend_is_duplicate(&server, &last_batch, &acked, &when);
        tiles_agree(&server, &acked, &when);
        eprintln!(
            "{when}: {} acknowledged events checked, {:.1} s",
            acked.len(),
            started.elapsed().as_secs_f64()
        );
        shared.pause.store(false, Ordering::SeqCst);
    }

    shared.stop.store(true, Ordering::SeqCst);
    sender
        .join()
        .expect("the client thread does not panic")
        .expect("every answer the client got keeps the contract");
    let acked = shared.acked.lock().unwrap().clone();
    let batches = shared.acked_batches.load(Ordering::SeqCst);
    assert!(
        batches >= kills,
        "only {batches} batches were acknowledged over {kills} kills"
    );
    check_acked(&server, &signer.agent, &acked, "at the end");
    // A checkpoint covering everything acknowledged comes within about a second.
    let need = acked.iter().map(|a| a.index + 1).max().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        save_checkpoint(server.addr, &mut checkpoints);
        let size: u64 = checkpoints
            .last()
            .and_then(|c| c.lines().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if size >= need {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint covers the {need} acknowledged records: {:?}",
            checkpoints.last()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        server.stop(),
        Some(0),
        "SIGTERM ends vigil with 0: {}",
        server.log_text()
    );
    verify_ok(&data, &[], "after SIGTERM");

    assert!(
        checkpoints.len() >= 2,
        "saw only {} checkpoints",
        checkpoints.len()
    );
    for (n, cp) in checkpoints.iter().enumerate() {
        let file = dir.path().join(format!("checkpoint-{n}.txt"));
        std::fs::write(&file, cp).unwrap();
        verify_ok(
            &data,
            &["--checkpoint", file.to_str().unwrap()],
            &format!("with saved checkpoint {n}:\n{cp}"),
        );
    }
    // The server's log (all runs append to one file) tells how many torn
    // tails recovery cut: informative, a crash need not leave one.
    let log = server.log_text();
    eprintln!(
        "crash test: recovery cut {} torn log tails and {} torn checkpoint records",
        log.matches("Cut a torn last group").count(),
        log.matches("Cutting a torn checkpoint").count()
    );
    eprintln!(
        "crash test: {kills} kills, {batches} batches ({} events) acknowledged, {} posts unanswered, {} checkpoints saved, {:.1} s",
        acked.len(),
        shared.failed_posts.load(Ordering::SeqCst),
        checkpoints.len(),
        started.elapsed().as_secs_f64()
    );
}

/// SIGTERM while events flow: requests in flight are answered, the exit
/// is 0, the last checkpoint covers every record, and every acknowledged
/// event is in the log after a restart.
#[test]
fn sigterm_during_ingest_answers_in_flight_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = Signer::new(43, "term-agent", "term-agent#1");
    let jwks = dir.path().join("keys.jwks.json");
    write_jwks(&jwks, &[signer.jwk(serde_json::json!({}))]);
    let args = ["--keys", jwks.to_str().unwrap()];
    let mut server = Server::start(&data, &args);
    let shared = Shared::new(&server);
    let sender = {
        let shared = shared.clone();
        let signer = Signer::new(43, "term-agent", "term-agent#1");
        thread::spawn(move || client(shared, signer))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.acked_batches.load(Ordering::SeqCst) < 5 {
        assert!(
            Instant::now() < deadline,
            "no batches acknowledged: {}",
            server.log_text()
        );
        thread::sleep(Duration::from_millis(5));
    }
    // The client keeps sending while the server stops.
    let log = server.log.clone();
    assert_eq!(
        server.stop(),
        Some(0),
        "SIGTERM under load exits 0: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    thread::sleep(Duration::from_millis(200));
    shared.stop.store(true, Ordering::SeqCst);
    sender
        .join()
        .expect("the client thread does not panic")
        .expect("every answer the client got keeps the contract");
    // The last checkpoint, written at the stop, covers the whole log.
    let out = run_vigil(&["verify", "--data", data.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let number_before = |marker: &str| -> u64 {
        let before = &text[..text
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} in {text}"))];
        before.rsplit([' ', '(']).next().unwrap().parse().unwrap()
    };
    let records = number_before(" receipts");
    let covered: u64 = text
        .split("latest size ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no latest size in {text}"));
    assert_eq!(
        covered, records,
        "the last checkpoint covers every record: {text}"
    );
    let server = Server::start(&data, &args);
    let acked = shared.acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 250,
        "only {} events acknowledged",
        acked.len()
    );
    check_acked(&server, &signer.agent, &acked, "after SIGTERM under load");
}
