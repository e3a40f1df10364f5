//! Hygiene findings from outside (contract section 6a): a fleet with a
//! planted stale key, a key that never expires, an agent with no owner, an
//! agent using static credentials where its role requires leases, a
//! zombie (a valid key, no accepted event), an agent allowed an action it
//! never takes and an agent its owner never attested gives exactly those
//! findings,
//! each with log evidence that SQL confirms; a decommissioned agent and
//! the pipeline itself give none.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value as J};

use crate::util::*;

const ADMIN: &str = "t-admin";
const INGEST: &str = "t-ingest";
/// 0.0003 days: 25.9 s.
const ZOMBIE_AFTER_S: u64 = 26;
const DAY: i64 = 86_400;

fn now_s() -> i64 {
    vigil::time::Timestamp::now().secs()
}

/// (agent, key members beyond the defaults, whether it acts, whether its
/// events carry a lease).
fn fleet_plan() -> Vec<(&'static str, J, bool, bool)> {
    let now = now_s();
    let ok = json!({"role": "hr-assistant", "owner": "people-ops", "nbf": now - 10 * DAY, "exp": now + 30 * DAY});
    let with = |extra: J| {
        let mut j = ok.clone();
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                j.as_object_mut().unwrap().remove(k);
            } else {
                j[k] = v.clone();
            }
        }
        j
    };
    vec![
        ("good-0", ok.clone(), true, true),
        ("stale-0", with(json!({"nbf": now - 100 * DAY})), true, true),
        ("forever-0", with(json!({"exp": null})), true, true),
        ("orphan-0", with(json!({"owner": null})), true, true),
        (
            "left-0",
            with(json!({"owner": "leaver@example.com"})),
            true,
            true,
        ),
        ("static-0", with(json!({"role": "db-analyst"})), true, false),
        ("zombie-0", ok.clone(), false, true),
        (
            "retired-0",
            with(json!({"status": "decommissioned", "owner": null, "exp": null})),
            false,
            true,
        ),
    ]
}

