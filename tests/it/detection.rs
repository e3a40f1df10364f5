//! Detection from outside (contract sections 5 and 6): a signed fleet with
//! a routine posted to a running server, then an attack; anomalies read
//! from the routes and the SSE stream; the same replay twice, and a replay
//! with a kill -9 in the middle, give the same anomalies; forged events
//! alert but teach nothing; anomalies and feedback are receipted.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value as J};

use crate::util::*;

/// Monday 2026-11-02 09:00 UTC, in seconds.
pub(crate) const START: i64 = 1_793_610_000;

pub(crate) fn at(secs: i64) -> String {
    vigil::time::Timestamp::from_secs(secs).to_rfc3339_millis()
}

/// Two HR agents of one role, and a JWKS naming their role.
pub(crate) fn hr_fleet(dir: &Path) -> (Vec<Signer>, std::path::PathBuf) {
    let signers: Vec<Signer> = (0..2)
        .map(|i| Signer::new(40 + i, &format!("hr-{i}"), &format!("hr-{i}#1")))
        .collect();
    let jwks = dir.join("hr.jwks.json");
    let keys: Vec<J> = signers
        .iter()
        .map(|s| s.jwk(json!({"role": "hr-assistant", "owner": "people-ops"})))
        .collect();
    write_jwks(&jwks, &keys);
    (signers, jwks)
}

/// Five weekdays of routine: each agent reads or updates an employee
/// record every ten minutes from 09:00 to 17:00.
pub(crate) fn routine(signers: &[Signer]) -> Vec<Vec<u8>> {
    routine_with_leases(signers, &[])
}

