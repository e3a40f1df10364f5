//! Export bundles from outside: `vigil export` a time range of a real
//! server's log, `vigil verify --bundle` it, compare its NDJSON with SQL
//! answers, and change it in every way an attacker might (a byte in any
//! file; content with the manifest rewritten to match; records dropped or
//! reordered).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value as J};

use crate::util::*;

const FILES: [&str; 10] = [
    "events.ndjson",
    "receipts.ndjson",
    "events.parquet",
    "receipts.parquet",
    "checkpoint.txt",
    "log-key.txt",
    "keys.json",
    "proof.json",
    "findings.json",
    "manifest.json",
];

/// A change to a bundle, and what `verify --bundle` must name.
struct Attack {
    what: &'static str,
    change: fn(&Path),
    named: &'static str,
}

fn now() -> String {
    vigil::time::Timestamp::now().to_rfc3339_millis()
}

/// Sends `n` events from `from` (every 15th forged); returns their ids.
fn send(server: &Server, signers: &[Signer], from: usize, n: usize) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    for i in from..from + n {
        let s = &signers[i % signers.len()];
        let id = format!("x-{i:05}");
        let mut e = s.sign(&s.event(&id, json!({"resource": format!("db://r/{}", i % 4)})));
        if i % 15 == 7 {
            e = String::from_utf8(e)
                .unwrap()
                .replace("db://r/", "db://x/")
                .into_bytes();
        }
        lines.push(e);
        ids.push((s.agent.clone(), id));
    }
    server.post_ndjson(&lines);
    ids
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = run_vigil(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verify(bundle: &Path) -> (Option<i32>, String, String) {
    run(&["verify", "--bundle", bundle.to_str().unwrap()])
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in FILES {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// Rewrites the manifest's hashes (and `edit` its other members) to match
/// the files: what an attacker who can write the bundle would do.
fn reseal(bundle: &Path, edit: impl FnOnce(&mut J)) {
    let mut m: J =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    for f in &FILES[..9] {
        let bytes = std::fs::read(bundle.join(f)).unwrap();
        m["files"][*f] = J::String(hex::encode(sha2_256(&bytes)));
    }
    edit(&mut m);
    std::fs::write(
        bundle.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

fn sha2_256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

fn lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn an_exported_range_verifies_offline_and_every_change_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("export.toml");
    std::fs::write(
        &cfg,
        "[server]\nsegment_max_bytes = 32768\n[detection]\nenabled = false\n",
    )
    .unwrap();
    let (signers, jwks) = fleet(dir.path(), "ex", 90, 3);
    let data = dir.path().join("data");
    let mut server = Server::start_configured(&data, &jwks, &cfg);
    send(&server, &signers, 0, 60);
    std::thread::sleep(Duration::from_millis(1100));
    let from = now();
    std::thread::sleep(Duration::from_millis(50));
    let middle = send(&server, &signers, 60, 150);
    std::thread::sleep(Duration::from_millis(1100));
    let to = now();
    std::thread::sleep(Duration::from_millis(50));
    send(&server, &signers, 210, 40);
    assert_eq!(server.stop(), Some(0));
    let d = data.to_str().unwrap();

    let bundle = dir.path().join("bundle");
    let b = bundle.to_str().unwrap();
    let (code, out, err) = run(&[
        "export", "--data", d, "--from", &from, "--to", &to, "--out", b,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = verify(&bundle);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("bundle valid") && out.contains("own key"),
        "{out}"
    );
    let vkey = std::fs::read_to_string(data.join("log-keys.txt")).unwrap();
    let (code, out, _) = run(&[
        "verify",
        "--bundle",
        b,
        "--vkey",
        vkey.lines().next().unwrap(),
    ]);
    assert_eq!(code, Some(0));
    assert!(out.contains("the key you pinned"), "{out}");

    // The bundle holds exactly the middle range, and the SQL answers over
    // the log agree with counts computed from its NDJSON.
    let receipts: Vec<J> = lines(&bundle.join("receipts.ndjson"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, String)> = receipts
        .iter()
        .map(|r| {
            (
                r["agent_id"].as_str().unwrap().into(),
                r["event_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(got, middle);
    let mut counts = std::collections::BTreeMap::<(String, String), i64>::new();
    for r in &receipts {
        *counts
            .entry((
                r["agent_id"].as_str().unwrap().into(),
                r["verdict"].as_str().unwrap().into(),
            ))
            .or_default() += 1;
    }
    assert_eq!(counts.values().sum::<i64>(), 150);
    assert_eq!(
        counts
            .iter()
            .filter(|((_, v), _)| v == "rejected:bad_signature")
            .map(|(_, n)| n)
            .sum::<i64>(),
        10
    );
    let m: J =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let sql = format!(
        "SELECT agent_id, verdict, count(*) FROM receipts WHERE log_index >= {} AND log_index < {} GROUP BY 1, 2 ORDER BY 1, 2",
        m["first_index"], m["end_index"]
    );
    let (code, out, err) = run(&["query", "--data", d, "--format", "json", &sql]);
    assert_eq!(code, Some(0), "{err}");
    let answer: J = serde_json::from_str(&out).unwrap();
    let want: Vec<J> = counts.iter().map(|((a, v), n)| json!([a, v, n])).collect();
    assert_eq!(answer["rows"], J::Array(want));

    // The hygiene findings as of the range's end come along (the test
    // fleet's keys never expire and name no owner).
    let findings: J =
        serde_json::from_slice(&std::fs::read(bundle.join("findings.json")).unwrap()).unwrap();
    let kinds: Vec<&J> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["kind"])
        .collect();
    let expected = ["key_without_expiry", "ownerless_agent"];
    assert!(
        kinds.len() == 6 && kinds.iter().all(|k| expected.iter().any(|e| *k == e)),
        "{findings}"
    );

    // One byte changed in any file is found, and the file named.
    for f in FILES {
        let t = dir.path().join(format!("flip-{f}"));
        copy(&bundle, &t);
        let mut bytes = std::fs::read(t.join(f)).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(t.join(f), bytes).unwrap();
        let (code, out, err) = verify(&t);
        assert_eq!(code, Some(1), "{f}: {out}{err}");
        if f != "manifest.json" {
            assert!(err.contains(f), "{f}: {err}");
        }
    }

    // Content changed and the manifest rewritten to match.
    let attacks: [Attack; 4] = [
        Attack {
            what: "an accepted event altered",
            change: |t: &Path| {
                let mut l = lines(&t.join("events.ndjson"));
                l[0] = l[0].replace("db://r/", "db://z/");
                std::fs::write(t.join("events.ndjson"), l.join("\n") + "\n").unwrap();
                reseal(t, |_| {});
            },
            named: "events.ndjson line 1",
        },
        Attack {
            what: "a rejection turned into an acceptance",
            change: |t: &Path| {
                let mut l = lines(&t.join("receipts.ndjson"));
                let i = l
                    .iter()
                    .position(|r| r.contains("rejected:bad_signature"))
                    .unwrap();
                l[i] = l[i].replace("rejected:bad_signature", "accepted");
                std::fs::write(t.join("receipts.ndjson"), l.join("\n") + "\n").unwrap();
                reseal(t, |_| {});
            },
            named: "receipts.ndjson line",
        },
        Attack {
            what: "the last record dropped",
            change: |t: &Path| {
                for f in ["events.ndjson", "receipts.ndjson"] {
                    let mut l = lines(&t.join(f));
                    l.pop();
                    std::fs::write(t.join(f), l.join("\n") + "\n").unwrap();
                }
                let mut p: J =
                    serde_json::from_slice(&std::fs::read(t.join("proof.json")).unwrap()).unwrap();
                p["end"] = json!(p["end"].as_u64().unwrap() - 1);
                std::fs::write(t.join("proof.json"), serde_json::to_vec(&p).unwrap()).unwrap();
                reseal(t, |m| {
                    let end = m["end_index"].as_u64().unwrap() - 1;
                    m["end_index"] = json!(end);
                    m["records"] = json!(m["records"].as_u64().unwrap() - 1);
                });
            },
            named: "do not lead to the checkpoint's root",
        },
        Attack {
            what: "two records swapped",
            change: |t: &Path| {
                for f in ["events.ndjson", "receipts.ndjson"] {
                    let mut l = lines(&t.join(f));
                    l.swap(3, 4);
                    std::fs::write(t.join(f), l.join("\n") + "\n").unwrap();
                }
                reseal(t, |_| {});
            },
            named: "receipts.ndjson line 4",
        },
    ];
    for Attack {
        what,
        change,
        named,
    } in attacks
    {
        let t = dir
            .path()
            .join(format!("attack-{}", what.replace(' ', "-")));
        copy(&bundle, &t);
        change(&t);
        let (code, out, err) = verify(&t);
        assert_eq!(code, Some(1), "{what}: {out}{err}");
        assert!(err.contains(named), "{what}: {err}");
    }

    // Refusals: nothing in the range; a directory that is not empty.
    let late = dir.path().join("late");
    let (code, _, err) = run(&[
        "export",
        "--data",
        d,
        "--from",
        "2099-01-01T00:00:00Z",
        "--out",
        late.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no record"), "{err}");
    let (code, _, err) = run(&["export", "--data", d, "--out", b]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not empty"), "{err}");
    // The whole log exports and verifies too (its first records establish
    // the pipeline's key).
    let all = dir.path().join("all");
    let (code, out, err) = run(&["export", "--data", d, "--out", all.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = verify(&all);
    assert_eq!(code, Some(0), "{out}{err}");
}
