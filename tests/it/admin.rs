//! Agent and key administration from outside (contract sections 5 and
//! 6a): register an agent, add its key, rotate, revoke, decommission and
//! attest through the API, and see each change in verdicts
//! (`key_revoked`, `agent_not_active`), in the log (`vigil.key.*` and
//! `vigil.agent.*` events that `vigil verify` accepts) and after a restart.

use serde_json::{json, Value as J};

use crate::util::*;

const ADMIN: &str = "t-admin";

fn send(server: &Server, s: &Signer, id: &str) -> J {
    server.post_ndjson(&[s.sign(&s.event(id, json!({"resource": "db://t/1"})))])
}

fn verdict(server: &Server, s: &Signer, id: &str) -> String {
    let answer = send(server, s, id);
    let r = server.receipt(&s.agent, id);
    assert_eq!(r.status, 200, "{answer} {}", r.text());
    r.json()["receipt"]["verdict"].as_str().unwrap().to_string()
}

fn admin(server: &Server, method: &str, path: &str, body: J) -> Resp {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    server.req(method, path, Some("application/json"), &bytes)
}

fn x_of(s: &Signer) -> J {
    s.jwk(json!({}))["x"].clone()
}

#[test]
fn agents_and_keys_change_through_the_api_and_the_log_keeps_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let (files, jwks) = fleet(dir.path(), "file", 70, 1);
    let cfg = dir.path().join("admin.toml");
    let tokens =
        format!("[[tokens]]\nname = \"admin\"\ntoken = \"{ADMIN}\"\nroles = [\"admin\"]\n");
    std::fs::write(&cfg, tokens).unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_configured(&data, &jwks, &cfg);
    server.token = ADMIN.into();

    // Register, then add a key: its events are accepted.
    let r = admin(
        &server,
        "PUT",
        "/v1/agents/api-0",
        json!({"role": "hr-assistant", "owner": "people-ops", "purpose": "answers HR questions", "actions": ["hr.read_employee"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let one = Signer::new(81, "api-0", "api-0#1");
    let r = admin(
        &server,
        "POST",
        "/v1/agents/api-0/keys",
        json!({"kid": "api-0#1", "x": x_of(&one)}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["keys"][0]["owner"], "people-ops", "{}", r.text());
    assert_eq!(verdict(&server, &one, "a-1"), "accepted");

    // The same kid with another key is refused.
    let other = Signer::new(82, "api-0", "api-0#1");
    let r = admin(
        &server,
        "POST",
        "/v1/agents/api-0/keys",
        json!({"kid": "api-0#1", "x": x_of(&other)}),
    );
    assert_eq!(r.status, 409, "{}", r.text());

    // Rotate: a second key, then the first revoked an hour ago.
    let two = Signer::new(83, "api-0", "api-0#2");
    assert_eq!(
        verdict(&server, &two, "a-early"),
        "rejected:unknown_key",
        "a kid not added yet"
    );
    let exp = vigil::time::Timestamp::now().secs() + 30 * 86_400;
    let r = admin(
        &server,
        "POST",
        "/v1/agents/api-0/keys",
        json!({"kid": "api-0#2", "x": x_of(&two), "exp": exp}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let past = vigil::time::Timestamp::now().secs() - 2 * 3600;
    let r = admin(
        &server,
        "POST",
        "/v1/agents/api-0/keys/api-0%231/revoke",
        json!({"revoked_at": past}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(verdict(&server, &one, "a-2"), "rejected:key_revoked");
    assert_eq!(verdict(&server, &two, "a-3"), "accepted");

    // A key from the operator's file can be revoked here, and the file's
    // agent record overridden (owner), then the agent decommissioned.
    let f = &files[0];
    let r = admin(
        &server,
        "POST",
        &format!(
            "/v1/agents/{}/keys/{}/revoke",
            f.agent,
            f.kid.replace('#', "%23")
        ),
        J::Null,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(verdict(&server, f, "f-1"), "rejected:key_revoked");
    let f2 = Signer::new(84, &f.agent, &format!("{}#2", f.agent));
    let r = admin(
        &server,
        "POST",
        &format!("/v1/agents/{}/keys", f.agent),
        json!({"kid": f2.kid, "x": x_of(&f2)}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(verdict(&server, &f2, "f-2"), "accepted");
    let r = admin(
        &server,
        "PUT",
        &format!("/v1/agents/{}", f.agent),
        json!({"role": "file-role", "owner": "new-owner"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["record"]["owner"], "new-owner", "{}", r.text());
    assert_eq!(r.json()["record"]["role"], "file-role", "{}", r.text());
    let r = admin(
        &server,
        "POST",
        &format!("/v1/agents/{}/decommission", f.agent),
        J::Null,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(verdict(&server, &f2, "f-3"), "rejected:agent_not_active");
    let r = admin(
        &server,
        "POST",
        "/v1/agents/api-0/keys/nope/revoke",
        J::Null,
    );
    assert_eq!(r.status, 404);

    // The owner attests; the leaver step decommissions.
    let r = admin(
        &server,
        "POST",
        "/v1/agents/api-0/attest",
        json!({"needed": false, "by": "people-ops-lead@example.com"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["receipt"]["verdict"], "accepted", "{}", r.text());
    let r = admin(&server, "POST", "/v1/agents/api-0/decommission", J::Null);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["record"]["status"],
        "decommissioned",
        "{}",
        r.text()
    );
    assert_eq!(verdict(&server, &two, "a-4"), "rejected:agent_not_active");

    cli(&server, dir.path());

    // Only an admin may change anything.
    let none = http(server.addr, "PUT", "/v1/agents/x", &[], b"{}");
    assert_eq!(none.status, 401);

    // The log holds every change, and verifies.
    let body = serde_json::to_vec(&json!({"sql": "SELECT action, resource FROM events WHERE agent_id = 'vigil' AND (resource LIKE 'key:api-0/%' OR resource = 'agent:api-0') ORDER BY log_index"})).unwrap();
    let rows = server
        .req("POST", "/v1/query", Some("application/json"), &body)
        .json()["rows"]
        .clone();
    let actions: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "vigil.agent.registered",
            "vigil.key.added",
            "vigil.key.added",
            "vigil.key.changed",
            "vigil.agent.attested",
            "vigil.key.changed",
            "vigil.key.changed"
        ],
        "{rows}"
    );
    assert_eq!(server.stop(), Some(0));
    assert_log_verifies(&data);
    let out = run_vigil(&[
        "verify",
        "--data",
        data.to_str().unwrap(),
        "--quiet",
        "--key-history",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let history: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("key history: "))
        .filter(|l| l.contains(" api-0/"))
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    let revoked = format!("revoked_at={past}");
    let shown = |action: &str, kid: &str, has: &str| {
        history
            .iter()
            .any(|l| l.starts_with(&format!("{action} api-0/{kid} ")) && l.contains(has))
    };
    assert!(
        shown("vigil.key.added", "api-0#1", "owner=people-ops"),
        "{history:#?}"
    );
    assert!(
        shown("vigil.key.changed", "api-0#1", &revoked),
        "{history:#?}"
    );
    assert!(
        shown("vigil.key.changed", "api-0#2", "status=decommissioned"),
        "{history:#?}"
    );

    // After a restart, the admin's keys and records are still in force.
    let mut server = Server::start_configured(&data, &jwks, &cfg);
    server.token = ADMIN.into();
    assert_eq!(verdict(&server, &two, "a-5"), "rejected:agent_not_active");
    assert_eq!(verdict(&server, &one, "a-6"), "rejected:key_revoked");
    assert_eq!(server.stop(), Some(0));
    assert_log_verifies(&data);
}

/// The same routes through `vigil agents`: a key made with `vigil keygen`
/// is added, listed, attested; a refusal exits 1 with the server's why.
fn cli(server: &Server, dir: &std::path::Path) {
    let addr = server.addr.to_string();
    let agents = |args: &[&str]| {
        let mut all = vec!["agents", "--server", &addr, "--token", ADMIN];
        all.extend_from_slice(args);
        run_vigil(&all)
    };
    let key = dir.join("cli-0.key.jwk");
    let made = run_vigil(&[
        "keygen",
        "--agent",
        "cli-0",
        "--kid",
        "cli-0#1",
        "--out",
        key.to_str().unwrap(),
    ]);
    assert_eq!(
        made.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let public = dir.join("cli-0.pub.jwk");
    std::fs::write(&public, &made.stdout).unwrap();
    let out = agents(&[
        "register",
        "cli-0",
        "--role",
        "support",
        "--owner",
        "support-team",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agents(&["add-key", "cli-0", "--jwk", public.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agents(&["add-key", "cli-0", "--jwk", key.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a private key is refused before sending"
    );
    let out = agents(&["list"]);
    assert_eq!(out.status.code(), Some(0));
    let list: J = serde_json::from_slice(&out.stdout).unwrap();
    let cli0 = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "cli-0")
        .cloned();
    assert_eq!(cli0.unwrap()["owner"], "support-team", "{list}");
    for step in ["suspend", "restore"] {
        let out = agents(&[step, "cli-0"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{step}: {err}");
    }
    let out = agents(&[
        "attest",
        "cli-0",
        "--needed",
        "--by",
        "support-lead@example.com",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agents(&["revoke", "cli-0", "no-such-kid"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused (404)") && err.contains("no-such-kid"),
        "{err}"
    );
}