/// The routine, each agent using its leases in turn (`leases[i]` for
/// agent `i`, valid until the end of the year).
pub(crate) fn routine_with_leases(signers: &[Signer], leases: &[Vec<String>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for day in 0..5 {
        for slot in 0..48 {
            for (i, s) in signers.iter().enumerate() {
                let n = day * 48 + slot;
                let t = START + day * 86_400 + slot * 600 + i as i64 * 7;
                let action = if n % 4 == 0 {
                    "hr.update_employee"
                } else {
                    "hr.read_employee"
                };
                let mut fields = json!({
                    "occurred_at": at(t), "action": action,
                    "resource": format!("hris://employees/E{}", n % 9),
                    "principal": "alice@example.com", "source_ip": "10.0.0.7",
                    "correlation_id": format!("sess-{day}-{}", slot / 6),
                });
                if let Some(mine) = leases.get(i).filter(|l| !l.is_empty()) {
                    fields["lease_id"] = json!(mine[n as usize % mine.len()]);
                    fields["lease_expires_at"] = json!("2026-12-31T00:00:00Z");
                }
                let e = s.event(&format!("{}-r{n}", s.agent), fields);
                out.push(s.sign(&e));
            }
        }
    }
    out
}

/// The attack: a prompt injection makes hr-0 off-board twelve employees
/// in a few seconds, on the Monday after.
pub(crate) fn offboarding(s: &Signer) -> Vec<Vec<u8>> {
    (0..12)
        .map(|i| {
            let e = s.event(
                &format!("{}-attack-{i}", s.agent),
                json!({
                    "occurred_at": at(START + 7 * 86_400 + 3600 + i * 2),
                    "action": "hr.offboard_employee", "sensitivity": "high",
                    "resource": format!("hris://employees/X{i}"),
                    "principal": "alice@example.com", "source_ip": "10.0.0.7",
                    "correlation_id": "inject-1",
                }),
            );
            s.sign(&e)
        })
        .collect()
}

/// Eight events naming hr-1, signed by someone else's key.
pub(crate) fn forgeries() -> Vec<Vec<u8>> {
    let forger = Signer::new(99, "hr-1", "hr-1#1");
    (0..8)
        .map(|i| {
            let e = forger.event(
                &format!("hr-1-forged-{i}"),
                json!({"occurred_at": at(START + 7 * 86_400 + 7200 + i), "action": "hr.delete_all"}),
            );
            forger.sign(&e)
        })
        .collect()
}

pub(crate) fn metric(server: &Server, name: &str) -> u64 {
    let text = server.req("GET", "/metrics", None, b"").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until detection has judged every durable record.
pub(crate) fn settle(server: &Server) {
    let start = Instant::now();
    loop {
        let size = server.log_size();
        if metric(server, "vigil_detection_position_records") >= size {
            std::thread::sleep(Duration::from_millis(100));
            if server.log_size() == size {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "detection did not catch up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn anomalies(server: &Server, query: &str) -> Vec<J> {
    let r = server.req("GET", &format!("/v1/anomalies{query}"), None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["anomalies"].as_array().unwrap().clone()
}

/// What must not differ between two runs of the same events.
fn fingerprint(list: &[J]) -> Vec<(String, u64, J, J)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|a| {
            (
                a["anomaly_id"].as_str().unwrap().to_string(),
                a["score"].as_u64().unwrap(),
                a["kinds"].clone(),
                a["event_ids"].clone(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub(crate) fn post_all(server: &Server, events: &[Vec<u8>]) {
    for chunk in events.chunks(200) {
        server.post_ndjson(chunk);
    }
}

fn start(dir: &Path, jwks: &Path, data: &str) -> Server {
    Server::start(&dir.join(data), &["--keys", jwks.to_str().unwrap()])
}

#[test]
fn an_attack_is_explained_receipted_and_streamed_and_forgeries_teach_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (signers, jwks) = hr_fleet(dir.path());
    let server = start(dir.path(), &jwks, "data");
    post_all(&server, &routine(&signers));
    settle(&server);
    assert_eq!(
        anomalies(&server, ""),
        Vec::<J>::new(),
        "the routine raised anomalies"
    );
    baseline_is_the_routine(&server);

    post_all(&server, &offboarding(&signers[0]));
    settle(&server);
    let paused = server
        .req("GET", "/v1/agents/hr-0/baseline", None, b"")
        .json();
    assert_eq!(
        paused["learning_paused_until"],
        at(START + 7 * 86_400 + 3600 + 11 * 2 + 10 * 60),
        "an alert pauses learning for ten minutes of event time after its last event: {paused}"
    );
    assert_eq!(paused["events_learnt"], 240, "the attack taught nothing");
    let found = anomalies(&server, "?agent_id=hr-0&min_score=50");
    assert_eq!(found.len(), 1, "one merged anomaly: {found:#?}");
    let a = &found[0];
    assert_eq!(
        a["event_ids"][0], "hr-0-attack-0",
        "the triggering event first"
    );
    assert!(a["event_ids"].as_array().unwrap().len() >= 10, "{a}");
    assert!(a["score"].as_u64().unwrap() >= 70, "{a}");
    assert_eq!(a["correlation_id"], "inject-1");
    assert_eq!(a["principal"], "alice@example.com");
    let kinds: Vec<&str> = a["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(J::as_str)
        .collect();
    assert!(kinds.contains(&"rare_action"), "{kinds:?}");
    for line in a["explanation"].as_array().unwrap() {
        for field in ["feature", "observed", "expected", "contribution"] {
            assert!(!line[field].is_null(), "{line}");
        }
    }
    assert!(
        a["summary"].as_str().unwrap().starts_with("Agent hr-0 "),
        "{a}"
    );
    let id = a["anomaly_id"].as_str().unwrap();
    assert_eq!(
        server.receipt("vigil", id).status,
        200,
        "the anomaly is receipted"
    );

    // Forgeries alert (rejected, never a reason to revoke) ...
    let answer = server.post_ndjson(&forgeries());
    assert_eq!(answer["rejected"], 8, "{answer}");
    settle(&server);
    let forged = anomalies(&server, "?agent_id=hr-1");
    assert_eq!(forged.len(), 1, "{forged:#?}");
    assert_eq!(forged[0]["kinds"], json!(["forged_events"]));
    assert_eq!(forged[0]["from_rejected"], true);
    assert_eq!(forged[0]["response"]["action"], "none");
    // ... and taught hr-1 nothing: the real hr.delete_all is still new to it.
    let real = signers[1].event(
        "hr-1-real-delete",
        json!({"occurred_at": at(START + 7 * 86_400 + 9000), "action": "hr.delete_all",
               "correlation_id": "later"}),
    );
    server.post_ndjson(&[signers[1].sign(&real)]);
    settle(&server);
    let now = anomalies(&server, "?agent_id=hr-1");
    assert_eq!(now.len(), 2, "{now:#?}");
    assert_eq!(now[0]["event_ids"][0], "hr-1-real-delete");
    assert!(now[0]["kinds"]
        .as_array()
        .unwrap()
        .contains(&json!("rare_action")));

    stream_and_feedback(&server, id);
    let mut server = server;
    assert_eq!(server.stop(), Some(0));
    assert_log_verifies(&dir.path().join("data"));
}

/// The baseline hr-0 learnt from the routine, as the SOC reads it: every
/// routine event, six an hour from Monday to Friday 09:00-17:00 in its
/// one week of event time, and nothing else.
fn baseline_is_the_routine(server: &Server) {
    let r = server.req("GET", "/v1/agents/hr-0/baseline", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["agent_id"], "hr-0");
    assert_eq!(b["events_learnt"], 240, "{b}");
    assert_eq!(b["judged_against"], "own");
    assert_eq!(b["first_seen"], at(START));
    assert_eq!(b["last_seen"], at(START + 4 * 86_400 + 47 * 600));
    assert_eq!(b["learning_paused_until"], J::Null);
    let per_hour: Vec<f64> = serde_json::from_value(b["expected_per_hour"].clone()).unwrap();
    assert_eq!(per_hour.len(), 168);
    for (h, &n) in per_hour.iter().enumerate() {
        let (day, hour) = (h / 24, h % 24);
        let want = if day < 5 && (9..17).contains(&hour) {
            6.0
        } else {
            0.0
        };
        assert_eq!(n, want, "hour {hour} of day {day}");
    }
    assert_eq!(b["known"]["actions"], 2, "{b}");
    assert_eq!(b["known"]["principals"], 1, "{b}");
    assert_eq!(b["known"]["source_ips"], 1, "{b}");
    assert!(b["rate_per_minute"]["mean"].as_f64().unwrap() <= 1.0, "{b}");

    // An agent with no key is unknown; the SOC role is needed.
    let unknown = server.req("GET", "/v1/agents/nobody/baseline", None, b"");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "unknown_agent");
}

/// The SSE stream replays what was detected after Last-Event-ID, then
/// follows live; feedback is receipted and then shown.
fn stream_and_feedback(server: &Server, id: &str) {
    let mut sse = Sse::open(server, 0);
    let (seq, first) = sse.next();
    assert!(seq >= 1 && first["anomaly_id"].is_string(), "{first}");
    let mut live = Sse::open(server, u64::MAX - 1);
    let r = server.req(
        "POST",
        &format!("/v1/anomalies/{id}/feedback"),
        Some("application/json"),
        br#"{"verdict":"confirmed","note":"offboarding was not requested"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["receipt"]["index"].is_u64(), "{}", r.text());
    let (_, shown) = live.next();
    assert_eq!(shown["anomaly_id"], id);
    assert_eq!(shown["feedback"]["verdict"], "confirmed");
    let bad = server.req(
        "POST",
        "/v1/anomalies/anom-nope/feedback",
        Some("application/json"),
        br#"{"verdict":"confirmed"}"#,
    );
    assert_eq!(bad.status, 404);
    let bad = server.req(
        "POST",
        &format!("/v1/anomalies/{id}/feedback"),
        Some("application/json"),
        br#"{"verdict":"maybe"}"#,
    );
    assert_eq!(bad.status, 400);
    assert_eq!(
        http(server.addr, "GET", "/v1/anomalies", &[], b"").status,
        401
    );
}

/// A reader of `GET /v1/anomalies/stream`.
struct Sse {
    reader: BufReader<TcpStream>,
}

impl Sse {
    fn open(server: &Server, last_event_id: u64) -> Sse {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET /v1/anomalies/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nLast-Event-ID: {last_event_id}\r\n\r\n",
            server.token
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        Sse { reader }
    }

    /// The next event's id and data (chunk-size lines are skipped).
    fn next(&mut self) -> (u64, J) {
        let (mut id, mut data) = (None, None);
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "the stream ended"
            );
            let line = line.trim_end();
            if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data = Some(serde_json::from_str(v.trim()).unwrap());
            } else if line.is_empty() {
                if let (Some(i), Some(d)) = (id, data.take()) {
                    return (i, d);
                }
            }
        }
    }
}

#[test]
fn a_replay_gives_the_same_anomalies_even_with_a_kill_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let (signers, jwks) = hr_fleet(dir.path());
    let mut events = routine(&signers);
    events.extend(offboarding(&signers[0]));
    events.extend(forgeries());
    let half = events.len() * 3 / 4;

    let clean = start(dir.path(), &jwks, "clean");
    post_all(&clean, &events);
    settle(&clean);
    let expected = fingerprint(&anomalies(&clean, "?limit=10000"));
    assert!(expected.len() >= 2, "{expected:?}");

    let twice = start(dir.path(), &jwks, "twice");
    post_all(&twice, &events);
    settle(&twice);
    assert_eq!(fingerprint(&anomalies(&twice, "?limit=10000")), expected);

    let mut crashed = start(dir.path(), &jwks, "crashed");
    post_all(&crashed, &events[..half]);
    settle(&crashed);
    std::thread::sleep(Duration::from_secs(6)); // a save happens
    post_all(&crashed, &events[half..half + 20]);
    crashed.kill9();
    let resumed = start(dir.path(), &jwks, "crashed");
    post_all(&resumed, &events[half..]);
    settle(&resumed);
    assert_eq!(fingerprint(&anomalies(&resumed, "?limit=10000")), expected);
    drop(resumed);
    assert_log_verifies(&dir.path().join("crashed"));
}

#[test]
fn simulate_writes_the_same_bytes_for_a_seed_and_eval_scores_it_through_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| {
        let p = dir.path().join(name);
        let args = [
            "simulate",
            "--out",
            p.to_str().unwrap(),
            "--seed",
            "7",
            "--days",
            "9",
            "--per-role",
            "2",
        ];
        let o = run_vigil(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        p
    };
    let (a, b) = (out("a"), out("b"));
    for f in ["events.ndjson", "labels.json", "agents.jwks.json"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    let labels: J = serde_json::from_slice(&std::fs::read(a.join("labels.json")).unwrap()).unwrap();
    assert_eq!(labels["episodes"].as_array().unwrap().len(), 10, "{labels}");
    // The simulated events are accepted by a server that knows their keys.
    let server = start(dir.path(), &a.join("agents.jwks.json"), "data");
    let text = std::fs::read_to_string(a.join("events.ndjson")).unwrap();
    let lines: Vec<Vec<u8>> = text
        .lines()
        .take(300)
        .map(|l| l.as_bytes().to_vec())
        .collect();
    assert_eq!(server.post_ndjson(&lines)["accepted"], 300);

    let o = run_vigil(&["eval", "--seeds", "7", "--days", "9", "--per-role", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("| vigil | ") && stdout.contains("| simple baseline | "),
        "{stdout}"
    );
    assert!(stdout.contains("| forged_burst | "), "{stdout}");
}
