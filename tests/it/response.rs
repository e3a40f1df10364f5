//! Closing the loop from outside (contract sections 3, 5, 9): signed events
//! in, an anomaly, a CIBA request seen by a real OpenID provider with its
//! binding message and authorization details, the person's answer, leases
//! revoked in a real OpenBao (only within the role's prefixes), the
//! posture gateways read, the suspended agent's next event refused, an
//! administrator's restore, and every step in the log, which `vigil
//! verify` accepts. Also: the services down (ingest goes on, failures
//! visible) and a forged flood (alerts, never revokes).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value as J};

use crate::detection::{
    anomalies, at, forgeries, hr_fleet, metric, offboarding, post_all, routine_with_leases, settle,
    START,
};
use crate::services::{Bao, Provider, Receiver};
use crate::util::*;

const GATEWAY_TOKEN: &str = "gateway-token-for-tests";
const OPS_TOKEN: &str = "ops-token-for-tests";

/// A configuration with tokens, the given service sections and rules.
fn config(dir: &Path, sections: &str) -> PathBuf {
    let sha = |t: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(t.as_bytes()))
    };
    let text = format!(
        r#"
[[tokens]]
name = "ops"
sha256 = "{}"
roles = ["admin"]
[[tokens]]
name = "gateway"
sha256 = "{}"
roles = ["posture"]
{sections}
"#,
        sha(OPS_TOKEN),
        sha(GATEWAY_TOKEN)
    );
    let path = dir.join("vigil.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(dir: &Path, jwks: &Path, config: &Path) -> Server {
    let mut s = Server::start_configured(&dir.join("data"), jwks, config);
    s.token = OPS_TOKEN.into();
    s
}