fn findings(server: &Server, query: &str) -> Vec<J> {
    let r = server.req("GET", &format!("/v1/findings{query}"), None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["findings"].as_array().unwrap().clone()
}

fn kinds(list: &[J]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["agent_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_planted_fleet_gives_exactly_its_findings_with_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let plan = fleet_plan();
    let signers: Vec<Signer> = plan
        .iter()
        .enumerate()
        .map(|(i, (agent, ..))| Signer::new(60 + i as u8, agent, &format!("{agent}#1")))
        .collect();
    let jwks = dir.path().join("fleet.jwks.json");
    let keys: Vec<J> = signers
        .iter()
        .zip(&plan)
        .map(|(s, (_, extra, ..))| s.jwk(extra.clone()))
        .collect();
    write_jwks(&jwks, &keys);
    let cfg = dir.path().join("hygiene.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hygiene]\nmax_key_age_days = 90\nzombie_after_days = 0.0003\n\
             unused_after_days = 0.0003\nattest_every_days = 0.0003\n\
             lease_required_roles = [\"db-analyst\"]\n\
             departed_owners = [\"leaver@example.com\"]\n\
             [[tokens]]\nname = \"admin\"\ntoken = \"{ADMIN}\"\nroles = [\"admin\"]\n\
             [[tokens]]\nname = \"siem\"\ntoken = \"{INGEST}\"\nroles = [\"ingest\"]\n"
        ),
    )
    .unwrap();
    let mut server = Server::start_configured(&dir.path().join("data"), &jwks, &cfg);
    server.token = ADMIN.into();
    // An agent registered through the admin routes, allowed two actions,
    // that only ever takes one.
    let privileged = register_privileged(&server);
    let act = |round: u32| {
        let mut lines: Vec<Vec<u8>> = signers
            .iter()
            .zip(&plan)
            .filter(|(_, (_, _, acts, _))| *acts)
            .flat_map(|(s, (_, _, _, leased))| {
                (0..3).map(move |i| {
                    let mut fields = json!({"resource": "db://t/1"});
                    if *leased {
                        fields["lease_id"] = json!(format!("lease-{}", s.agent));
                    }
                    s.sign(&s.event(&format!("{}-{round}-{i}", s.agent), fields))
                })
            })
            .collect();
        let p = &privileged;
        let fields = json!({"resource": "db://t/1", "lease_id": "lease-p", "action": "db.query"});
        lines.push(p.sign(&p.event(&format!("priv-{round}"), fields)));
        let answer = server.post_ndjson(&lines);
        assert_eq!(answer["accepted"], lines.len(), "{answer}");
    };
    act(0);

    // Before the zombie threshold: everything but the zombie.
    let early: BTreeSet<(String, String)> = [
        ("key_without_expiry", "forever-0"),
        ("ownerless_agent", "orphan-0"),
        ("ownerless_agent", "left-0"),
        ("stale_key", "stale-0"),
        ("static_credentials", "static-0"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    wait_until(
        Duration::from_secs(20),
        || Some(()).filter(|_| kinds(&findings(&server, "")) == early),
        || format!("findings: {:#?}", findings(&server, "")),
    );

    // Past it, the agents that act again are not zombies; the one that
    // never acted is.
    std::thread::sleep(Duration::from_secs(ZOMBIE_AFTER_S + 1));
    act(1);
    // Owners attest every active agent but orphan-0 (it has no owner).
    for agent in [
        "good-0",
        "stale-0",
        "forever-0",
        "static-0",
        "zombie-0",
        "priv-0",
        "left-0",
    ] {
        let body = serde_json::to_vec(&json!({"needed": true, "by": "owner@example.com"})).unwrap();
        let r = server.req(
            "POST",
            &format!("/v1/agents/{agent}/attest"),
            Some("application/json"),
            &body,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut all = early.clone();
    for (kind, agent) in [
        ("zombie_agent", "zombie-0"),
        ("unused_privilege", "priv-0"),
        ("unattested_agent", "orphan-0"),
    ] {
        all.insert((kind.into(), agent.into()));
    }
    let list = wait_until(
        Duration::from_secs(20),
        || Some(findings(&server, "")).filter(|l| kinds(l) == all),
        || format!("findings: {:#?}", findings(&server, "")),
    );
    check_evidence(&server, &list);
    inventory_surfaces(&server, &all);

    // Filters, a bad kind, and the roles.
    let zombies = findings(&server, "?kind=zombie_agent");
    assert_eq!(kinds(&zombies).len(), 1, "{zombies:?}");
    assert_eq!(findings(&server, "?agent_id=good-0"), Vec::<J>::new());
    let bad = server.req("GET", "/v1/findings?kind=nope", None, b"");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("zombie_agent"), "{}", bad.text());
    let auth = format!("Bearer {INGEST}");
    let wrong = http(
        server.addr,
        "GET",
        "/v1/findings",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(wrong.status, 403);
    assert!(!wrong.text().contains("zombie-0"));

    // The access report, live.
    let period = (at(now_s() - 3600), at(now_s() + 3600));
    let live = server.req(
        "GET",
        &format!("/v1/reports/access?from={}&to={}", period.0, period.1),
        None,
        b"",
    );
    assert_eq!(live.status, 200, "{}", live.text());
    let live = live.json();
    let good = find_agent(&live, "good-0");
    assert_eq!(good["actions_total"], 6, "{good}");

    // Offline, `vigil query` judges with the default thresholds (30 days
    // for a zombie, no role requiring leases).
    assert_eq!(server.stop(), Some(0));
    let data = dir.path().join("data");
    let out = run_vigil(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "json",
        "SELECT kind, agent_id FROM findings ORDER BY kind",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = serde_json::from_slice::<J>(&out.stdout).unwrap()["rows"].clone();
    assert_eq!(
        rows,
        json!([
            ["key_without_expiry", "forever-0"],
            ["ownerless_agent", "orphan-0"],
            ["stale_key", "stale-0"]
        ])
    );
    access_report(&data, &period, dir.path());

    // The inventory was saved at stop with the position it covers: a
    // restart reads only what follows and finds the same; a damaged save
    // is rebuilt from the log and finds the same too.
    let state = data.join("index/hygiene.json");
    let saved: J = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["format"], 1, "{saved}");
    assert!(
        saved["inventory"]["position"].as_u64().unwrap() > 0,
        "{saved}"
    );
    for damaged in [false, true] {
        if damaged {
            std::fs::write(&state, b"{\"format\": 1, \"inventory\": 7").unwrap();
        }
        let mut again = Server::start_configured(&data, &jwks, &cfg);
        again.token = ADMIN.into();
        wait_until(
            Duration::from_secs(20),
            || Some(findings(&again, "")).filter(|l| kinds(l) == all),
            || {
                format!(
                    "after a restart (damaged save: {damaged}): {:#?}",
                    findings(&again, "")
                )
            },
        );
        assert_eq!(again.stop(), Some(0));
        let resaved: J = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert!(
            resaved["inventory"]["position"].as_u64() >= saved["inventory"]["position"].as_u64()
        );
    }
}

fn at(secs: i64) -> String {
    vigil::time::Timestamp::from_secs(secs).to_rfc3339_millis()
}

fn find_agent(report: &J, agent: &str) -> J {
    report["owners"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["agents"].as_array().unwrap().iter())
        .find(|a| a["agent_id"] == agent)
        .cloned()
        .unwrap_or_else(|| panic!("{agent} is not in {report}"))
}

/// `vigil report access` for people-ops: each agent's counts as the test
/// sent them (three events a round, two rounds, `db.query`; priv-0 one a
/// round), its lease, and its findings (default thresholds).
fn access_report(data: &std::path::Path, period: &(String, String), dir: &std::path::Path) {
    let out = dir.join("report");
    let run = run_vigil(&[
        "report",
        "access",
        "--data",
        data.to_str().unwrap(),
        "--from",
        &period.0,
        "--to",
        &period.1,
        "--owner",
        "people-ops",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: J =
        serde_json::from_slice(&std::fs::read(out.join("access-report.json")).unwrap()).unwrap();
    let owners = report["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{report}");
    assert_eq!(owners[0]["owner"], "people-ops");
    let want = [
        ("forever-0", 6, 1, json!(["key_without_expiry"])),
        ("good-0", 6, 1, json!([])),
        ("priv-0", 2, 1, json!([])),
        ("stale-0", 6, 1, json!(["stale_key"])),
        ("static-0", 6, 0, json!([])),
        ("zombie-0", 0, 0, json!([])),
    ];
    let agents = owners[0]["agents"].as_array().unwrap();
    assert_eq!(agents.len(), want.len(), "{report}");
    for (agent, actions, leases, findings) in want.clone() {
        let a = find_agent(&report, agent);
        assert_eq!(a["actions_total"], actions, "{a}");
        if actions > 0 {
            assert_eq!(a["actions"]["db.query"], actions, "{a}");
        }
        assert_eq!(a["leases"], leases, "{a}");
        assert_eq!(a["findings"], findings, "{a}");
        assert!(a["keys"][0]["age_days"].is_i64(), "{a}");
    }
    assert_eq!(find_agent(&report, "stale-0")["keys"][0]["age_days"], 100);
    let csv = std::fs::read_to_string(out.join("access-report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + want.len(), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("people-ops,stale-0,hr-assistant,active,1,100,6,db.query=6,")),
        "{csv}"
    );
    let html = std::fs::read_to_string(out.join("access-report.html")).unwrap();
    assert!(
        html.contains("Owner: people-ops") && html.contains("still needed?"),
        "{html}"
    );
    let bad = run_vigil(&[
        "report",
        "access",
        "--data",
        data.to_str().unwrap(),
        "--from",
        "yesterday",
        "--to",
        &period.1,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("YYYY-MM-DDTHH:MM:SSZ"));
}

fn sql_rows(server: &Server, sql: &str) -> Vec<J> {
    let body = serde_json::to_vec(&json!({ "sql": sql })).unwrap();
    let r = server.req("POST", "/v1/query", Some("application/json"), &body);
    assert_eq!(r.status, 200, "{sql}: {}", r.text());
    r.json()["rows"].as_array().unwrap().clone()
}

/// The inventory through `GET /v1/agents` and the SQL tables `agents`,
/// `keys` and `findings`.
fn inventory_surfaces(server: &Server, all: &BTreeSet<(String, String)>) {
    let r = server.req("GET", "/v1/agents", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let agents = r.json()["agents"].as_array().unwrap().clone();
    let ids: Vec<&str> = agents
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "forever-0",
            "good-0",
            "left-0",
            "orphan-0",
            "priv-0",
            "retired-0",
            "stale-0",
            "static-0",
            "zombie-0"
        ]
    );
    for a in &agents {
        let acts = !["zombie-0", "retired-0"].contains(&a["agent_id"].as_str().unwrap());
        assert_eq!(a["last_seen"].is_string(), acts, "{a}");
        assert_eq!(a["keys"][0]["kty"], "OKP", "{a}");
        assert!(a["keys"][0].get("d").is_none(), "public members only: {a}");
    }
    assert_eq!(agents[5]["status"], "decommissioned");
    assert_eq!(agents[3]["owner"], J::Null);

    let found: BTreeSet<(String, String)> = sql_rows(server, "SELECT kind, agent_id FROM findings")
        .iter()
        .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(&found, all);
    let rows = sql_rows(
        server,
        "SELECT a.agent_id, a.status, count(k.kid) FROM agents a JOIN keys k ON a.agent_id = k.agent_id \
         WHERE k.exp IS NULL GROUP BY 1, 2 ORDER BY 1",
    );
    assert_eq!(
        rows,
        vec![
            json!(["forever-0", "active", 1]),
            json!(["retired-0", "decommissioned", 1])
        ]
    );
    let acted = sql_rows(
        server,
        "SELECT count(*) FROM agents WHERE last_seen IS NOT NULL",
    );
    assert_eq!(acted, vec![json!([7])]);
}

/// Every finding has the contract's members, a stable id, and evidence
/// that is in the log: the key records and events SQL finds at those
/// indices belong to the finding's agent.
fn check_evidence(server: &Server, list: &[J]) {
    for f in list {
        for m in [
            "finding_id",
            "kind",
            "agent_id",
            "severity",
            "summary",
            "fix",
            "since",
        ] {
            assert!(f[m].is_string(), "{m} of {f}");
        }
        let agent = f["agent_id"].as_str().unwrap();
        let indices: Vec<String> = f["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap().to_string())
            .collect();
        assert!(!indices.is_empty(), "{f}");
        let sql = format!(
            "SELECT event_id, agent_id, resource FROM events WHERE log_index IN ({})",
            indices.join(",")
        );
        let body = serde_json::to_vec(&json!({ "sql": sql })).unwrap();
        let r = server.req("POST", "/v1/query", Some("application/json"), &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let rows = r.json()["rows"].as_array().unwrap().clone();
        assert_eq!(rows.len(), indices.len(), "{f}: {rows:?}");
        for row in rows {
            let (who, resource) = (row[1].as_str().unwrap(), row[2].as_str().unwrap_or(""));
            assert!(
                who == agent
                    || resource.starts_with(&format!("key:{agent}/"))
                    || resource == format!("agent:{agent}"),
                "evidence of {agent} is {row}"
            );
        }
    }
    let again = findings(server, "");
    let ids = |l: &[J]| {
        l.iter()
            .map(|f| f["finding_id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(list), "finding ids are stable");
}

/// Registers priv-0 through the admin routes, allowed `db.query` and
/// `db.drop`, with a key that expires; returns its signer.
fn register_privileged(server: &Server) -> Signer {
    let p = Signer::new(90, "priv-0", "priv-0#1");
    let put = |method: &str, path: &str, body: J| {
        let bytes = serde_json::to_vec(&body).unwrap();
        let r = server.req(method, path, Some("application/json"), &bytes);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    };
    put(
        "PUT",
        "/v1/agents/priv-0",
        json!({"role": "hr-assistant", "owner": "people-ops", "actions": ["db.query", "db.drop"]}),
    );
    let x = p.jwk(json!({}))["x"].clone();
    put(
        "POST",
        "/v1/agents/priv-0/keys",
        json!({"kid": "priv-0#1", "x": x, "exp": now_s() + 30 * DAY}),
    );
    p
}
