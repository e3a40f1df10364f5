//! SQL over the audit store, from outside: events go in over HTTP, small
//! segments make the server seal most of them as Parquet, and answers from
//! `POST /v1/query` and `vigil query` are checked against what the test
//! sent (sealed files and the unsealed tail together).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value as J};

use crate::services::S3;
use crate::util::*;

const ADMIN: &str = "t-admin";
const AUDIT: &str = "t-audit";
const SOC: &str = "t-soc";
const INGEST: &str = "t-ingest";

/// A configuration with small segments, no detection, one token per role
/// and `extra` appended.
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("query.toml");
    let text = format!(
        "[server]\nsegment_max_bytes = 32768\n[detection]\nenabled = false\n\
         [[tokens]]\nname = \"admin\"\ntoken = \"{ADMIN}\"\nroles = [\"admin\"]\n\
         [[tokens]]\nname = \"auditor\"\ntoken = \"{AUDIT}\"\nroles = [\"audit\"]\n\
         [[tokens]]\nname = \"soc\"\ntoken = \"{SOC}\"\nroles = [\"soc\"]\n\
         [[tokens]]\nname = \"siem\"\ntoken = \"{INGEST}\"\nroles = [\"ingest\"]\n{extra}"
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn start(dir: &Path, extra: &str) -> (Server, Vec<Signer>) {
    let (signers, jwks) = fleet(dir, "qa", 40, 3);
    let mut server = Server::start_configured(&dir.join("data"), &jwks, &config(dir, extra));
    server.token = ADMIN.into();
    (server, signers)
}

fn query(server: &Server, token: &str, sql: &str) -> Resp {
    let auth = format!("Bearer {token}");
    let body = serde_json::to_vec(&json!({ "sql": sql })).unwrap();
    http(
        server.addr,
        "POST",
        "/v1/query",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
}

fn rows(server: &Server, sql: &str) -> Vec<Vec<J>> {
    let r = query(server, AUDIT, sql);
    assert_eq!(r.status, 200, "{sql}: {}", r.text());
    serde_json::from_value(r.json()["rows"].clone()).unwrap()
}

/// One sent event, as the test remembers it.
struct Sent {
    agent: String,
    id: String,
    correlation: String,
    resource: String,
    occurred_ms: i64,
    bytes: i64,
    forged: bool,
}

/// Sends 360 events (3 agents, 4 correlation ids, 3 resources, one in 12
/// forged) and 3 unparseable lines; returns what was sent.
fn send(server: &Server, signers: &[Signer]) -> Vec<Sent> {
    let start_ms = (vigil::time::Timestamp::now().0 / 1_000_000) as i64 - 3_600_000;
    let mut sent = Vec::new();
    for chunk in 0..6 {
        let mut lines = Vec::new();
        for j in 0..60 {
            let i = chunk * 60 + j;
            let s = &signers[i % 3];
            let occurred_ms = start_ms + i as i64 * 1000;
            let at = vigil::time::Timestamp(occurred_ms as i128 * 1_000_000).to_rfc3339_millis();
            let e = Sent {
                agent: s.agent.clone(),
                id: format!("q-{i:04}"),
                correlation: format!("corr-{}", i % 4),
                resource: format!("db://t/{}", i % 5 % 3),
                occurred_ms,
                bytes: (i * 7) as i64,
                forged: i % 12 == 5,
            };
            let mut bytes = s.sign(&s.event(
                &e.id,
                json!({"occurred_at": at, "correlation_id": e.correlation,
                       "resource": e.resource, "bytes": e.bytes, "principal": "alice@example.com"}),
            ));
            if e.forged {
                let text = String::from_utf8(bytes)
                    .unwrap()
                    .replace("alice@", "mallory@");
                bytes = text.into_bytes();
            }
            lines.push(bytes);
            sent.push(e);
        }
        if chunk == 2 {
            lines.push(b"{not json".to_vec());
            lines.push(b"[1,2".to_vec());
            lines.push(b"{\"also\": \"not an event\"".to_vec());
        }
        server.post_ndjson(&lines);
    }
    sent
}

fn sealed_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("parquet/receipts"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Checks the answers to the typical questions against what was sent:
/// counts by agent and verdict, one correlation id in time order, one
/// agent's actions on a resource in a time range, hourly counts, and the
/// quarantine.
fn check_answers(server: &Server, sent: &[Sent]) {
    // Counts by agent and verdict.
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in sent {
        let verdict = if e.forged {
            "rejected:bad_signature"
        } else {
            "accepted"
        };
        *want.entry((e.agent.clone(), verdict.into())).or_default() += 1;
    }
    let got: BTreeMap<(String, String), i64> = rows(
        server,
        "SELECT agent_id, verdict, count(*) AS n FROM receipts WHERE agent_id <> 'vigil' \
         GROUP BY agent_id, verdict ORDER BY agent_id, verdict",
    )
    .into_iter()
    .map(|r| {
        let k = (
            r[0].as_str().unwrap().to_string(),
            r[1].as_str().unwrap().to_string(),
        );
        (k, r[2].as_i64().unwrap())
    })
    .collect();
    assert_eq!(got, want, "counts by agent and verdict");

    // Every action of one correlation id, across agents, in time order.
    let want: Vec<J> = sent
        .iter()
        .filter(|e| e.correlation == "corr-2" && !e.forged)
        .map(|e| json!([e.agent, e.id]))
        .collect();
    let got = rows(
        server,
        "SELECT agent_id, event_id FROM events WHERE correlation_id = 'corr-2' \
         AND verdict = 'accepted' ORDER BY occurred_at",
    );
    assert_eq!(got.into_iter().map(J::from).collect::<Vec<_>>(), want);

    // One agent's actions on a resource in a time range, and data volume.
    let (from, to) = (sent[30].occurred_ms, sent[300].occurred_ms);
    let agent_sent: Vec<&Sent> = sent
        .iter()
        .filter(|e| {
            e.agent == "qa-1"
                && e.resource == "db://t/1"
                && !e.forged
                && e.occurred_ms >= from
                && e.occurred_ms < to
        })
        .collect();
    let iso = |ms: i64| vigil::time::Timestamp(ms as i128 * 1_000_000).to_rfc3339_millis();
    let got = rows(
        server,
        &format!(
            "SELECT count(*), sum(bytes), min(event_id) FROM events WHERE agent_id = 'qa-1' \
             AND resource = 'db://t/1' AND verdict = 'accepted' \
             AND occurred_at >= '{}' AND occurred_at < '{}'",
            iso(from),
            iso(to)
        ),
    );
    assert_eq!(
        got[0],
        vec![
            json!(agent_sent.len()),
            json!(agent_sent.iter().map(|e| e.bytes).sum::<i64>()),
            json!(agent_sent[0].id),
        ]
    );

    // Hourly counts come back with times in the contract's format.
    let hourly = rows(
        server,
        "SELECT date_trunc('hour', received_at) AS hour, count(*) FROM receipts GROUP BY 1",
    );
    let total: i64 = hourly.iter().map(|r| r[1].as_i64().unwrap()).sum();
    assert!(total >= sent.len() as i64, "{hourly:?}");
    assert!(
        hourly[0][0].as_str().unwrap().ends_with(":00:00.000Z"),
        "{hourly:?}"
    );

    // What got no receipt is in the quarantine table.
    let q = rows(
        server,
        "SELECT reason, count(*) FROM quarantine GROUP BY reason",
    );
    assert_eq!(q, vec![vec![json!("unparseable"), json!(3)]]);
}

#[test]
fn sql_answers_over_sealed_parquet_and_the_tail_match_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, signers) = start(dir.path(), "");
    let sent = send(&server, &signers);
    let data = dir.path().join("data");
    let sealed = wait_until(
        Duration::from_secs(30),
        || Some(sealed_files(&data)).filter(|&n| n >= 3),
        || {
            format!(
                "the server wrote {} sealed segments as Parquet",
                sealed_files(&data)
            )
        },
    );
    check_answers(&server, &sent);

    // Offline, the same answer; and again with the Parquet files deleted
    // (the store is derived from the log).
    let sql = "SELECT agent_id, verdict, count(*) AS n, sum(bytes) FROM events \
               GROUP BY agent_id, verdict ORDER BY agent_id, verdict";
    let live = query(&server, AUDIT, sql).json();
    assert_eq!(server.stop(), Some(0));
    let offline = |what: &str| {
        let out = run_vigil(&[
            "query",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "json",
            sql,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<J>(&out.stdout).unwrap()
    };
    assert_eq!(offline("with the Parquet files"), live);
    std::fs::remove_dir_all(data.join("parquet")).unwrap();
    assert_eq!(offline("without the Parquet files"), live);
    let table = run_vigil(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "SELECT count(*) AS n FROM quarantine",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("n\n") && text.contains("\n3\n(1 rows)"),
        "{text}"
    );

    // A restart writes the sealed segments' files again.
    let server = Server::start_configured(
        &data,
        &dir.path().join("qa.jwks.json"),
        &dir.path().join("query.toml"),
    );
    wait_until(
        Duration::from_secs(30),
        || Some(()).filter(|_| sealed_files(&data) >= sealed),
        || "the restarted server rewrote the Parquet files".into(),
    );
    drop(server);
}

#[test]
fn only_reading_queries_run_within_their_limits_for_the_right_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (server, signers) = start(
        dir.path(),
        "[query]\nmax_rows = 50\ntimeout_s = 1\nmemory_mib = 2\n",
    );
    send(&server, &signers);
    let refused = |sql: &str, code: &str| {
        let r = query(&server, AUDIT, sql);
        assert_eq!(r.status, 400, "{sql}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{sql}: {}", r.text());
        r.json()["message"].as_str().unwrap().to_string()
    };
    let out = dir.path().join("copied.csv");
    for sql in [
        "CREATE TABLE x AS SELECT 1".to_string(),
        "INSERT INTO receipts SELECT * FROM receipts".into(),
        format!("COPY (SELECT 1) TO '{}'", out.display()),
        "SET datafusion.execution.batch_size = 1".into(),
        "DROP TABLE receipts".into(),
        "SELEC 1".into(),
        "SELECT nope FROM receipts".into(),
    ] {
        refused(&sql, "bad_query");
    }
    assert!(!out.exists(), "COPY wrote nothing");
    let m = refused("SELECT * FROM receipts", "row_limit");
    assert!(m.contains("50 rows") && m.contains("LIMIT"), "{m}");
    assert_eq!(rows(&server, "SELECT * FROM receipts LIMIT 50").len(), 50);
    let m = refused(
        "SELECT sum(length(a.event_hash || b.event_hash || c.event_hash)) \
         FROM receipts a, receipts b, receipts c",
        "time_limit",
    );
    assert!(m.contains("1 s"), "{m}");
    let m = refused(
        "SELECT a.event_id, b.event_id FROM events a, events b \
         ORDER BY a.principal, b.event_id, a.event_id",
        "memory_limit",
    );
    assert!(m.contains("memory"), "{m}");

    // Roles: audit and soc may query; no token is 401, ingest is 403, and
    // neither answer carries data.
    assert_eq!(query(&server, SOC, "SELECT 1").status, 200);
    let sql = "SELECT event_id FROM events LIMIT 1";
    let none = http(
        server.addr,
        "POST",
        "/v1/query",
        &[],
        br#"{"sql":"SELECT event_id FROM events LIMIT 1"}"#,
    );
    assert_eq!(none.status, 401);
    let wrong = query(&server, INGEST, sql);
    assert_eq!(wrong.status, 403);
    for r in [&none, &wrong] {
        assert!(!r.text().contains("q-0"), "{}", r.text());
    }
    let bad = http(
        server.addr,
        "POST",
        "/v1/query",
        &[("Authorization", &format!("Bearer {AUDIT}"))],
        b"SELECT 1",
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["message"].as_str().unwrap().contains("{\"sql\""),
        "{}",
        bad.text()
    );
}

#[test]
fn the_audit_store_in_an_s3_bucket_gives_the_same_answers() {
    let s3 = S3::start("vigil-audit");
    let store = "s3://vigil-audit/prod/audit";
    let dir = tempfile::tempdir().unwrap();
    let (signers, jwks) = fleet(dir.path(), "qa", 40, 3);
    let cfg = config(dir.path(), &format!("[query]\nstore = \"{store}\"\n"));
    let data = dir.path().join("data");
    let serve = || {
        let mut cmd = vigil();
        cmd.envs(s3.env());
        let args = [
            "--keys",
            jwks.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ];
        let mut server = Server::start_with(cmd, &data, &args);
        server.token = ADMIN.into();
        server
    };
    let mut server = serve();
    let sent = send(&server, &signers);
    let receipts = || s3.objects("prod/audit/receipts/");
    let sealed = wait_until(
        Duration::from_secs(30),
        || Some(receipts().len()).filter(|&n| n >= 3),
        || {
            format!(
                "the server wrote {} sealed segments to the bucket",
                receipts().len()
            )
        },
    );
    check_answers(&server, &sent);
    assert!(
        !data.join("parquet").exists(),
        "with a bucket configured, nothing is written to the data directory's parquet/"
    );
    let events = s3.objects("prod/audit/events/");
    assert!(
        events.len() >= sealed && events.iter().all(|(_, size)| *size > 0),
        "{events:?}"
    );

    // Offline, `vigil query --store` reads the same bucket.
    let sql = "SELECT agent_id, verdict, count(*) AS n, sum(bytes) FROM events \
               GROUP BY agent_id, verdict ORDER BY agent_id, verdict";
    let live = query(&server, AUDIT, sql).json();
    assert_eq!(server.stop(), Some(0));
    let offline = |store: &str| {
        let data = data.to_str().unwrap();
        let args = [
            "query", "--data", data, "--store", store, "--format", "json", sql,
        ];
        vigil().envs(s3.env()).args(args).output().unwrap()
    };
    let out = offline(store);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serde_json::from_slice::<J>(&out.stdout).unwrap(), live);

    // A bucket that does not exist, or a scheme Vigil does not speak: exit
    // 2 and a message that names it and says what to check.
    let out = offline("s3://no-such-bucket/audit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("s3://no-such-bucket") && err.contains("AWS_"),
        "{err}"
    );
    let out = offline("gs://vigil-audit/prod");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("s3://bucket/prefix"), "{err}");

    // A file deleted from the bucket is written again at the next start,
    // and the answers never double-count meanwhile.
    let (first_key, _) = receipts()[0].clone();
    s3.delete(&first_key);
    let out = offline(store);
    assert_eq!(
        serde_json::from_slice::<J>(&out.stdout).unwrap(),
        live,
        "{first_key} deleted"
    );
    let server = serve();
    wait_until(
        Duration::from_secs(30),
        || Some(()).filter(|_| receipts().iter().any(|(k, _)| *k == first_key)),
        || format!("the restarted server wrote {first_key} again"),
    );
    assert_eq!(query(&server, AUDIT, sql).json(), live);
}
