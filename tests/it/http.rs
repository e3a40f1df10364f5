//! The HTTP API (contract section 5) from the outside: the real server,
//! raw HTTP/1.1, assertions on the status codes, headers and bytes it
//! answers, and on what an auditor can check afterwards with the CLI.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value as J};
use sha2::{Digest, Sha256};
use vigil::event::signature::b64_decode;

use crate::util::*;

const ORIGIN: &str = "vigil.test/http";

/// A server with one registered agent (`agent-a`, seed 1) and its temp dir.
struct Env {
    server: Server,
    a: Signer,
    dir: tempfile::TempDir,
    /// The log's size when the server started: its key events (the
    /// pipeline's key and each agent key, contract section 6a) come first.
    base: u64,
}

impl Env {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Starts a server whose JWKS holds `agent-a` (and `agent+x@corp/1`), with
/// an optional configuration file.
fn start(config: Option<&str>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let a = Signer::new(1, "agent-a", "agent-a#1");
    let odd = Signer::new(2, "agent+x@corp/1", "k/1+#");
    let jwks = dir.path().join("agents.jwks.json");
    write_jwks(&jwks, &[a.jwk(json!({})), odd.jwk(json!({}))]);
    let mut args = vec![
        "--keys".to_string(),
        jwks.display().to_string(),
        "--origin".to_string(),
        ORIGIN.to_string(),
    ];
    if let Some(text) = config {
        let p = dir.path().join("vigil.toml");
        std::fs::write(&p, text).unwrap();
        args.push("--config".into());
        args.push(p.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&dir.path().join("data"), &args);
    let base = server.log_size();
    assert_eq!(
        base, 3,
        "the pipeline key and two agent keys are logged first"
    );
    Env {
        server,
        a,
        dir,
        base,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn jcs(value: &J) -> Vec<u8> {
    let v = vigil::json::parse(&serde_json::to_vec(value).unwrap()).unwrap();
    let mut out = Vec::new();
    vigil::json::write_jcs(&v, &mut out);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A signed event of `s` with `id`.
fn ev(s: &Signer, id: &str) -> Vec<u8> {
    s.sign(&s.event(id, json!({})))
}

/// POST /v1/events with the server's token; asserts 200 and returns the JSON.
fn post(server: &Server, ct: &str, body: &[u8]) -> J {
    let r = server.req("POST", "/v1/events", Some(ct), body);
    assert_eq!(r.status, 200, "POST /v1/events: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    r.json()
}

/// The `event_id` of every result, in order.
fn event_ids(answer: &J) -> Vec<&str> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect()
}

fn counts(answer: &J) -> (u64, u64, u64) {
    (
        answer["accepted"].as_u64().unwrap(),
        answer["duplicates"].as_u64().unwrap(),
        answer["rejected"].as_u64().unwrap(),
    )
}

fn statuses(answer: &J) -> Vec<String> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r["reason"].as_str() {
            Some(reason) => format!("{}:{reason}", r["status"].as_str().unwrap()),
            None => r["status"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// Asserts an error answer of the contract's form.
fn assert_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert!(
        j["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error code: {j}"
    );
    assert!(
        j["message"].as_str().is_some_and(|m| m.len() > 10),
        "message: {j}"
    );
}

/// Checks a served receipt's own hashes: leaf_hash over JCS(body), chain
/// over prev || leaf_hash.
fn assert_receipt_hashes(receipt: &J) {
    let mut body = receipt.clone();
    let obj = body.as_object_mut().unwrap();
    let leaf = obj.remove("leaf_hash").unwrap();
    let chain = obj.remove("chain").unwrap();
    let mut pre = vec![0u8];
    pre.extend_from_slice(&jcs(&body));
    assert_eq!(leaf.as_str().unwrap(), sha256_hex(&pre), "leaf_hash");
    let mut link = hex::decode(body["prev"].as_str().unwrap()).unwrap();
    link.extend_from_slice(&hex::decode(leaf.as_str().unwrap()).unwrap());
    assert_eq!(chain.as_str().unwrap(), sha256_hex(&link), "chain");
}

/// The tree size of a checkpoint note.
fn cp_size(note: &str) -> u64 {
    note.lines().nth(1).unwrap().parse().unwrap()
}

fn checkpoint(server: &Server) -> String {
    let r = http(server.addr, "GET", "/v1/checkpoint", &[], b"");
    assert_eq!(r.status, 200);
    r.text()
}

/// Polls GET /v1/checkpoint until it covers at least `size` records.
fn wait_checkpoint(server: &Server, size: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let note = checkpoint(server);
        if cp_size(&note) >= size {
            return note;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint covers {size} records: {note}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `vigil` and waits at most `secs` for it to exit; returns its exit
/// code and stderr (fails if it does not exit).
fn run_bounded(args: &[&str], secs: u64) -> (Option<i32>, String) {
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = vigil()
        .args(args)
        .stdout(Stdio::null())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (
                status.code(),
                std::fs::read_to_string(err.path()).unwrap_or_default(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "vigil {args:?} did not exit within {secs} s: {}",
                std::fs::read_to_string(err.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn quarantine(server: &Server) -> Vec<J> {
    let r = server.req("GET", "/v1/quarantine", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["entries"].as_array().unwrap().clone()
}

#[test]
fn one_event_is_accepted_with_a_self_consistent_receipt() {
    let env = start(None);
    let event = ev(&env.a, "evt-one");
    let answer = post(&env.server, "application/json", &event);
    assert_eq!(counts(&answer), (1, 0, 0), "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 1);
    let r = &answer["results"][0];
    assert_eq!(r["status"], "accepted");
    assert_eq!(r["event_id"], "evt-one");
    assert!(r.get("reason").is_none() && r.get("error").is_none(), "{r}");
    let receipt = &r["receipt"];
    assert_eq!(receipt["spec"], "vigil.receipt/v1");
    assert_eq!(receipt["log"], ORIGIN);
    assert_eq!(receipt["index"], env.base);
    assert_eq!(receipt["event_id"], "evt-one");
    assert_eq!(receipt["agent_id"], "agent-a");
    assert_eq!(receipt["key_id"], "agent-a#1");
    assert_eq!(receipt["correlation_id"], "corr-test");
    assert_eq!(receipt["verdict"], "accepted");
    assert_eq!(
        receipt["prev"].as_str().unwrap().len(),
        64,
        "the chain hash of the key events before it"
    );
    let whole: J = serde_json::from_slice(&event).unwrap();
    assert_eq!(receipt["event_hash"], sha256_hex(&jcs(&whole)).as_str());
    let at = receipt["received_at"].as_str().unwrap();
    assert_eq!(at.len(), 24, "{at}");
    assert!(at.ends_with('Z') && at.as_bytes()[19] == b'.', "{at}");
    assert_receipt_hashes(receipt);

    // The next receipt chains onto this one.
    let next = post(&env.server, "application/json", &ev(&env.a, "evt-two"));
    let next = &next["results"][0]["receipt"];
    assert_eq!(next["index"], env.base + 1);
    assert_eq!(next["prev"], receipt["chain"]);
    assert_receipt_hashes(next);
}

#[test]
fn a_json_array_is_judged_item_by_item_in_order() {
    let env = start(None);
    let (e1, e2, e3) = (
        ev(&env.a, "arr-1"),
        ev(&env.a, "arr-2"),
        ev(&env.a, "arr-3"),
    );
    let mut body = b"  [\n ".to_vec();
    body.extend_from_slice(&e1);
    body.extend_from_slice(b" ,\n  ");
    body.extend_from_slice(&e2);
    body.extend_from_slice(b",");
    body.extend_from_slice(&e3);
    body.extend_from_slice(b"\n]\n");
    let answer = post(&env.server, "application/json", &body);
    assert_eq!(counts(&answer), (3, 0, 0), "{answer}");
    let ids = event_ids(&answer);
    assert_eq!(ids, ["arr-1", "arr-2", "arr-3"]);
    for (i, r) in answer["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(r["receipt"]["index"], env.base + i as u64);
    }
}

#[test]
fn ndjson_with_blank_lines_and_crlf() {
    let env = start(None);
    let mut body = Vec::new();
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(&ev(&env.a, "nd-1"));
    body.extend_from_slice(b"\r\n\r\n   \n\t\r\n");
    body.extend_from_slice(&ev(&env.a, "nd-2"));
    body.extend_from_slice(b"\n\n");
    body.extend_from_slice(&ev(&env.a, "nd-3"));
    // No newline after the last line.
    let answer = post(&env.server, "application/x-ndjson", &body);
    assert_eq!(counts(&answer), (3, 0, 0), "{answer}");
    let ids = event_ids(&answer);
    assert_eq!(ids, ["nd-1", "nd-2", "nd-3"]);
    // Each one is found afterwards.
    for id in ids {
        let r = env.server.receipt("agent-a", id);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["receipt"]["verdict"], "accepted");
    }
}

#[test]
fn a_json_array_that_does_not_frame_is_one_quarantined_item() {
    let env = start(None);
    let good = ev(&env.a, "in-broken-array");
    let mut body = b"[".to_vec();
    body.extend_from_slice(&good);
    body.extend_from_slice(b", {\"event_id\": \"x\", ]");
    let answer = post(&env.server, "application/json", &body);
    assert_eq!(counts(&answer), (0, 0, 1), "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{answer}");
    assert_eq!(results[0]["status"], "rejected");
    assert_eq!(results[0]["reason"], "unparseable");
    assert!(results[0].get("receipt").is_none(), "{answer}");
    assert!(results[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    // Not even the well-formed element got a receipt.
    assert_eq!(env.server.receipt("agent-a", "in-broken-array").status, 404);
    // The whole body is in the quarantine, by its SHA-256.
    let q = quarantine(&env.server);
    assert!(
        q.iter()
            .any(|e| e["reason"] == "unparseable" && e["sha256"] == sha256_hex(&body).as_str()),
        "{q:?}"
    );
    // Nothing was added to the log: the next receipt is the first.
    let next = post(&env.server, "application/json", &ev(&env.a, "after"));
    assert_eq!(next["results"][0]["receipt"]["index"], env.base);
}

#[test]
fn a_json_array_with_a_malformed_element_is_one_quarantined_item() {
    // Brackets balance, but the body is not JSON: it "does not parse", so
    // it is one unparseable item and none of its elements is receipted.
    let env = start(None);
    for (n, bad) in [
        &br#"{"event_id": "x" "y"}"#[..],
        b"12abc",
        br#"{"a": [1}]"#,
        b"{\"a\": nul}",
    ]
    .iter()
    .enumerate()
    {
        let (g1, g2) = (format!("ma-{n}-1"), format!("ma-{n}-2"));
        let mut body = b"[".to_vec();
        body.extend_from_slice(&ev(&env.a, &g1));
        body.extend_from_slice(b", ");
        body.extend_from_slice(bad);
        body.extend_from_slice(b", ");
        body.extend_from_slice(&ev(&env.a, &g2));
        body.extend_from_slice(b"]");
        assert!(serde_json::from_slice::<J>(&body).is_err());
        let answer = post(&env.server, "application/json", &body);
        assert_eq!(
            statuses(&answer),
            ["rejected:unparseable"],
            "{}: {answer}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(env.server.receipt("agent-a", &g1).status, 404);
        assert_eq!(env.server.receipt("agent-a", &g2).status, 404);
    }
}

#[test]
fn one_bad_ndjson_line_does_not_fail_the_others() {
    let env = start(None);
    let e1 = ev(&env.a, "mix-1");
    let e3 = ev(&env.a, "mix-3");
    // A forged signature: the content of mix-4 signed by another key.
    let forger = Signer::new(9, "agent-a", "agent-a#1");
    let forged = forger.sign(&env.a.event("mix-4", json!({})));
    let no_id = env.a.sign(&json!({
        "spec": "vigil.event/v1", "occurred_at": "2026-01-01T00:00:00Z",
        "agent_id": "agent-a", "key_id": "agent-a#1", "correlation_id": "c", "action": "a"
    }));
    let lines: Vec<Vec<u8>> = vec![
        e1.clone(),
        b"{\"event_id\": \"mix-2\", \"agent_id\": ".to_vec(),
        e3,
        forged,
        e1, // the same event again in the same batch
        no_id,
        b"{\"a\":1,\"a\":2}".to_vec(),
    ];
    let answer = env.server.post_ndjson(&lines);
    assert_eq!(
        statuses(&answer),
        [
            "accepted",
            "rejected:unparseable",
            "accepted",
            "rejected:bad_signature",
            "duplicate",
            "rejected:unparseable",
            "rejected:unparseable",
        ],
        "{answer}"
    );
    assert_eq!(counts(&answer), (2, 1, 4), "{answer}");
    let results = answer["results"].as_array().unwrap();
    // Receipts on every item that has one, and only there.
    let has_receipt: Vec<bool> = results.iter().map(|r| r.get("receipt").is_some()).collect();
    assert_eq!(has_receipt, [true, false, true, true, true, false, false]);
    assert_eq!(results[0]["event_id"], "mix-1");
    assert_eq!(results[2]["event_id"], "mix-3");
    assert_eq!(results[3]["event_id"], "mix-4");
    assert_eq!(results[3]["receipt"]["verdict"], "rejected:bad_signature");
    // The duplicate names the original receipt.
    assert_eq!(results[4]["receipt"], results[0]["receipt"]);
    for i in [1, 3, 5, 6] {
        assert!(
            results[i]["error"].as_str().is_some_and(|e| !e.is_empty()),
            "item {i} says what is wrong: {}",
            results[i]
        );
    }
    // Receipts are numbered in input order.
    assert_eq!(results[0]["receipt"]["index"], env.base);
    assert_eq!(results[2]["receipt"]["index"], env.base + 1);
    assert_eq!(results[3]["receipt"]["index"], env.base + 2);
}

#[test]
fn empty_and_oversized_bodies_are_refused() {
    let env = start(Some("[server]\nmax_body_bytes = 2048\n"));
    for body in [&b""[..], b"  \r\n\n "] {
        for ct in ["application/json", "application/x-ndjson"] {
            let r = env.server.req("POST", "/v1/events", Some(ct), body);
            assert_error(&r, 400);
        }
    }
    // Under the limit: fine.
    let small = ev(&env.a, "small");
    assert!(small.len() < 2048);
    assert_eq!(
        counts(&post(&env.server, "application/json", &small)),
        (1, 0, 0)
    );
    // Over the limit: 413, and nothing of it is receipted.
    let mut big = env.a.event("big", json!({}));
    big["justification"] = J::String("x".repeat(3000));
    let big = env.a.sign(&big);
    assert!(big.len() > 2048 && big.len() < 8192);
    let r = env
        .server
        .req("POST", "/v1/events", Some("application/json"), &big);
    assert_error(&r, 413);
    assert_eq!(env.server.receipt("agent-a", "big").status, 404);
    // A small gzip body that inflates past the limit is 413 too.
    let bomb = gzip(&big);
    assert!(bomb.len() < 2048);
    let auth = format!("Bearer {}", env.server.token);
    let r = http(
        env.server.addr,
        "POST",
        "/v1/events",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    );
    assert_error(&r, 413);
    assert_eq!(env.server.receipt("agent-a", "big").status, 404);
}

/// Sends a request with a chunked body (no Content-Length); returns the
/// status and the body text.
fn chunked_post(addr: std::net::SocketAddr, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(500) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&req);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn an_oversized_chunked_body_is_413() {
    let env = start(Some("[server]\nmax_body_bytes = 2048\n"));
    let small = ev(&env.a, "chunked-small");
    let (status, body) = chunked_post(env.server.addr, "/v1/events", &env.server.token, &small);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"accepted\":1"), "{body}");
    let mut big = env.a.event("chunked-big", json!({}));
    big["justification"] = J::String("y".repeat(3000));
    let big = env.a.sign(&big);
    let (status, body) = chunked_post(env.server.addr, "/v1/events", &env.server.token, &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    assert_eq!(env.server.receipt("agent-a", "chunked-big").status, 404);
}

#[test]
fn gzip_bodies_are_accepted() {
    let env = start(None);
    let mut body = Vec::new();
    for id in ["gz-1", "gz-2"] {
        body.extend_from_slice(&ev(&env.a, id));
        body.push(b'\n');
    }
    let auth = format!("Bearer {}", env.server.token);
    let r = http(
        env.server.addr,
        "POST",
        "/v1/events",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-ndjson"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(counts(&r.json()), (2, 0, 0), "{}", r.text());
    assert_eq!(env.server.receipt("agent-a", "gz-2").status, 200);
    // Bytes that are not gzip under Content-Encoding: gzip are a 4xx error.
    let r = http(
        env.server.addr,
        "POST",
        "/v1/events",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &ev(&env.a, "not-gzip"),
    );
    assert!((400..500).contains(&r.status), "{}", r.text());
    assert_eq!(env.server.receipt("agent-a", "not-gzip").status, 404);
}

/// A rejected event sent again with the same verdict: the earlier
/// rejection receipt, no new one. (The contract calls it "a duplicate of
/// that rejection"; whether the item's status says `rejected` with the
/// reason or `duplicate` is left open, so both are taken.)
fn assert_repeated_rejection(answer: &J, reason: &str, receipt: &J) {
    let r = &answer["results"][0];
    match r["status"].as_str().unwrap() {
        "rejected" => {
            assert_eq!(r["reason"], reason, "{answer}");
            assert_eq!(counts(answer), (0, 0, 1), "{answer}");
        }
        "duplicate" => assert_eq!(counts(answer), (0, 1, 0), "{answer}"),
        other => panic!("{other}: {answer}"),
    }
    assert_eq!(&r["receipt"], receipt, "the earlier rejection receipt");
}

#[test]
fn duplicates_conflicts_and_repeated_rejections() {
    let env = start(None);
    let s = &env.server;
    let original = ev(&env.a, "dup-1");
    let first = post(s, "application/json", &original);
    let receipt = first["results"][0]["receipt"].clone();
    assert_eq!(receipt["index"], env.base);

    // The same event again: a duplicate with the original receipt.
    let again = post(s, "application/json", &original);
    assert_eq!(counts(&again), (0, 1, 0), "{again}");
    assert_eq!(again["results"][0]["status"], "duplicate");
    assert_eq!(again["results"][0]["event_id"], "dup-1");
    assert_eq!(again["results"][0]["receipt"], receipt);
    // Reordered members and other whitespace are the same event.
    let v: J = serde_json::from_slice(&original).unwrap();
    let pretty = serde_json::to_vec_pretty(&v).unwrap();
    let again = post(s, "application/json", &pretty);
    assert_eq!(again["results"][0]["status"], "duplicate", "{again}");
    assert_eq!(again["results"][0]["receipt"], receipt);

    // Same agent and id, other content, valid signature: conflict, receipted.
    let other = env
        .a
        .sign(&env.a.event("dup-1", json!({"action": "db.drop_table"})));
    let conflict = post(s, "application/json", &other);
    assert_eq!(counts(&conflict), (0, 0, 1), "{conflict}");
    let c = &conflict["results"][0];
    assert_eq!(c["status"], "rejected");
    assert_eq!(c["reason"], "conflict");
    assert_eq!(c["receipt"]["verdict"], "rejected:conflict");
    assert_eq!(c["receipt"]["index"], env.base + 1);
    assert!(c["error"].as_str().is_some_and(|e| !e.is_empty()));
    // Sent again: the same rejection receipt, no new record.
    let conflict2 = post(s, "application/json", &other);
    assert_repeated_rejection(&conflict2, "conflict", &c["receipt"]);

    // A bad signature, sent twice: one rejection receipt.
    let forged = Signer::new(7, "agent-a", "agent-a#1").sign(&env.a.event("bad-1", json!({})));
    let bad = post(s, "application/json", &forged);
    assert_eq!(bad["results"][0]["reason"], "bad_signature");
    assert_eq!(bad["results"][0]["receipt"]["index"], env.base + 2);
    let bad2 = post(s, "application/json", &forged);
    assert_repeated_rejection(&bad2, "bad_signature", &bad["results"][0]["receipt"]);

    // GET /v1/receipts gives the accepted receipt over the conflict.
    let got = s.receipt("agent-a", "dup-1");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["receipt"], receipt);
    // ... and the latest rejection where nothing was accepted.
    let got = s.receipt("agent-a", "bad-1");
    assert_eq!(got.json()["receipt"], bad["results"][0]["receipt"]);

    // No record was added by the repeats: the next new receipt is the
    // fourth, and a checkpoint covering it has size base + 4.
    let next = post(s, "application/json", &ev(&env.a, "next"));
    assert_eq!(next["results"][0]["receipt"]["index"], env.base + 3);
    let note = wait_checkpoint(s, env.base + 4);
    assert_eq!(cp_size(&note), env.base + 4, "{note}");
}

#[test]
fn a_rejected_event_stays_a_duplicate_after_another_rejection_of_its_id() {
    // Two different forgeries under one event id, each sent twice,
    // alternating: each is "an event that was rejected before" and gets the
    // same verdict with the same event_hash, so the second sending of each
    // is a duplicate of its own rejection: two receipts in all, not four.
    let env = start(None);
    let s = &env.server;
    let forger = Signer::new(7, "agent-a", "agent-a#1");
    let f1 = forger.sign(&env.a.event("twice", json!({"action": "a.one"})));
    let f2 = forger.sign(&env.a.event("twice", json!({"action": "a.two"})));
    let r1 = post(s, "application/json", &f1);
    let r2 = post(s, "application/json", &f2);
    assert_eq!(r1["results"][0]["receipt"]["index"], env.base);
    assert_eq!(r2["results"][0]["receipt"]["index"], env.base + 1);
    let again1 = post(s, "application/json", &f1);
    assert_repeated_rejection(&again1, "bad_signature", &r1["results"][0]["receipt"]);
    let again2 = post(s, "application/json", &f2);
    assert_repeated_rejection(&again2, "bad_signature", &r2["results"][0]["receipt"]);
    let next = post(s, "application/json", &ev(&env.a, "after-twice"));
    assert_eq!(next["results"][0]["receipt"]["index"], env.base + 2);
}

#[test]
fn duplicates_survive_a_restart() {
    let mut env = start(None);
    let original = ev(&env.a, "persist-1");
    let first = post(&env.server, "application/json", &original);
    let receipt = first["results"][0]["receipt"].clone();
    let forged = Signer::new(7, "agent-a", "agent-a#1").sign(&env.a.event("persist-2", json!({})));
    let rejected = post(&env.server, "application/json", &forged);
    assert_eq!(env.server.stop(), Some(0));
    let jwks = env.dir.path().join("agents.jwks.json");
    env.server = Server::start(&env.data(), &["--keys", jwks.to_str().unwrap()]);
    let again = post(&env.server, "application/json", &original);
    assert_eq!(again["results"][0]["status"], "duplicate", "{again}");
    assert_eq!(again["results"][0]["receipt"], receipt);
    let again = post(&env.server, "application/json", &forged);
    assert_eq!(
        again["results"][0]["receipt"],
        rejected["results"][0]["receipt"]
    );
    let next = post(&env.server, "application/json", &ev(&env.a, "persist-3"));
    assert_eq!(next["results"][0]["receipt"]["index"], env.base + 2);
    assert_eq!(next["results"][0]["receipt"]["log"], ORIGIN);
}

#[test]
fn missing_and_unknown_tokens_are_401() {
    let env = start(None);
    let body = ev(&env.a, "auth-1");
    for auth in [
        None,
        Some("Bearer not-the-token".to_string()),
        Some(format!("Basic {}", env.server.token)),
        Some("Bearer".to_string()),
    ] {
        let auth: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let mut h = auth.clone();
        h.push(("Content-Type", "application/json"));
        let r = http(env.server.addr, "POST", "/v1/events", &h, &body);
        assert_error(&r, 401);
        let path = "/v1/receipts/auth-1?agent_id=agent-a";
        let r = http(env.server.addr, "GET", path, &auth, b"");
        assert_error(&r, 401);
    }
    assert_eq!(env.server.receipt("agent-a", "auth-1").status, 404);
    // The generated admin token is kept in the data directory, mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(env.data().join("admin.token")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(!env.server.log_text().contains(&env.server.token));
}

#[test]
fn configured_tokens_grant_their_roles() {
    let audit_hash = sha256_hex(b"audit-secret-2");
    let env = start(Some(&format!(
        r#"
[[tokens]]
name = "siem"
token = "ingest-secret-1"
roles = ["ingest"]

[[tokens]]
name = "auditor"
sha256 = "{audit_hash}"
roles = ["audit"]

[[tokens]]
name = "prometheus"
token = "metrics-secret-3"
roles = ["metrics"]
"#
    )));
    assert!(
        !env.data().join("admin.token").exists(),
        "no admin.token is written when tokens are configured"
    );
    let addr = env.server.addr;
    let body = ev(&env.a, "tok-1");
    // The ingest token, with the scheme in lower case, sends events.
    let r = http(
        addr,
        "POST",
        "/v1/events",
        &[
            ("Authorization", "bearer ingest-secret-1"),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 1);
    // ... but cannot read receipts or metrics.
    let path = "/v1/receipts/tok-1?agent_id=agent-a";
    let r = http(
        addr,
        "GET",
        path,
        &[("Authorization", "Bearer ingest-secret-1")],
        b"",
    );
    assert_error(&r, 403);
    let r = http(
        addr,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer ingest-secret-1")],
        b"",
    );
    assert_error(&r, 403);
    // The audit token (configured by its SHA-256) reads receipts ...
    let r = http(
        addr,
        "GET",
        path,
        &[("Authorization", "BEARER audit-secret-2")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["receipt"]["verdict"], "accepted");
    // ... and cannot send events.
    let r = http(
        addr,
        "POST",
        "/v1/events",
        &[
            ("Authorization", "Bearer audit-secret-2"),
            ("Content-Type", "application/json"),
        ],
        &ev(&env.a, "tok-2"),
    );
    assert_error(&r, 403);
    // Its hash is not a token.
    let hash_as_token = format!("Bearer {audit_hash}");
    let r = http(addr, "GET", path, &[("Authorization", &hash_as_token)], b"");
    assert_error(&r, 401);
    // The metrics token reads metrics only.
    let r = http(
        addr,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer metrics-secret-3")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(
        addr,
        "GET",
        path,
        &[("Authorization", "Bearer metrics-secret-3")],
        b"",
    );
    assert_error(&r, 403);
    // HEC with the ingest token as Splunk, and the audit token refused.
    let env_body = serde_json::to_vec(&json!({
        "event": serde_json::from_slice::<J>(&ev(&env.a, "tok-3")).unwrap()
    }))
    .unwrap();
    let r = http(
        addr,
        "POST",
        "/services/collector/event",
        &[("Authorization", "Splunk ingest-secret-1")],
        &env_body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(
        addr,
        "POST",
        "/services/collector/event",
        &[("Authorization", "Splunk audit-secret-2")],
        &env_body,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], 4);
    // Nothing the refused requests sent was receipted.
    let r = http(
        addr,
        "GET",
        "/v1/receipts/tok-2?agent_id=agent-a",
        &[("Authorization", "Bearer audit-secret-2")],
        b"",
    );
    assert_eq!(r.status, 404);
}

#[test]
fn a_generated_admin_token_is_not_honoured_once_tokens_are_configured() {
    let mut env = start(None);
    let old = env.server.token.clone();
    assert!(!old.is_empty());
    post(&env.server, "application/json", &ev(&env.a, "gen-1"));
    assert_eq!(env.server.stop(), Some(0));
    let cfg = env.dir.path().join("tokens.toml");
    std::fs::write(
        &cfg,
        "[[tokens]]\nname = \"ops\"\ntoken = \"ops-secret-4\"\nroles = [\"admin\"]\n",
    )
    .unwrap();
    let jwks = env.dir.path().join("agents.jwks.json");
    env.server = Server::start(
        &env.data(),
        &[
            "--keys",
            jwks.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let old_auth = format!("Bearer {old}");
    let path = "/v1/receipts/gen-1?agent_id=agent-a";
    let r = http(
        env.server.addr,
        "GET",
        path,
        &[("Authorization", &old_auth)],
        b"",
    );
    assert_error(&r, 401);
    let r = http(
        env.server.addr,
        "POST",
        "/v1/events",
        &[
            ("Authorization", &old_auth),
            ("Content-Type", "application/json"),
        ],
        &ev(&env.a, "gen-2"),
    );
    assert_error(&r, 401);
    let r = http(
        env.server.addr,
        "GET",
        path,
        &[("Authorization", "Bearer ops-secret-4")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn without_tokens_a_non_loopback_listen_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, err) = run_bounded(
        &[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        60,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.is_empty());
    // Also when the address comes from the configuration file.
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let (code, err) = run_bounded(
        &[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        60,
    );
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn receipts_route_needs_an_agent_and_a_known_event() {
    let env = start(None);
    post(&env.server, "application/json", &ev(&env.a, "known"));
    for path in ["/v1/receipts/known", "/v1/receipts/known?agent_id="] {
        let r = env.server.req("GET", path, None, b"");
        assert_error(&r, 400);
    }
    let r = env.server.receipt("agent-a", "unknown-event");
    assert_error(&r, 404);
    let r = env.server.receipt("agent-b", "known");
    assert_error(&r, 404);
    assert_eq!(env.server.receipt("agent-a", "known").status, 200);
}

#[test]
fn receipt_proof_verifies_offline_with_the_log_key() {
    let env = start(None);
    let s = &env.server;
    for i in 0..3 {
        post(s, "application/json", &ev(&env.a, &format!("pre-{i}")));
    }
    let event = ev(&env.a, "proved");
    let answer = post(s, "application/json", &event);
    let receipt = answer["results"][0]["receipt"].clone();
    assert_eq!(receipt["index"], env.base + 3);
    // Poll until a checkpoint covers it (the contract says about a second).
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let r = s.receipt("agent-a", "proved");
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["receipt"], receipt);
        if !j["proof"].is_null() {
            break j;
        }
        assert!(Instant::now() < deadline, "no proof: {j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let proof = found["proof"].as_str().unwrap();
    assert!(proof.starts_with("c2sp.org/tlog-proof@v1\n"), "{proof}");
    assert!(
        proof.contains(&format!("\nindex {}\n", env.base + 3)),
        "{proof}"
    );
    // The extra line is the receipt body's JCS.
    let extra = proof
        .lines()
        .nth(1)
        .unwrap()
        .strip_prefix("extra ")
        .unwrap();
    let mut body = receipt.clone();
    body.as_object_mut().unwrap().remove("leaf_hash");
    body.as_object_mut().unwrap().remove("chain");
    assert_eq!(b64_decode(extra).unwrap(), jcs(&body));

    let lk = http(s.addr, "GET", "/v1/log-key", &[], b"");
    assert_eq!(lk.status, 200);
    assert!(lk
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let vkey = lk.text().lines().next().unwrap().to_string();
    assert!(vkey.starts_with(&format!("{ORIGIN}+")), "{vkey}");

    let dir = env.dir.path();
    let proof_file = dir.join("receipt.proof");
    std::fs::write(&proof_file, proof).unwrap();
    let event_file = dir.join("event.json");
    std::fs::write(&event_file, &event).unwrap();
    let out = run_vigil(&[
        "verify-proof",
        proof_file.to_str().unwrap(),
        "--vkey",
        &vkey,
        "--event",
        event_file.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Another event is not the one the proof is for.
    std::fs::write(&event_file, ev(&env.a, "pre-0")).unwrap();
    let out = run_vigil(&[
        "verify-proof",
        proof_file.to_str().unwrap(),
        "--vkey",
        &vkey,
        "--event",
        event_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn event_ids_with_reserved_characters_are_found_percent_encoded() {
    let env = start(None);
    let odd = Signer::new(2, "agent+x@corp/1", "k/1+#");
    let ids = ["a/b", "c#d", "e+f", "g/h#i+j=k:l@m", "/", "#", "+"];
    let mut lines = Vec::new();
    for id in ids.iter().chain(&[".."]) {
        lines.push(ev(&env.a, id));
        lines.push(ev(&odd, id));
    }
    let answer = env.server.post_ndjson(&lines);
    assert_eq!(
        answer["accepted"].as_u64().unwrap(),
        lines.len() as u64,
        "{answer}"
    );
    for id in ids {
        for agent in ["agent-a", "agent+x@corp/1"] {
            let r = env.server.receipt(agent, id);
            assert_eq!(r.status, 200, "{agent} {id}: {}", r.text());
            let rec = &r.json()["receipt"];
            assert_eq!(rec["event_id"], *id);
            assert_eq!(rec["agent_id"], agent);
        }
    }
    // ".." percent-encoded as a whole, so no client normalises it away.
    let r = env
        .server
        .req("GET", "/v1/receipts/%2E%2E?agent_id=agent-a", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["receipt"]["event_id"], "..");
    // The encoded form is not itself an id: "%2F" is not "/".
    let path = format!("/v1/receipts/{}?agent_id=agent-a", encode("%2F"));
    assert_eq!(env.server.req("GET", &path, None, b"").status, 404);
}

#[test]
fn checkpoints_and_consistency_proofs() {
    let env = start(None);
    let s = &env.server;
    let lk = http(s.addr, "GET", "/v1/log-key", &[], b"").text();
    let verifier = vigil::log::note::NoteVerifier::parse(lk.lines().next().unwrap()).unwrap();

    let r = http(s.addr, "GET", "/v1/checkpoint", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{:?}",
        r.headers
    );
    let note = r.text();
    assert!(note.starts_with(&format!("{ORIGIN}\n")), "{note}");
    assert!(note.ends_with('\n'));
    vigil::log::note::verify_checkpoint(&note, &verifier).unwrap();
    // The log's first checkpoint is its size-0 checkpoint, with the empty root.
    let stored =
        vigil::store::checkpoints::read_checkpoints(&env.data().join("checkpoints.log")).unwrap();
    let first = &stored.checkpoints[0].note;
    let lines: Vec<&str> = first.split('\n').collect();
    assert_eq!(lines[1], "0", "a new log has its size-0 checkpoint");
    assert_eq!(
        b64_decode(lines[2]).unwrap(),
        Sha256::digest(b"").to_vec(),
        "the empty root"
    );
    assert_eq!(lines[3], "");
    assert!(
        lines[4].starts_with(&format!("\u{2014} {ORIGIN} ")),
        "{first}"
    );
    vigil::log::note::verify_checkpoint(first, &verifier).unwrap();

    // Three events in one request, then two in another.
    let b = env.base;
    let batch = |ids: &[&str]| {
        let lines: Vec<Vec<u8>> = ids.iter().map(|id| ev(&env.a, id)).collect();
        s.post_ndjson(&lines)
    };
    batch(&["c-1", "c-2", "c-3"]);
    let note3 = wait_checkpoint(s, b + 3);
    assert_eq!(cp_size(&note3), b + 3);
    batch(&["c-4", "c-5"]);
    let note5 = wait_checkpoint(s, b + 5);
    assert_eq!(cp_size(&note5), b + 5);
    let cp3 = vigil::log::note::verify_checkpoint(&note3, &verifier).unwrap();
    let cp5 = vigil::log::note::verify_checkpoint(&note5, &verifier).unwrap();

    let r = http(
        s.addr,
        "GET",
        &format!("/v1/proof/consistency?from={}&to={}", b + 3, b + 5),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["from"], b + 3);
    assert_eq!(j["to"], b + 5);
    let hashes: Vec<[u8; 32]> = j["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let h = h.as_str().unwrap();
            assert_eq!(h, h.to_lowercase(), "lowercase hex");
            hex::decode(h).unwrap().try_into().unwrap()
        })
        .collect();
    assert!(!hashes.is_empty());
    assert!(vigil::log::merkle::verify_consistency(
        b + 3,
        b + 5,
        &cp3.root,
        &cp5.root,
        &hashes
    ));
    // from == to: an empty list.
    let r = http(
        s.addr,
        "GET",
        &format!("/v1/proof/consistency?from={0}&to={0}", b + 5),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["hashes"], json!([]));
    // Sizes that were never checkpointed, 0, reversed, missing, not numbers.
    for q in [
        format!("from={}&to={}", b + 2, b + 5),
        format!("from={}&to={}", b + 3, b + 4),
        format!("from={}&to={}", b + 3, b + 6),
        format!("from={}&to=1000", b + 3),
        format!("from=0&to={}", b + 5),
        format!("from={}&to={}", b + 5, b + 3),
        format!("from={}", b + 3),
        format!("to={}", b + 5),
        format!("from=x&to={}", b + 5),
        format!("from=-1&to={}", b + 5),
        "from=0&to=0".to_string(),
    ] {
        let r = http(
            s.addr,
            "GET",
            &format!("/v1/proof/consistency?{q}"),
            &[],
            b"",
        );
        assert_error(&r, 400);
    }
}

#[test]
fn public_routes_need_no_token() {
    let env = start(None);
    let s = &env.server;
    for path in ["/healthz", "/readyz"] {
        let r = http(s.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let r = http(s.addr, "GET", "/v1/pipeline-keys", &[], b"");
    assert_eq!(r.status, 200);
    let jwks = r.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty(), "{jwks}");
    for k in keys {
        assert_eq!(k["kty"], "OKP");
        assert_eq!(k["crv"], "Ed25519");
        assert_eq!(k["agent_id"], "vigil");
        assert!(k["kid"].as_str().is_some_and(|k| !k.is_empty()));
        let x = vigil::event::signature::b64url_decode(k["x"].as_str().unwrap()).unwrap();
        assert_eq!(x.len(), 32);
        assert!(k.get("d").is_none(), "no private key: {k}");
        // The pipeline's event key is not the log key.
        let lk = http(s.addr, "GET", "/v1/log-key", &[], b"").text();
        let vk = vigil::log::note::NoteVerifier::parse(lk.lines().next().unwrap()).unwrap();
        assert_ne!(vk.key.as_bytes().as_slice(), x.as_slice());
    }
    let r = http(s.addr, "GET", "/services/collector/health", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"text": "HEC is healthy", "code": 17}));
    // An unknown route is a JSON 404.
    assert_error(&s.req("GET", "/v1/nope", None, b""), 404);
}

#[test]
fn metrics_need_the_metrics_role() {
    let env = start(None);
    post(&env.server, "application/json", &ev(&env.a, "m-1"));
    let r = http(env.server.addr, "GET", "/metrics", &[], b"");
    assert_error(&r, 401);
    let r = env.server.req("GET", "/metrics", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let text = r.text();
    assert!(
        text.contains("# TYPE vigil_ingest_events_total counter"),
        "{text}"
    );
    let accepted = text
        .lines()
        .find(|l| l.starts_with("vigil_ingest_events_total{outcome=\"accepted\"}"))
        .unwrap_or_else(|| panic!("{text}"));
    let n: f64 = accepted.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{accepted}");
}

fn hec_envelopes(events: &[(&[u8], bool)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (e, as_string)) in events.iter().enumerate() {
        let event = if *as_string {
            J::String(String::from_utf8(e.to_vec()).unwrap())
        } else {
            serde_json::from_slice(e).unwrap()
        };
        let env =
            json!({"time": 1700000000 + i, "host": "h", "sourcetype": "vigil", "event": event});
        body.extend_from_slice(&serde_json::to_vec(&env).unwrap());
        if i % 2 == 0 {
            body.extend_from_slice(b"\n");
        }
    }
    body
}

fn hec(server: &Server, auth: Option<&str>, extra: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    h.extend_from_slice(extra);
    http(server.addr, "POST", "/services/collector/event", &h, body)
}

#[test]
fn splunk_hec_ingests_concatenated_envelopes() {
    let env = start(None);
    let s = &env.server;
    let splunk = format!("Splunk {}", s.token);
    let (e1, e2, e3) = (
        ev(&env.a, "hec-1"),
        ev(&env.a, "hec-2"),
        ev(&env.a, "hec-3"),
    );
    // A forged one is receipted as rejected, not an error.
    let forged = Signer::new(8, "agent-a", "agent-a#1").sign(&env.a.event("hec-4", json!({})));
    let body = hec_envelopes(&[(&e1, false), (&e2, true), (&e3, false), (&forged, true)]);
    let r = hec(s, Some(&splunk), &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"text": "Success", "code": 0}));
    for (id, verdict) in [
        ("hec-1", "accepted"),
        ("hec-2", "accepted"),
        ("hec-3", "accepted"),
        ("hec-4", "rejected:bad_signature"),
    ] {
        let r = s.receipt("agent-a", id);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["receipt"]["verdict"], verdict, "{id}");
    }
    // The receipt's event_hash is the event's, not the envelope's.
    let whole: J = serde_json::from_slice(&e1).unwrap();
    assert_eq!(
        s.receipt("agent-a", "hec-1").json()["receipt"]["event_hash"],
        sha256_hex(&jcs(&whole)).as_str()
    );
    // An agent with no key: still Success (its item is quarantined).
    let ghost = Signer::new(5, "ghost", "ghost#1");
    let ghost_event = ev(&ghost, "hec-ghost");
    let r = hec(
        s,
        Some(&splunk),
        &[],
        &hec_envelopes(&[(&ghost_event, true)]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"text": "Success", "code": 0}));
    assert_eq!(s.receipt("ghost", "hec-ghost").status, 404);
    let q = quarantine(s);
    assert!(
        q.iter()
            .any(|e| e["reason"] == "unknown_agent"
                && e["sha256"] == sha256_hex(&ghost_event).as_str()),
        "{q:?}"
    );
    // The same events through /v1/events are duplicates of these.
    let again = post(s, "application/json", &e2);
    assert_eq!(again["results"][0]["status"], "duplicate");

    // gzip, and Bearer on /services/collector.
    let e5 = ev(&env.a, "hec-5");
    let bearer = format!("Bearer {}", s.token);
    let r = http(
        s.addr,
        "POST",
        "/services/collector",
        &[("Authorization", &bearer), ("Content-Encoding", "gzip")],
        &gzip(&hec_envelopes(&[(&e5, true)])),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"text": "Success", "code": 0}));
    assert_eq!(s.receipt("agent-a", "hec-5").status, 200);
}

#[test]
fn splunk_hec_errors_in_hec_form() {
    let env = start(None);
    let s = &env.server;
    let body = hec_envelopes(&[(&ev(&env.a, "herr-1"), false)]);
    let r = hec(s, None, &[], &body);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["code"], 2);
    assert!(r.json()["text"].is_string());
    let r = hec(s, Some("Splunk wrong-token"), &[], &body);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], 4);
    let splunk = format!("Splunk {}", s.token);
    for empty in [&b""[..], b" \n "] {
        let r = hec(s, Some(&splunk), &[], empty);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["code"], 6);
    }
    assert_eq!(s.receipt("agent-a", "herr-1").status, 404);
}

#[test]
fn splunk_hec_framing_error_keeps_the_good_envelope_and_quarantines_the_rest() {
    let env = start(None);
    let s = &env.server;
    let splunk = format!("Splunk {}", s.token);
    let mut body = hec_envelopes(&[(&ev(&env.a, "frame-1"), false)]);
    body.extend_from_slice(b" this-is-not-json ");
    body.extend_from_slice(&hec_envelopes(&[(&ev(&env.a, "frame-2"), false)]));
    let r = hec(s, Some(&splunk), &[], &body);
    let j = r.json();
    // Either form HEC senders understand, consistently.
    match r.status {
        200 => assert_eq!(j["code"], 0, "{j}"),
        400 => assert_eq!(j["code"], 6, "{j}"),
        other => panic!("unexpected status {other}: {j}"),
    }
    let got = s.receipt("agent-a", "frame-1");
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["receipt"]["verdict"], "accepted");
    assert_eq!(got.json()["receipt"]["index"], env.base);
    // The rest, including the well-formed envelope after the error, is one
    // quarantined item: no receipt.
    assert_eq!(s.receipt("agent-a", "frame-2").status, 404);
    let q = quarantine(s);
    let unparseable: Vec<&J> = q.iter().filter(|e| e["reason"] == "unparseable").collect();
    assert_eq!(unparseable.len(), 1, "{q:?}");
    let entry = unparseable[0];
    let raw = vigil::event::signature::b64_decode(entry["raw_b64"].as_str().unwrap()).unwrap();
    assert_eq!(entry["sha256"], sha256_hex(&raw).as_str());
    assert_eq!(entry["size"], raw.len() as u64);
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.contains("this-is-not-json"), "{raw}");
    assert!(raw.contains("frame-2"), "{raw}");
    assert!(!raw.contains("frame-1"), "{raw}");
    assert!(entry["error"].as_str().is_some_and(|e| !e.is_empty()));
    // The quarantine needs the audit role.
    let r = http(s.addr, "GET", "/v1/quarantine", &[], b"");
    assert_eq!(r.status, 401);
}

#[test]
fn another_origin_on_the_same_data_exits_2_and_sigterm_leaves_a_valid_log() {
    let mut env = start(None);
    let lines: Vec<Vec<u8>> = (0..5).map(|i| ev(&env.a, &format!("o-{i}"))).collect();
    env.server.post_ndjson(&lines);
    let forged = Signer::new(8, "agent-a", "agent-a#1").sign(&env.a.event("o-bad", json!({})));
    post(&env.server, "application/json", &forged);
    assert_eq!(env.server.stop(), Some(0));
    let data = env.data();
    let out = run_vigil(&["verify", "--data", data.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last checkpoint, written at SIGTERM, covers all 6 records.
    assert!(
        stdout.contains(&format!("latest size {}", env.base + 6)),
        "{stdout}"
    );
    let (code, err) = run_bounded(
        &[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--origin",
            "vigil.test/other",
        ],
        60,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("vigil.test/other"), "{err}");
    // The same origin, or none, starts again on the same log.
    let jwks = env.dir.path().join("agents.jwks.json");
    env.server = Server::start(
        &data,
        &["--keys", jwks.to_str().unwrap(), "--origin", ORIGIN],
    );
    let r = http(env.server.addr, "GET", "/v1/checkpoint", &[], b"");
    assert!(
        r.text()
            .starts_with(&format!("{ORIGIN}\n{}\n", env.base + 6)),
        "{}",
        r.text()
    );
    assert_eq!(env.server.stop(), Some(0));
    let out = run_vigil(&["verify", "--data", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
}

/// Nesting: up to 32 levels is an event; deeper is `rejected:schema` with a
/// receipt; beyond the parser's bound (1024) it is quarantined as
/// unparseable, and a body of millions of brackets is answered, not fatal.
#[test]
fn deep_nesting_is_schema_then_unparseable_and_never_fatal() {
    let env = start(None);
    let nest = |depth: usize| {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!({ "x": v });
        }
        v
    };
    let ok = env
        .a
        .sign(&env.a.event("nest-31", json!({ "attributes": nest(30) })));
    let deep = env
        .a
        .sign(&env.a.event("nest-40", json!({ "attributes": nest(39) })));
    let answer = env.server.post_ndjson(&[ok, deep]);
    assert_eq!(answer["results"][0]["status"], "accepted", "{answer}");
    assert_eq!(answer["results"][1]["reason"], "schema", "{answer}");
    assert!(answer["results"][1]["receipt"].is_object());
    assert!(answer["results"][1]["error"]
        .as_str()
        .unwrap()
        .contains("32"));

    let mut hostile =
        br#"{"spec":"vigil.event/v1","event_id":"nest-deep","agent_id":"agent-a","attributes":"#
            .to_vec();
    hostile.extend(std::iter::repeat_n(b'[', 3_000_000));
    hostile.extend(std::iter::repeat_n(b']', 3_000_000));
    hostile.push(b'}');
    let r = env
        .server
        .req("POST", "/v1/events", Some("application/json"), &hostile);
    assert_eq!(r.status, 200, "{}", r.text());
    let res = &r.json()["results"][0];
    assert_eq!(res["reason"], "unparseable", "{res}");
    assert!(
        res["error"].as_str().unwrap().contains("nesting deeper"),
        "{res}"
    );
    assert!(res.get("receipt").is_none());
    // Still serving.
    let again = env
        .server
        .post_ndjson(&[env.a.sign(&env.a.event("after-deep", json!({})))]);
    assert_eq!(again["results"][0]["status"], "accepted");
}

/// A body of more items than one answer should carry is refused whole.
#[test]
fn too_many_items_in_one_body_is_413() {
    let env = start(None);
    let body = "{}\n".repeat(100_001);
    let r = env.server.req(
        "POST",
        "/v1/events",
        Some("application/x-ndjson"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_events");
    let ok = "{}\n".repeat(1000);
    let r = env.server.req(
        "POST",
        "/v1/events",
        Some("application/x-ndjson"),
        ok.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["rejected"], 1000);
}

/// Issue 7, finding 5: a 10 MiB body of `{}` items (millions of them) is
/// refused at the item cap while it is being framed, as NDJSON, as a JSON
/// array and as HEC envelopes, without the memory that holding millions of
/// items would take.
#[test]
fn millions_of_tiny_items_are_refused_while_framing_with_memory_bounded() {
    let env = start(None);
    let s = &env.server;
    let before = s.peak_rss_mib();
    let ten_mib = 10 * 1024 * 1024;
    let ndjson = "{}\n".repeat(ten_mib / 3);
    let r = s.req(
        "POST",
        "/v1/events",
        Some("application/x-ndjson"),
        ndjson.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "too_many_events");
    let mut array = String::with_capacity(ten_mib);
    array.push('[');
    array.push_str(&"{},".repeat(ten_mib / 3 - 1));
    array.push_str("{}]");
    let r = s.req(
        "POST",
        "/v1/events",
        Some("application/json"),
        array.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    let envelopes = "{}".repeat(ten_mib / 2 - 1);
    let r = hec(
        s,
        Some(&format!("Splunk {}", s.token)),
        &[],
        envelopes.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["code"], 27);
    let peak = s.peak_rss_mib();
    eprintln!(
        "peak RSS: {before} MiB at start, {peak} MiB after three 10 MiB bodies of tiny items"
    );
    // The three bodies themselves are 30 MiB; holding their items (100+
    // bytes each, millions of them) would take over a gigabyte.
    assert!(
        peak < before + 120,
        "peak RSS {peak} MiB (from {before} MiB)"
    );
    // Still serving.
    let ok = s.post_ndjson(&[env.a.sign(&env.a.event("after-tiny", json!({})))]);
    assert_eq!(ok["results"][0]["status"], "accepted");
}

/// Issue 7, finding 9: a HEC envelope's unsigned members are not judged:
/// a `time` no double holds, a duplicated `host` or a lone surrogate in
/// `source` leaves a validly signed event accepted.
#[test]
fn a_hec_envelope_that_is_not_i_json_still_carries_a_good_event() {
    let env = start(None);
    let s = &env.server;
    let e = ev(&env.a, "hec-lenient");
    let mut body =
        br#"{"time": 9007199254740993.0, "host": "a", "host": "b", "source": "\ud800", "event": "#
            .to_vec();
    body.extend_from_slice(&e);
    body.extend_from_slice(b"}");
    let r = hec(s, Some(&format!("Splunk {}", s.token)), &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let receipt = s.receipt("agent-a", "hec-lenient");
    assert_eq!(receipt.status, 200, "{}", receipt.text());
    assert_eq!(receipt.json()["receipt"]["verdict"], "accepted");
    // Two event members are ambiguous: unparseable, quarantined.
    let mut two = br#"{"event": {"a": 1}, "event": "#.to_vec();
    two.extend_from_slice(&ev(&env.a, "hec-two"));
    two.extend_from_slice(b"}");
    let r = hec(s, Some(&format!("Splunk {}", s.token)), &[], &two);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.receipt("agent-a", "hec-two").status, 404);
    assert!(quarantine(s).iter().any(|q| q["error"]
        .as_str()
        .unwrap_or("")
        .contains("more than one event")));
}

/// Issue 7, finding 9: an admin token file that cannot be read as a token
/// is an error at start, never silently replaced (clients hold it).
#[test]
fn an_unreadable_admin_token_is_an_error_not_a_new_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, &[]);
    s.stop();
    let token = data.join("admin.token");
    std::fs::write(&token, b"\xff\xfe not UTF-8\n").unwrap();
    let (code, log) = run_bounded(
        &[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        30,
    );
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("admin.token"), "{log}");
    assert_eq!(std::fs::read(&token).unwrap(), b"\xff\xfe not UTF-8\n");
}

/// Issue 7, finding 9: only the last quarantine file can hold a torn end
/// (a crash while appending to it); damage in an earlier file stops the
/// server with a message naming the file, instead of being cut silently.
#[test]
fn damage_in_an_earlier_quarantine_file_is_not_cut() {
    let env = start(Some("[server]\nquarantine_max_entries = 16\n"));
    let garbage: Vec<Vec<u8>> = (0..6)
        .map(|i| format!("{{not json {i}").into_bytes())
        .collect();
    let answer = env.server.post_ndjson(&garbage);
    assert_eq!(answer["rejected"], 6, "{answer}");
    let mut server = env.server;
    assert_eq!(server.stop(), Some(0));
    let qdir = env.dir.path().join("data").join("quarantine");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&qdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "q"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "several quarantine files: {files:?}");
    // A torn end of the last file is cut; a bad byte in the first is damage.
    let last = files.last().unwrap().clone();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[7, 0, 0]);
    std::fs::write(&last, bytes).unwrap();
    let first = files[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    let data = env.dir.path().join("data");
    let jwks = env.dir.path().join("agents.jwks.json");
    let (code, log) = run_bounded(
        &[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--keys",
            jwks.to_str().unwrap(),
            "--origin",
            ORIGIN,
        ],
        30,
    );
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(first.file_name().unwrap().to_str().unwrap()),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        bytes,
        "the damaged file is left as it is"
    );
    // Moved aside, the server starts and cuts only the torn end of the last.
    std::fs::rename(&first, env.dir.path().join("damaged.q")).unwrap();
    let mut again = Server::start(
        &data,
        &["--keys", jwks.to_str().unwrap(), "--origin", ORIGIN],
    );
    assert_eq!(again.stop(), Some(0));
}