fn posture(server: &Server, agent: &str, token: &str) -> J {
    let auth = format!("Bearer {token}");
    let r = http(
        server.addr,
        "GET",
        &format!("/v1/agents/{agent}/posture"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits until the agent's posture (as `soc`/admin sees it) passes `done`.
fn wait_posture(server: &Server, agent: &str, what: &str, done: impl Fn(&J) -> bool) -> J {
    wait_until(
        Duration::from_secs(60),
        || Some(posture(server, agent, OPS_TOKEN)).filter(|p| done(p)),
        || {
            let p = posture(server, agent, OPS_TOKEN);
            format!(
                "{agent}'s posture never became {what}: {p:#}\n{}",
                server.log_text()
            )
        },
    )
}

/// The alert detection raised for an agent's accepted events.
fn alert_of(server: &Server, agent: &str) -> J {
    anomalies(server, &format!("?agent_id={agent}&min_score=50"))
        .into_iter()
        .find(|a| a["from_rejected"] == false)
        .unwrap_or_else(|| panic!("no alert for {agent}"))
}

/// One more routine event of an agent, on the Tuesday after.
fn next_event(s: &Signer, n: u32) -> Vec<u8> {
    let e = s.event(
        &format!("{}-later-{n}", s.agent),
        json!({"occurred_at": at(START + 8 * 86_400 + 600), "action": "hr.read_employee",
               "resource": "hris://employees/E1", "principal": "alice@example.com"}),
    );
    s.sign(&e)
}

/// hr-0 exports every employee record at 03:00 on the Wednesday after.
fn export_at_night(s: &Signer) -> Vec<u8> {
    let e = s.event(
        &format!("{}-export", s.agent),
        json!({"occurred_at": at(START + 9 * 86_400 - 6 * 3600), "action": "hr.export_all_employees",
               "resource": "hris://exports/all", "sensitivity": "critical",
               "principal": "alice@example.com", "correlation_id": "night-1"}),
    );
    s.sign(&e)
}

/// Waits for a token or revocation request at the provider.
fn wait_log(provider: &Provider, found: impl Fn(&J) -> bool) -> J {
    wait_until(
        Duration::from_secs(30),
        || provider.log().into_iter().find(|l| found(l)),
        || format!("the provider never saw it: {:#?}", provider.log()),
    )
}

/// The SET pushed for an agent's suspension: RFC 8935 headers, signed
/// with the pipeline key the server publishes, a CAEP session-revoked
/// about the agent. Returns its `jti`.
fn check_signal(server: &Server, receiver: &Receiver, agent: &str) -> String {
    use base64::Engine;
    let dec = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    };
    let start = Instant::now();
    loop {
        for r in receiver.received() {
            let set = String::from_utf8(r.body.clone()).unwrap();
            let parts: Vec<&str> = set.split('.').collect();
            assert_eq!(parts.len(), 3, "{set}");
            let claims: J = serde_json::from_slice(&dec(parts[1])).unwrap();
            if claims["sub_id"]["id"] != agent {
                continue;
            }
            assert_eq!(r.header("content-type"), Some("application/secevent+jwt"));
            assert_eq!(
                r.header("authorization"),
                Some("Bearer ssf-token-for-tests")
            );
            assert_eq!(claims["aud"], "https://idp.test");
            let event = &claims["events"]
                ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"];
            assert_eq!(event["initiating_entity"], "policy", "{claims}");
            let keys = server.req("GET", "/v1/pipeline-keys", None, b"").json();
            let x = dec(keys["keys"][0]["x"].as_str().unwrap());
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
            let sig = ed25519_dalek::Signature::from_slice(&dec(parts[2])).unwrap();
            key.verify_strict(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
                .expect("the SET is signed with the pipeline key");
            return claims["jti"].as_str().unwrap().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no SET for {agent}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn has_evidence(server: &Server, event_id: &str) -> bool {
    server.receipt("vigil", event_id).status == 200
}

#[test]
fn an_anomaly_asks_the_principal_and_a_denial_revokes_leases_and_suspends() {
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start();
    let provider = Provider::start("vigil", "s3cret-for-tests", Some(1));
    let receiver = Receiver::start();
    std::fs::write(dir.path().join("ciba.secret"), "s3cret-for-tests\n").unwrap();
    let hr_leases = [bao.lease("hr"), bao.lease("hr")];
    let other = bao.lease("other");
    let (signers, jwks) = hr_fleet(dir.path());
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[ciba]
issuer = "{}"
client_id = "vigil"
client_secret_file = "{}"
requested_expiry_s = 12
[vault]
address = "{}"
token = "root"
lease_prefixes = {{ "hr-assistant" = ["pki/issue/hr/"] }}
[ssf]
receiver = "{}"
audience = "https://idp.test"
token = "ssf-token-for-tests"
[[response.rules]]
roles = ["hr-assistant"]
min_score = 50
then = "step_up"
"#,
            provider.issuer,
            dir.path().join("ciba.secret").display(),
            bao.addr,
            receiver.url
        ),
    );
    let mut server = start(dir.path(), &jwks, &cfg);
    let leases = vec![
        vec![],
        vec![hr_leases[0].clone(), hr_leases[1].clone(), other.clone()],
    ];
    post_all(&server, &routine_with_leases(&signers, &leases));
    settle(&server);
    assert!(
        anomalies(&server, "?min_score=50").is_empty(),
        "the routine alerted"
    );

    // A forged flood against hr-1 alerts, and never asks or revokes.
    post_all(&server, &forgeries());
    settle(&server);
    let forged = anomalies(&server, "?agent_id=hr-1&min_score=50");
    assert!(forged.iter().all(|a| a["from_rejected"] == true) && !forged.is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(posture(&server, "hr-1", OPS_TOKEN)["state"], "active");
    assert!(provider.requests().is_empty(), "a forgery led to a step-up");

    // hr-0 off-boards employees: alice is asked on her phone, and approves.
    post_all(&server, &offboarding(&signers[0]));
    let asked = provider.wait_request("hr-0");
    assert_eq!(asked["account"], "alice@example.com");
    let message = asked["binding_message"].as_str().unwrap();
    assert!(
        message.contains("hr-0") && message.contains("hr.offboard_employee"),
        "{message}"
    );
    let details = &asked["authorization_details"][0];
    assert_eq!(details["type"], "vigil_agent_action");
    assert_eq!(details["actions"], json!(["hr.offboard_employee"]));
    assert!(details["event_count"].as_u64().unwrap() >= 1, "{details}");
    assert_eq!(details["identifier"], "hris://employees/X0");
    let p = posture(&server, "hr-0", OPS_TOKEN);
    assert_eq!(p["state"], "step_up_required", "{p}");
    assert_eq!(p["step_up"]["principal"], "alice@example.com");
    let mut shown = vec![p];
    let gateway = posture(&server, "hr-0", GATEWAY_TOKEN);
    shown.push(gateway.clone());
    assert_eq!(gateway["state"], "step_up_required");
    assert!(
        gateway.get("step_up").is_none(),
        "a gateway sees no step-up details: {gateway}"
    );
    // The provider asks Vigil to slow down once: the next poll comes
    // interval + 5 s later (the provider's clock); alice approves meanwhile.
    provider.slow_down(1);
    let slowed = wait_log(&provider, |l| l["answered"] == "slow_down");
    provider.decide(asked["auth_req_id"].as_str().unwrap(), true);
    wait_posture(&server, "hr-0", "active", |p| p["state"] == "active");
    let after = wait_log(&provider, |l| {
        l["path"] == "/token" && l["at"].as_f64() > slowed["at"].as_f64()
    });
    let gap = after["at"].as_f64().unwrap() - slowed["at"].as_f64().unwrap();
    assert!(
        gap >= 5_500.0,
        "polled again {gap} ms after slow_down (interval 1 s)"
    );
    // The approval's tokens are revoked at once (RFC 7009).
    wait_log(&provider, |l| l["path"] == "/token/revocation");
    let a0 = alert_of(&server, "hr-0");
    let id0 = a0["anomaly_id"].as_str().unwrap().to_string();
    let start_wait = Instant::now();
    while alert_of(&server, "hr-0")["feedback"]["verdict"] != "false_positive" {
        assert!(
            start_wait.elapsed() < Duration::from_secs(30),
            "the approval did not teach the baseline"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        alert_of(&server, "hr-0")["response"],
        json!({"action": "step_up", "status": "approved"})
    );

    // Another day, something else new; nobody answers: the request
    // expires (requested_expiry_s = 12) and the agent is suspended.
    post_all(&server, &[export_at_night(&signers[0])]);
    wait_posture(&server, "hr-0", "suspended after an expired step-up", |p| {
        p["state"] == "suspended" && p["step_up"]["status"] == "expired"
    });
    let r = server.post_ndjson(&[next_event(&signers[0], 1)]);
    assert_eq!(r["results"][0]["reason"], "agent_not_active", "{r}");

    // hr-1 does the same; alice denies: leases revoked, hr-1 suspended.
    post_all(&server, &offboarding(&signers[1]));
    let asked = provider.wait_request("hr-1");
    provider.decide(asked["auth_req_id"].as_str().unwrap(), false);
    let p = wait_posture(&server, "hr-1", "suspended with its leases revoked", |p| {
        p["state"] == "suspended"
            && p["revocations"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["status"] != "pending"))
    });
    let status = |lease: &str| {
        p["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["lease_id"] == lease)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status(&hr_leases[0]), Some(json!("revoked")), "{p:#}");
    assert_eq!(status(&hr_leases[1]), Some(json!("revoked")), "{p:#}");
    assert_eq!(status(&other), Some(json!("outside_prefixes")), "{p:#}");
    assert!(!bao.lease_alive(&hr_leases[0]) && !bao.lease_alive(&hr_leases[1]));
    assert!(
        bao.lease_alive(&other),
        "a lease outside the role's prefixes was revoked"
    );
    shown.push(p.clone());

    // Its next event is refused; an administrator restores it.
    let r = server.post_ndjson(&[next_event(&signers[1], 1)]);
    assert_eq!(r["results"][0]["reason"], "agent_not_active", "{r}");
    let restored = server.req("POST", "/v1/agents/hr-1/restore", None, b"");
    assert_eq!(restored.status, 200, "{}", restored.text());
    assert_eq!(restored.json()["posture"]["state"], "active");
    let r = server.post_ndjson(&[next_event(&signers[1], 2)]);
    assert_eq!(r["results"][0]["status"], "accepted", "{r}");

    // Each suspension was pushed as a signed Security Event Token.
    for agent in ["hr-0", "hr-1"] {
        let jti = check_signal(&server, &receiver, agent);
        assert!(
            has_evidence(&server, &format!("set-{jti}")),
            "no record of the push"
        );
    }

    // Every step is evidence in the log, and the log verifies.
    let id1 = alert_of(&server, "hr-1")["anomaly_id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [
        format!("{id0}.step_up"),
        format!("{id0}.step_up.requested"),
        format!("{id0}.step_up.result"),
        format!("{id1}.step_up.result"),
        format!("{id1}.revoke"),
        vigil::respond::evidence::revocation_id(&id1, &hr_leases[0]),
        vigil::respond::evidence::revocation_id(&id1, &hr_leases[1]),
    ] {
        assert!(has_evidence(&server, &id), "no evidence {id} in the log");
    }
    assert!(!has_evidence(
        &server,
        &vigil::respond::evidence::revocation_id(&id1, &other)
    ));
    // The same story in SQL, from the anomalies and responses tables.
    let sql = |q: &str| {
        let body = serde_json::to_vec(&json!({ "sql": q })).unwrap();
        let r = server.req("POST", "/v1/query", None, &body);
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.json()["rows"].clone()
    };
    assert_eq!(
        sql(&format!(
            "SELECT action, outcome, count(*) FROM responses WHERE anomaly_id = '{id1}' \
             AND agent_id = 'hr-1' GROUP BY 1, 2 ORDER BY 1, 2"
        )),
        json!([
            ["vigil.response.decision", "revoke", 1],
            ["vigil.response.decision", "step_up", 1],
            ["vigil.response.revocation", "revoked", 2],
            ["vigil.response.signal", "delivered", 1],
            ["vigil.response.step_up_requested", null, 1],
            ["vigil.response.step_up_result", "denied", 1],
        ])
    );
    let versions = sql(&format!(
        "SELECT count(*), max(score) >= 50 FROM anomalies WHERE anomaly_id = '{id1}' AND agent_id = 'hr-1'"
    ));
    assert!(
        versions[0][0].as_i64().unwrap() >= 1 && versions[0][1] == json!(true),
        "{versions}"
    );
    // Every posture shown matches the published schema.
    shown.push(posture(&server, "hr-0", OPS_TOKEN));
    shown.push(posture(&server, "hr-1", OPS_TOKEN));
    shown.push(posture(&server, "hr-1", GATEWAY_TOKEN));
    crate::schemas::assert_valid("posture", &shown);
    // For SIEMs: the anomalies as OCSF Detection Findings.
    let r = server.req("GET", "/v1/anomalies?format=ocsf", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let findings = r.json()["anomalies"].as_array().unwrap().clone();
    assert!(findings
        .iter()
        .any(|f| f["finding_info"]["uid"] == json!(id1)));
    crate::schemas::assert_valid("ocsf_finding", &findings);
    assert_eq!(server.stop(), Some(0));
    let data = dir.path().join("data");
    assert_log_verifies(&data);
    // ... and in an export: every agent action as API Activity, every
    // anomaly version as a Detection Finding, checked by verify --bundle.
    let bundle = dir.path().join("bundle");
    let out = run_vigil(&[
        "export",
        "--data",
        data.to_str().unwrap(),
        "--ocsf",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_vigil(&["verify", "--bundle", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ndjson = |f: &str| -> Vec<J> {
        std::fs::read_to_string(bundle.join(f))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (activities, findings) = (ndjson("events.ocsf.ndjson"), ndjson("findings.ocsf.ndjson"));
    assert!(activities.len() > 20 && !findings.is_empty());
    crate::schemas::assert_valid("ocsf_api_activity", &activities);
    crate::schemas::assert_valid("ocsf_finding", &findings);
    // A rendering that is not the records' is found, even resealed.
    let text = std::fs::read_to_string(bundle.join("events.ocsf.ndjson")).unwrap();
    std::fs::write(
        bundle.join("events.ocsf.ndjson"),
        text.replacen("\"Success\"", "\"Failure\"", 1),
    )
    .unwrap();
    let out = run_vigil(&["verify", "--bundle", bundle.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("events.ocsf.ndjson"));
}

#[test]
fn with_the_services_down_ingest_goes_on_and_failures_show_and_survive_a_restart() {
    // Port 1 refuses connections and, unlike a port picked free for the
    // moment, no service another test starts can take it.
    const DOWN: u16 = 1;
    let dir = tempfile::tempdir().unwrap();
    let signers: Vec<Signer> = (0..2)
        .map(|i| Signer::new(40 + i, &format!("hr-{i}"), &format!("hr-{i}#1")))
        .collect();
    let jwks = dir.path().join("fleet.jwks.json");
    let keys = vec![
        signers[0].jwk(json!({"role": "hr-assistant", "owner": "people-ops"})),
        signers[1].jwk(json!({"role": "db-agent", "owner": "data-ops"})),
    ];
    write_jwks(&jwks, &keys);
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[ciba]
issuer = "http://127.0.0.1:{}"
client_id = "vigil"
client_secret = "nobody-listens"
[vault]
address = "http://127.0.0.1:{}"
token = "root"
lease_prefixes = {{ "db-agent" = ["database/creds/db-agent/"] }}
[[response.rules]]
roles = ["hr-assistant"]
min_score = 50
then = "step_up"
[[response.rules]]
roles = ["db-agent"]
min_score = 50
then = "revoke"
"#,
            DOWN, DOWN
        ),
    );
    let mut server = start(dir.path(), &jwks, &cfg);
    let leases = vec![vec![], vec!["database/creds/db-agent/L1".to_string()]];
    post_all(&server, &routine_with_leases(&signers, &leases));
    settle(&server);
    // Killed and started again: the leases seen survive (from the saved
    // state or, past it, from the log).
    server.kill9();
    let mut server = start(dir.path(), &jwks, &cfg);
    post_all(&server, &offboarding(&signers[0]));
    post_all(&server, &offboarding(&signers[1]));
    // Ingest is answered while the provider and Vault are retried.
    wait_posture(&server, "hr-0", "step_up_required", |p| {
        p["state"] == "step_up_required"
    });
    let r = server.post_ndjson(&[next_event(&signers[0], 1)]);
    assert_eq!(r["results"][0]["status"], "accepted", "{r}");
    assert_eq!(
        posture(&server, "hr-0", OPS_TOKEN)["step_up"]["status"],
        "requested",
        "ingest waited for the provider"
    );
    // Judging follows the acknowledgement: the suspension is in force
    // once the posture says so, and from then on the agent is refused.
    wait_posture(&server, "hr-1", "suspended", |p| p["state"] == "suspended");
    let r = server.post_ndjson(&[next_event(&signers[1], 1)]);
    assert_eq!(r["results"][0]["reason"], "agent_not_active", "{r}");
    // The failures become visible.
    let p = wait_posture(&server, "hr-0", "a failed step-up", |p| {
        p["step_up"]["status"] == "failed"
    });
    assert!(
        p["step_up"]["detail"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{p}"
    );
    let p = wait_posture(&server, "hr-1", "a failed revocation", |p| {
        p["revocations"][0]["status"] == "failed"
    });
    assert_eq!(
        p["revocations"][0]["lease_id"],
        "database/creds/db-agent/L1"
    );
    assert!(
        p["revocations"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{p}"
    );
    assert!(metric(&server, "vigil_response_failures_total") >= 2);
    // A restart keeps the postures (and the suspension in force).
    assert_eq!(server.stop(), Some(0));
    let mut server = start(dir.path(), &jwks, &cfg);
    assert_eq!(posture(&server, "hr-1", OPS_TOKEN)["state"], "suspended");
    assert_eq!(
        posture(&server, "hr-0", OPS_TOKEN)["step_up"]["status"],
        "failed"
    );
    let r = server.post_ndjson(&[next_event(&signers[1], 2)]);
    assert_eq!(r["results"][0]["reason"], "agent_not_active", "{r}");
    assert_eq!(server.stop(), Some(0));
    assert_log_verifies(&dir.path().join("data"));
}

#[test]
fn a_bad_response_policy_stops_the_server_with_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[response.rules]]\nmin_severity = \"high\"\nthen = \"step_up\"\n",
    );
    let out = run_vigil(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().join("data").to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[[response.rules]] entry 1") && err.contains("add a [ciba] table"),
        "{err}"
    );
}
