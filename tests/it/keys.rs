//! The agent key registry (contract section 2) through the server: JWKS
//! files reloaded on change and on SIGHUP, refused documents, key validity
//! in time, agent status, and the order in which verdicts are given.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value as J};
use sha2::{Digest, Sha256};
use vigil::time::Timestamp;

use crate::util::*;

/// A server over one JWKS file (and an optional configuration file).
struct Env {
    server: Server,
    jwks: PathBuf,
    dir: tempfile::TempDir,
}

fn start(keys: &[J], config: Option<&str>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("agents.jwks.json");
    write_jwks(&jwks, keys);
    let server = start_on(dir.path(), &jwks, config, "data");
    Env { server, jwks, dir }
}

fn start_on(dir: &Path, jwks: &Path, config: Option<&str>, data: &str) -> Server {
    let mut args = vec!["--keys".to_string(), jwks.display().to_string()];
    if let Some(text) = config {
        let p = dir.join(format!("{data}.toml"));
        std::fs::write(&p, text).unwrap();
        args.push("--config".into());
        args.push(p.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&dir.join(data), &args)
}

/// Replaces a JWKS file atomically (so a reload never sees half of it).
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn replace_jwks(path: &Path, keys: &[J]) {
    replace_file(
        path,
        &serde_json::to_vec_pretty(&json!({ "keys": keys })).unwrap(),
    );
}

/// POSTs one event; returns its result.
fn post1(server: &Server, event: &[u8]) -> J {
    let r = server.req("POST", "/v1/events", Some("application/json"), event);
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
    answer["results"][0].clone()
}

/// `status:reason` of a result.
fn outcome(result: &J) -> String {
    match result["reason"].as_str() {
        Some(r) => format!("{}:{r}", result["status"].as_str().unwrap()),
        None => result["status"].as_str().unwrap().to_string(),
    }
}

/// Asserts a rejection with a receipt that records it.
fn assert_rejected(result: &J, reason: &str) {
    assert_eq!(outcome(result), format!("rejected:{reason}"), "{result}");
    assert_eq!(
        result["receipt"]["verdict"],
        format!("rejected:{reason}").as_str(),
        "{result}"
    );
    assert!(
        result["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{result}"
    );
}

fn assert_accepted(result: &J) {
    assert_eq!(outcome(result), "accepted", "{result}");
    assert_eq!(result["receipt"]["verdict"], "accepted");
}

/// A signed event of `s` that occurred at `t`.
fn at(s: &Signer, id: &str, t: Timestamp) -> Vec<u8> {
    s.sign(&s.event(id, json!({ "occurred_at": t.to_rfc3339_millis() })))
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn secs(t: i64) -> Timestamp {
    Timestamp::from_secs(t)
}

fn millis_before(t: Timestamp, ms: i128) -> Timestamp {
    Timestamp(t.0 - ms * 1_000_000)
}

/// Calls `f` until it gives a value, for at most `secs` seconds.
fn poll<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `vigil_keys_refused_total` from GET /metrics.
fn refused_total(server: &Server) -> u64 {
    let r = server.req("GET", "/metrics", None, b"");
    assert_eq!(r.status, 200);
    let text = r.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("vigil_keys_refused_total "))
        .unwrap_or_else(|| panic!("no vigil_keys_refused_total: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Waits until the server has refused the new version of the JWKS file:
/// each version of a file is refused, logged and counted once, by the same
/// reload that read it whole.
fn wait_refusals(server: &Server, before: u64) -> u64 {
    poll("the JWKS refusal to be counted", 60, || {
        let n = refused_total(server);
        (n > before).then_some(n)
    })
}

fn pid(server: &Server) -> String {
    server.child.as_ref().unwrap().id().to_string()
}

#[test]
fn rotation_by_editing_the_jwks_file() {
    let k1 = Signer::new(11, "rot", "rot#1");
    let k2 = Signer::new(12, "rot", "rot#2");
    let mut env = start(&[k1.jwk(json!({}))], None);
    let s = &env.server;
    let base = s.log_size(); // the key events come first
    assert_accepted(&post1(s, &k1.sign(&k1.event("rot-old-1", json!({})))));

    // Signed with a key not published yet: unknown_key, with a receipt.
    let early = k2.sign(&k2.event("rot-new", json!({})));
    let first = post1(s, &early);
    assert_rejected(&first, "unknown_key");
    assert_eq!(first["receipt"]["index"], base + 1);

    // Publish the new key beside the old one; the same event, sent again,
    // is judged again once the file is reloaded (and until then is the
    // same rejection, without a new receipt).
    replace_jwks(&env.jwks, &[k1.jwk(json!({})), k2.jwk(json!({}))]);
    let accepted = poll("the new key to be loaded", 60, || {
        let r = post1(s, &early);
        if r["status"] == "accepted" {
            return Some(r);
        }
        // Until then: the same rejection receipt, no new one.
        assert_eq!(r["receipt"], first["receipt"], "{r}");
        None
    });
    // After the event that logs the new key (contract section 6a).
    assert_eq!(accepted["receipt"]["index"], base + 3);
    assert_eq!(accepted["receipt"]["key_id"], "rot#2");
    // The accepted receipt is the one served now.
    assert_eq!(
        s.receipt("rot", "rot-new").json()["receipt"],
        accepted["receipt"]
    );
    // The old key still works while it is published.
    assert_accepted(&post1(s, &k1.sign(&k1.event("rot-old-2", json!({})))));

    // Retire the old key: its events become unknown_key.
    replace_jwks(&env.jwks, &[k2.jwk(json!({}))]);
    let mut n = 0;
    poll("the old key to be withdrawn", 60, || {
        n += 1;
        let r = post1(
            s,
            &k1.sign(&k1.event(&format!("rot-old-after-{n}"), json!({}))),
        );
        (r["status"] == "rejected").then(|| assert_rejected(&r, "unknown_key"))
    });
    assert_accepted(&post1(s, &k2.sign(&k2.event("rot-new-2", json!({})))));

    // Offline verification still checks the events the withdrawn key signed
    // (the log's own key history says when each key was added and removed).
    assert_eq!(env.server.stop(), Some(0));
    assert_log_verifies(&env.dir.path().join("data"));
    env.server = start_on(env.dir.path(), &env.jwks, None, "data");
    // After a restart the old key is still withdrawn and the new one in force.
    assert_rejected(
        &post1(&env.server, &k1.sign(&k1.event("rot-old-3", json!({})))),
        "unknown_key",
    );
    assert_accepted(&post1(
        &env.server,
        &k2.sign(&k2.event("rot-new-3", json!({}))),
    ));
}

#[test]
fn a_reload_whose_history_file_cannot_be_written_still_takes_the_new_keys() {
    // Issue 7, finding 9: the new keys must not wait for the key file to
    // change again. The key events are in the log (the evidence); the
    // history file beside the index is derived and may fail to be written.
    let k1 = Signer::new(13, "hist", "hist#1");
    let k2 = Signer::new(14, "hist", "hist#2");
    let mut env = start(&[k1.jwk(json!({}))], None);
    let s = &env.server;
    let base = s.log_size();
    let history = env.dir.path().join("data/index/keys.json");
    std::fs::remove_file(&history).unwrap();
    std::fs::create_dir_all(history.join("blocked")).unwrap();

    let early = k2.sign(&k2.event("hist-new", json!({})));
    assert_rejected(&post1(s, &early), "unknown_key");
    replace_jwks(&env.jwks, &[k1.jwk(json!({})), k2.jwk(json!({}))]);
    let accepted = poll("the new key to be in force", 60, || {
        let r = post1(s, &early);
        (r["status"] == "accepted").then_some(r)
    });
    // One key event (base + 1), logged once although the file write
    // failed; then the event it lets in.
    assert_eq!(accepted["receipt"]["index"], base + 2);
    let log = s.log_text();
    assert!(
        log.contains("keys.json"),
        "the failed write is logged: {log}"
    );
    assert_eq!(env.server.stop(), Some(0));
    assert_log_verifies(&env.dir.path().join("data"));
}

#[test]
fn sighup_reloads_the_keys() {
    let k1 = Signer::new(13, "hup", "hup#1");
    let k2 = Signer::new(14, "hup", "hup#2");
    let env = start(&[k1.jwk(json!({}))], None);
    let s = &env.server;
    assert_accepted(&post1(s, &k1.sign(&k1.event("hup-1", json!({})))));
    let event = k2.sign(&k2.event("hup-2", json!({})));
    assert_rejected(&post1(s, &event), "unknown_key");

    replace_jwks(&env.jwks, &[k1.jwk(json!({})), k2.jwk(json!({}))]);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid(s)])
        .status()
        .unwrap();
    assert!(hup.success());
    poll("the new key after SIGHUP", 60, || {
        (post1(s, &event)["status"] == "accepted").then_some(())
    });
    // SIGHUP does not stop the server.
    let mut server = env.server;
    assert!(server.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert_accepted(&post1(&server, &k1.sign(&k1.event("hup-3", json!({})))));
    assert!(
        server.log_text().to_lowercase().contains("sighup"),
        "the reload on SIGHUP is logged: {}",
        server.log_text()
    );
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn a_refused_document_leaves_the_previous_keys_in_force() {
    let k1 = Signer::new(21, "ref", "ref#1");
    let k1_other_x = Signer::new(22, "ref", "ref#1");
    let k3 = Signer::new(23, "ref", "ref#3");
    let pipeline_claim = Signer::new(24, "vigil", "vigil#mine");
    let env = start(&[k1.jwk(json!({}))], None);
    let s = &env.server;
    let mut n = 0;
    let mut send = |signer: &Signer| {
        n += 1;
        post1(
            s,
            &signer.sign(&signer.event(&format!("ref-{n}"), json!({}))),
        )
    };
    assert_accepted(&send(&k1));
    let mut refused = refused_total(s);
    assert_eq!(refused, 0);

    let bad_docs: Vec<(&str, Vec<u8>)> = vec![
        (
            "same agent and kid, different x",
            serde_json::to_vec(&json!({"keys": [
                k1.jwk(json!({})), k1_other_x.jwk(json!({})), k3.jwk(json!({}))
            ]}))
            .unwrap(),
        ),
        (
            "a key for agent vigil",
            serde_json::to_vec(&json!({"keys": [
                k1.jwk(json!({})), k3.jwk(json!({})), pipeline_claim.jwk(json!({}))
            ]}))
            .unwrap(),
        ),
        (
            "disagreeing agent records",
            serde_json::to_vec(&json!({"keys": [
                k1.jwk(json!({"role": "hr"})), k3.jwk(json!({"role": "finance"}))
            ]}))
            .unwrap(),
        ),
        ("no keys", br#"{"keys": []}"#.to_vec()),
        (
            "not JSON",
            format!(
                "{{\"keys\": [{}",
                serde_json::to_string(&k3.jwk(json!({}))).unwrap()
            )
            .into_bytes(),
        ),
    ];
    for (why, doc) in bad_docs {
        let log_before = s.log_text().len();
        replace_file(&env.jwks, &doc);
        refused = wait_refusals(s, refused);
        let log = s.log_text();
        let new = &log[log_before..];
        assert!(
            new.lines()
                .any(|l| l.contains("refused") && l.contains(env.jwks.to_str().unwrap())),
            "{why}: the refusal is logged: {new}"
        );
        // The new key in the refused document is not in force, the old one is.
        assert_rejected(&send(&k3), "unknown_key");
        assert_accepted(&send(&k1));
        assert_rejected(&send(&k1_other_x), "bad_signature");
        // The server is still ready.
        assert_eq!(http(s.addr, "GET", "/readyz", &[], b"").status, 200);
    }

    // A good document is taken again afterwards.
    replace_jwks(&env.jwks, &[k1.jwk(json!({})), k3.jwk(json!({}))]);
    poll("the good document to be loaded", 60, || {
        (send(&k3)["status"] == "accepted").then_some(())
    });
    assert_accepted(&send(&k1));
}

#[test]
fn a_document_that_conflicts_with_another_source_is_refused() {
    let k1 = Signer::new(26, "ms", "ms#1");
    let k1_other_x = Signer::new(28, "ms", "ms#1");
    let ms_suspended = Signer::new(30, "ms", "ms#9");
    let kb = Signer::new(27, "other", "o#1");
    let kb2 = Signer::new(29, "other", "o#2");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.jwks.json"),
        dir.path().join("b.jwks.json"),
    );
    write_jwks(&a, &[k1.jwk(json!({}))]);
    write_jwks(&b, &[kb.jwk(json!({}))]);
    let s = Server::start(
        &dir.path().join("data"),
        &["--keys", a.to_str().unwrap(), "--keys", b.to_str().unwrap()],
    );
    let mut n = 0;
    let mut send = |signer: &Signer| {
        n += 1;
        post1(
            &s,
            &signer.sign(&signer.event(&format!("ms-{n}"), json!({}))),
        )
    };
    assert_accepted(&send(&k1));
    assert_accepted(&send(&kb));
    let mut refused = refused_total(&s);

    // b now claims a's key with another x (and adds a key of its own).
    replace_jwks(
        &b,
        &[
            kb.jwk(json!({})),
            k1_other_x.jwk(json!({})),
            kb2.jwk(json!({})),
        ],
    );
    refused = wait_refusals(&s, refused);
    assert!(
        s.log_text().contains(b.to_str().unwrap()),
        "{}",
        s.log_text()
    );
    assert_accepted(&send(&k1));
    assert_accepted(&send(&kb));
    assert_rejected(&send(&kb2), "unknown_key");
    assert_rejected(&send(&k1_other_x), "bad_signature");

    // b now says agent ms is suspended, a says nothing (active).
    replace_jwks(
        &b,
        &[
            kb.jwk(json!({})),
            ms_suspended.jwk(json!({"status": "suspended"})),
        ],
    );
    wait_refusals(&s, refused);
    assert_accepted(&send(&k1));
    assert_rejected(&send(&ms_suspended), "unknown_key");

    // A good b is taken.
    replace_jwks(&b, &[kb.jwk(json!({})), kb2.jwk(json!({}))]);
    poll("b's good document", 60, || {
        (send(&kb2)["status"] == "accepted").then_some(())
    });
    assert_accepted(&send(&k1));
}

#[test]
fn nbf_and_exp_bound_a_key() {
    let t = now().secs();
    let (nbf, exp) = (t - 600, t - 300);
    let k = Signer::new(31, "win", "win#1");
    let later = Signer::new(32, "win", "win#2");
    let env = start(
        &[
            k.jwk(json!({"nbf": nbf, "exp": exp})),
            later.jwk(json!({"nbf": t + 3600})),
        ],
        None,
    );
    let s = &env.server;
    let cases = [
        (
            "before-nbf",
            millis_before(secs(nbf), 1),
            "rejected:key_not_valid_yet",
        ),
        ("at-nbf", secs(nbf), "accepted"),
        ("inside", secs(nbf + 100), "accepted"),
        ("before-exp", millis_before(secs(exp), 1), "accepted"),
        ("at-exp", secs(exp), "rejected:key_expired"),
        ("now", now(), "rejected:key_expired"),
    ];
    for (id, when, want) in cases {
        let r = post1(s, &at(&k, id, when));
        assert_eq!(outcome(&r), want, "{id}: {r}");
        assert_eq!(r["receipt"]["verdict"], want, "{id}: {r}");
    }
    let r = post1(s, &at(&later, "not-yet", now()));
    assert_rejected(&r, "key_not_valid_yet");
    // A fractional NumericDate is a bound to the millisecond.
    let fk = Signer::new(33, "frac", "frac#1");
    let env2 = start(&[fk.jwk(json!({"exp": (t - 100) as f64 + 0.5}))], None);
    let edge = Timestamp(secs(t - 100).0 + 500_000_000);
    assert_accepted(&post1(&env2.server, &at(&fk, "f1", millis_before(edge, 1))));
    assert_rejected(&post1(&env2.server, &at(&fk, "f2", edge)), "key_expired");
}

#[test]
fn revoked_keys_and_the_revocation_grace() {
    let t = now().secs();
    let long_ago = Signer::new(41, "rev", "rev#old");
    let recent = Signer::new(42, "rev", "rev#recent");
    let (old_rev, new_rev) = (t - 600, t - 60);
    let keys = [
        long_ago.jwk(json!({"revoked_at": old_rev})),
        recent.jwk(json!({"revoked_at": new_rev})),
    ];
    let env = start(&keys, Some("[server]\nrevocation_grace_s = 300\n"));
    let s = &env.server;
    // Occurred before the revocation, received 10 minutes after it: more
    // than the 300 s grace.
    assert_rejected(
        &post1(s, &at(&long_ago, "old-before", secs(old_rev - 100))),
        "key_revoked",
    );
    // Occurred before, received within the grace: accepted.
    assert_accepted(&post1(s, &at(&recent, "recent-before", secs(new_rev - 60))));
    assert_accepted(&post1(
        s,
        &at(
            &recent,
            "recent-just-before",
            millis_before(secs(new_rev), 1),
        ),
    ));
    // At or after the revocation: revoked, grace or not.
    assert_rejected(
        &post1(s, &at(&recent, "recent-at", secs(new_rev))),
        "key_revoked",
    );
    assert_rejected(
        &post1(s, &at(&recent, "recent-after", now())),
        "key_revoked",
    );

    // With the default grace (an hour) the first event is taken.
    let default = start_on(env.dir.path(), &env.jwks, None, "data-default-grace");
    assert_accepted(&post1(
        &default,
        &at(&long_ago, "old-before", secs(old_rev - 100)),
    ));
    assert_rejected(
        &post1(&default, &at(&long_ago, "old-after", secs(old_rev + 1))),
        "key_revoked",
    );
}

#[test]
fn events_from_the_future_are_clock_skew() {
    let k = Signer::new(51, "skew", "skew#1");
    let env = start(&[k.jwk(json!({}))], None);
    let s = &env.server;
    let ten_minutes = now().plus_secs(600);
    assert_rejected(&post1(s, &at(&k, "future", ten_minutes)), "clock_skew");
    // A minute ahead is within the default 5 minutes.
    assert_accepted(&post1(s, &at(&k, "near-future", now().plus_secs(60))));
    // max_clock_skew_s is configurable.
    let strict = start_on(
        env.dir.path(),
        &env.jwks,
        Some("[server]\nmax_clock_skew_s = 10\n"),
        "data-strict",
    );
    assert_rejected(
        &post1(&strict, &at(&k, "near-future", now().plus_secs(60))),
        "clock_skew",
    );
    assert_accepted(&post1(&strict, &at(&k, "now", now())));
}

#[test]
fn suspended_and_decommissioned_agents_are_not_active() {
    let sus = Signer::new(61, "sus", "sus#1");
    let sus2 = Signer::new(62, "sus", "sus#2");
    let dec = Signer::new(63, "dec", "dec#1");
    let act = Signer::new(64, "act", "act#1");
    let env = start(
        &[
            sus.jwk(json!({"status": "suspended", "role": "hr", "owner": "o"})),
            sus2.jwk(json!({"status": "suspended", "role": "hr", "owner": "o"})),
            dec.jwk(json!({"status": "decommissioned"})),
            act.jwk(json!({"status": "active"})),
        ],
        None,
    );
    let s = &env.server;
    assert_rejected(
        &post1(s, &sus.sign(&sus.event("s1", json!({})))),
        "agent_not_active",
    );
    assert_rejected(
        &post1(s, &sus2.sign(&sus2.event("s2", json!({})))),
        "agent_not_active",
    );
    assert_rejected(
        &post1(s, &dec.sign(&dec.event("d1", json!({})))),
        "agent_not_active",
    );
    assert_accepted(&post1(s, &act.sign(&act.event("a1", json!({})))));
}

#[test]
fn suspension_by_reload_applies_to_new_events_only() {
    let k = Signer::new(65, "later-sus", "ls#1");
    let env = start(&[k.jwk(json!({"status": "active"}))], None);
    let s = &env.server;
    let original = k.sign(&k.event("ls-1", json!({})));
    let accepted = post1(s, &original);
    assert_accepted(&accepted);

    replace_jwks(&env.jwks, &[k.jwk(json!({"status": "suspended"}))]);
    let mut n = 0;
    poll("the suspension to be loaded", 60, || {
        n += 1;
        let r = post1(s, &k.sign(&k.event(&format!("ls-probe-{n}"), json!({}))));
        (r["status"] == "rejected").then(|| assert_rejected(&r, "agent_not_active"))
    });
    // Other content under the accepted id: agent_not_active comes before
    // conflict in the check order.
    let other = k.sign(&k.event("ls-1", json!({"action": "db.drop_table"})));
    assert_rejected(&post1(s, &other), "agent_not_active");
    // The accepted event itself, sent again, is still its duplicate.
    let again = post1(s, &original);
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["receipt"], accepted["receipt"]);
    assert_eq!(
        s.receipt("later-sus", "ls-1").json()["receipt"],
        accepted["receipt"]
    );
}

#[test]
fn an_agent_without_keys_is_quarantined_without_a_receipt() {
    let k = Signer::new(71, "known", "known#1");
    let env = start(&[k.jwk(json!({}))], None);
    let s = &env.server;
    let base = s.log_size();
    let ghost = Signer::new(72, "ghost", "ghost#1");
    let raw = ghost.sign(&ghost.event("g-1", json!({})));
    let r = post1(s, &raw);
    assert_eq!(outcome(&r), "rejected:unknown_agent", "{r}");
    assert!(r.get("receipt").is_none(), "{r}");
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(s.receipt("ghost", "g-1").status, 404);
    // Even with a schema error, an agent with no key gets no receipt.
    let r = post1(s, &ghost.sign(&ghost.event("g-2", json!({"action": 5}))));
    assert_eq!(outcome(&r), "rejected:unknown_agent", "{r}");
    assert!(r.get("receipt").is_none(), "{r}");

    let q = s.req("GET", "/v1/quarantine", None, b"");
    assert_eq!(q.status, 200, "{}", q.text());
    let entries = q.json()["entries"].as_array().unwrap().clone();
    let digest = hex::encode(Sha256::digest(&raw));
    assert!(
        entries
            .iter()
            .any(|e| e["reason"] == "unknown_agent" && e["sha256"] == digest.as_str()),
        "{entries:?}"
    );

    // A known agent with an unknown kid is receipted as unknown_key.
    let stranger = Signer::new(73, "known", "known#2");
    let r = post1(s, &stranger.sign(&stranger.event("k-1", json!({}))));
    assert_rejected(&r, "unknown_key");
    // The quarantined inputs took no place in the log.
    assert_eq!(r["receipt"]["index"], base);
    // A key of another agent with the same kid is not this agent's key.
    let other_agent = Signer::new(74, "other", "known#1");
    let env2 = start(&[k.jwk(json!({})), other_agent.jwk(json!({}))], None);
    let impostor = Signer::new(74, "known", "known#1");
    assert_rejected(
        &post1(
            &env2.server,
            &impostor.sign(&impostor.event("i-1", json!({}))),
        ),
        "bad_signature",
    );
    let cross = Signer::new(71, "other", "known#1");
    assert_rejected(
        &post1(&env2.server, &cross.sign(&cross.event("i-2", json!({})))),
        "bad_signature",
    );
}

#[test]
fn outside_events_claiming_agent_vigil_are_unknown_key() {
    let k = Signer::new(75, "someone", "someone#1");
    let env = start(&[k.jwk(json!({}))], None);
    let s = &env.server;
    let jwks = http(s.addr, "GET", "/v1/pipeline-keys", &[], b"").json();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    let claim = Signer::new(76, "vigil", &kid);
    let r = post1(s, &claim.sign(&claim.event("v-1", json!({}))));
    assert_rejected(&r, "unknown_key");
    assert_eq!(r["receipt"]["agent_id"], "vigil");
}

#[test]
fn an_event_without_event_id_is_unparseable() {
    let k = Signer::new(81, "noid", "noid#1");
    let env = start(&[k.jwk(json!({}))], None);
    let s = &env.server;
    let base = s.log_size();
    let mut e = k.event("x", json!({}));
    e.as_object_mut().unwrap().remove("event_id");
    let raw = k.sign(&e);
    let r = post1(s, &raw);
    assert_eq!(outcome(&r), "rejected:unparseable", "{r}");
    assert!(r.get("receipt").is_none(), "{r}");
    assert!(r.get("event_id").is_none(), "{r}");
    // A non-string event_id is no id either.
    let r = post1(s, &k.sign(&k.event("x", json!({"event_id": 7}))));
    assert_eq!(outcome(&r), "rejected:unparseable", "{r}");
    assert!(r.get("receipt").is_none(), "{r}");
    // Nothing took a place in the log.
    let r = post1(s, &k.sign(&k.event("first", json!({}))));
    assert_eq!(r["receipt"]["index"], base);
}

#[test]
fn verdicts_follow_the_contract_order() {
    let t = now().secs();
    let expired = Signer::new(91, "ord", "ord#expired");
    let future_key = Signer::new(92, "ord", "ord#future");
    let good = Signer::new(93, "ord", "ord#good");
    let suspended = Signer::new(94, "ord-sus", "ord-sus#1");
    let forger = Signer::new(99, "ord", "ord#expired");
    let env = start(
        &[
            expired.jwk(json!({"exp": t - 3600})),
            future_key.jwk(json!({"nbf": t + 3600})),
            good.jwk(json!({})),
            suspended.jwk(json!({"status": "suspended"})),
        ],
        // The receipts' exact indices are the subject: no anomaly events
        // (this many rejections in a minute would make one) between them.
        Some("[detection]\nenabled = false\n"),
    );
    let s = &env.server;
    let base = s.log_size();
    let unknown = Signer::new(98, "ord", "ord#nope");

    // schema before unknown_key (and before bad_signature).
    let mut e = unknown.event("o-1", json!({}));
    e.as_object_mut().unwrap().remove("action");
    assert_rejected(&post1(s, &forger.sign(&e)), "schema");
    let e = expired.event("o-2", json!({"sensitivity": "extreme"}));
    assert_rejected(&post1(s, &forger.sign(&e)), "schema");
    // unknown_key before bad_signature.
    let e = unknown.event("o-3", json!({}));
    assert_rejected(&post1(s, &forger.sign(&e)), "unknown_key");
    // bad_signature before key_expired.
    let e = expired.event("o-4", json!({}));
    assert_rejected(&post1(s, &forger.sign(&e)), "bad_signature");
    // ... and before key_not_valid_yet.
    let e = future_key.event("o-5", json!({}));
    assert_rejected(&post1(s, &forger.sign(&e)), "bad_signature");
    // The same events, properly signed: the key's validity.
    assert_rejected(
        &post1(s, &expired.sign(&expired.event("o-6", json!({})))),
        "key_expired",
    );
    // Key validity before clock_skew.
    assert_rejected(
        &post1(s, &at(&expired, "o-7", now().plus_secs(600))),
        "key_expired",
    );
    assert_rejected(
        &post1(s, &at(&future_key, "o-8", now().plus_secs(600))),
        "key_not_valid_yet",
    );
    // clock_skew before agent_not_active.
    assert_rejected(
        &post1(s, &at(&suspended, "o-9", now().plus_secs(600))),
        "clock_skew",
    );
    // bad_signature before agent_not_active.
    let sus_forger = Signer::new(97, "ord-sus", "ord-sus#1");
    assert_rejected(
        &post1(s, &sus_forger.sign(&suspended.event("o-10", json!({})))),
        "bad_signature",
    );
    assert_rejected(
        &post1(s, &suspended.sign(&suspended.event("o-11", json!({})))),
        "agent_not_active",
    );
    assert_accepted(&post1(s, &good.sign(&good.event("o-12", json!({})))));
    // Every one of them got a receipt, in order.
    let r = post1(s, &good.sign(&good.event("o-13", json!({}))));
    assert_eq!(r["receipt"]["index"], base + 12);
}

/// Issue 7, finding 3: a second entry for the same key that revokes it,
/// expires it or starts it later is taken (the most restrictive wins),
/// within one document and across `--keys` files.
#[test]
fn a_later_entry_for_the_same_key_tightens_it() {
    let t = now().secs();
    let revoked = Signer::new(61, "tight", "tight#rev");
    let expired = Signer::new(62, "tight", "tight#exp");
    let later_nbf = Signer::new(63, "tight", "tight#nbf");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.jwks.json"),
        dir.path().join("b.jwks.json"),
    );
    write_jwks(
        &a,
        &[
            revoked.jwk(json!({})),
            revoked.jwk(json!({"revoked_at": t - 3600})),
            expired.jwk(json!({"exp": t + 86_400})),
            later_nbf.jwk(json!({"nbf": t - 86_400})),
        ],
    );
    write_jwks(
        &b,
        &[
            expired.jwk(json!({"exp": t - 60})),
            later_nbf.jwk(json!({"nbf": t + 86_400})),
        ],
    );
    let s = Server::start(
        &dir.path().join("data"),
        &["--keys", a.to_str().unwrap(), "--keys", b.to_str().unwrap()],
    );
    assert_rejected(&post1(&s, &at(&revoked, "r1", now())), "key_revoked");
    assert_rejected(&post1(&s, &at(&expired, "e1", now())), "key_expired");
    assert_rejected(
        &post1(&s, &at(&later_nbf, "n1", now())),
        "key_not_valid_yet",
    );
    assert!(
        s.log_text().contains("most restrictive"),
        "the merge is logged: {}",
        s.log_text()
    );
}

/// Issue 7, finding 3: two entries for one (agent, kid) with different
/// `x` across `--keys` files stop `vigil serve` at start (exit 2), naming
/// the conflict.
#[test]
fn two_public_keys_for_one_kid_stop_the_server_at_start() {
    let one = Signer::new(64, "twin", "twin#1");
    let other = Signer::new(65, "twin", "twin#1");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.jwks.json"),
        dir.path().join("b.jwks.json"),
    );
    write_jwks(&a, &[one.jwk(json!({}))]);
    write_jwks(&b, &[other.jwk(json!({}))]);
    let data = dir.path().join("data");
    let out = run_vigil(&[
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--keys",
        a.to_str().unwrap(),
        "--keys",
        b.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("twin#1") && stderr.contains("two different public keys"),
        "{stderr}"
    );
}
