//! Known answers from shared/vectors/contract-v1.json, byte for byte:
//! through the library where a value depends on the clock or a generated
//! key, through the binary everywhere else.

use ed25519_dalek::SigningKey;
use serde_json::Value as J;
use vigil::event::signature::{b64, b64_decode};
use vigil::event::Event;
use vigil::log::merkle::{leaf_hash, verify_consistency, verify_inclusion, Tree};
use vigil::log::note::{key_id, NoteSigner};
use vigil::log::proof::build_proof;
use vigil::log::receipt::{chain_hash, ReceiptBody};

use crate::util::*;

fn h(s: &J) -> [u8; 32] {
    hex::decode(s.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn events_canonical_bytes_and_hashes() {
    let v = vectors();
    for e in v["events"].as_array().unwrap() {
        let raw = serde_json::to_vec(&e["event"]).unwrap();
        let ev = Event::parse(&raw).unwrap();
        assert_eq!(
            String::from_utf8(ev.canonical.without.clone()).unwrap(),
            e["jcs_without_signature"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(ev.content_hash),
            e["content_hash"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(ev.event_hash),
            e["event_hash"].as_str().unwrap()
        );
    }
}

#[test]
fn merkle_roots_and_proofs() {
    let v = &vectors()["merkle"];
    let mut tree = Tree::new();
    for (i, d) in v["leaf_data"].as_array().unwrap().iter().enumerate() {
        let leaf = leaf_hash(d.as_str().unwrap().as_bytes());
        assert_eq!(hex::encode(leaf), v["leaf_hashes"][i].as_str().unwrap());
        tree.push(leaf);
    }
    for (size, root) in v["roots"].as_object().unwrap() {
        assert_eq!(
            hex::encode(tree.root(size.parse().unwrap())),
            root.as_str().unwrap(),
            "root of {size}"
        );
    }
    for p in v["inclusion"].as_array().unwrap() {
        let (i, n) = (p["index"].as_u64().unwrap(), p["size"].as_u64().unwrap());
        let want: Vec<[u8; 32]> = p["path"].as_array().unwrap().iter().map(h).collect();
        assert_eq!(tree.inclusion_proof(i, n), want, "inclusion {i} in {n}");
        assert!(verify_inclusion(
            i,
            n,
            &tree.leaf(i).unwrap(),
            &want,
            &tree.root(n)
        ));
    }
    for p in v["consistency"].as_array().unwrap() {
        let (m, n) = (p["from"].as_u64().unwrap(), p["to"].as_u64().unwrap());
        let want: Vec<[u8; 32]> = p["path"].as_array().unwrap().iter().map(h).collect();
        assert_eq!(tree.consistency_proof(m, n), want, "consistency {m} -> {n}");
        assert!(verify_consistency(
            m,
            n,
            &tree.root(m),
            &tree.root(n),
            &want
        ));
    }
}

fn log_key() -> SigningKey {
    let seed = hex::decode(vectors()["log"]["log_key_seed_hex"].as_str().unwrap()).unwrap();
    SigningKey::from_bytes(&seed.try_into().unwrap())
}

#[test]
fn receipts_chain_checkpoints_and_proof() {
    let v = vectors();
    let log = &v["log"];
    let origin = log["origin"].as_str().unwrap();
    let signer = NoteSigner::new(origin, log_key());
    assert_eq!(signer.verifier_key(), log["verifier_key"].as_str().unwrap());
    assert_eq!(
        hex::encode(key_id(origin, &log_key().verifying_key())),
        log["key_id_hex"].as_str().unwrap()
    );
    let mut tree = Tree::new();
    let mut prev = [0u8; 32];
    let mut bodies = Vec::new();
    for e in log["entries"].as_array().unwrap() {
        let body: ReceiptBody = serde_json::from_value(e["body"].clone()).unwrap();
        let jcs = body.to_jcs();
        assert_eq!(
            String::from_utf8(jcs.clone()).unwrap(),
            e["body_jcs"].as_str().unwrap()
        );
        assert_eq!(body.prev, hex::encode(prev));
        let leaf = vigil::log::receipt::leaf_hash(&jcs);
        assert_eq!(hex::encode(leaf), e["leaf_hash"].as_str().unwrap());
        prev = chain_hash(&prev, &leaf);
        assert_eq!(hex::encode(prev), e["chain"].as_str().unwrap());
        let ev = Event::parse(&serde_json::to_vec(&e["event"]).unwrap()).unwrap();
        assert_eq!(hex::encode(ev.event_hash), body.event_hash);
        tree.push(leaf);
        bodies.push(jcs);
    }
    for (size, key) in [(4u64, "checkpoint_4"), (7, "checkpoint_7")] {
        let body = vigil::log::note::CheckpointBody {
            origin: origin.into(),
            size,
            root: tree.root(size),
        };
        assert_eq!(
            signer.sign(&body.to_text()),
            log[key].as_str().unwrap(),
            "{key}"
        );
    }
    let want: Vec<[u8; 32]> = log["consistency_4_7"]
        .as_array()
        .unwrap()
        .iter()
        .map(h)
        .collect();
    assert_eq!(tree.consistency_proof(4, 7), want);
    let proof = build_proof(
        &bodies[3],
        3,
        &tree.inclusion_proof(3, 7),
        log["checkpoint_7"].as_str().unwrap(),
    );
    assert_eq!(proof, log["tlog_proof_index_3"].as_str().unwrap());
}

#[test]
fn verify_proof_binary_accepts_the_vector_and_refuses_alterations() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let vkey = v["log"]["verifier_key"].as_str().unwrap();
    let proof = v["log"]["tlog_proof_index_3"].as_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ok = run_vigil(&["verify-proof", &write("ok.proof", proof), "--vkey", vkey]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The event itself, given, must match the receipt's event_hash.
    let event = serde_json::to_vec(&v["log"]["entries"][3]["event"]).unwrap();
    std::fs::write(dir.path().join("event.json"), &event).unwrap();
    let with_event = run_vigil(&[
        "verify-proof",
        &write("ok2.proof", proof),
        "--vkey",
        vkey,
        "--event",
        &dir.path().join("event.json").display().to_string(),
    ]);
    assert_eq!(with_event.status.code(), Some(0));
    let other_event = serde_json::to_vec(&v["log"]["entries"][2]["event"]).unwrap();
    std::fs::write(dir.path().join("other.json"), &other_event).unwrap();
    let wrong_event = run_vigil(&[
        "verify-proof",
        &write("ok3.proof", proof),
        "--vkey",
        vkey,
        "--event",
        &dir.path().join("other.json").display().to_string(),
    ]);
    assert_eq!(wrong_event.status.code(), Some(1));
    // A vkey file works too.
    let vk_file = write("log.vkey", &format!("{vkey}\n"));
    assert_eq!(
        run_vigil(&[
            "verify-proof",
            &write("ok4.proof", proof),
            "--vkey",
            &vk_file
        ])
        .status
        .code(),
        Some(0)
    );

    let lines: Vec<&str> = proof.split('\n').collect();
    // Alter the receipt body (extra), a proof hash, the checkpoint's root, its signature.
    let body = b64_decode(lines[1].strip_prefix("extra ").unwrap()).unwrap();
    let forged_body = String::from_utf8(body)
        .unwrap()
        .replace("accepted", "rejected:schema");
    let cases = [
        (
            "body",
            proof.replace(lines[1], &format!("extra {}", b64(forged_body.as_bytes()))),
        ),
        ("index", proof.replace("index 3", "index 2")),
        ("hash", proof.replace(lines[3], &b64(&[0u8; 32]))),
        (
            "root",
            proof.replace(
                "KBbrrUzLnuVrShIuc05oNBOQ+BeHUANiQk3TF9EW0CQ=",
                &b64(&[1u8; 32]),
            ),
        ),
        ("signature", {
            let sig_line = lines.iter().find(|l| l.starts_with('\u{2014}')).unwrap();
            let mut blob = b64_decode(sig_line.rsplit(' ').next().unwrap()).unwrap();
            blob[10] ^= 1;
            proof.replace(
                sig_line,
                &format!("\u{2014} vigil.example/test {}", b64(&blob)),
            )
        }),
    ];
    for (what, text) in cases {
        let out = run_vigil(&[
            "verify-proof",
            &write(&format!("{what}.proof"), &text),
            "--vkey",
            vkey,
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "altered {what} must be refused: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("INVALID"),
            "{what}"
        );
    }
    // Another log's key.
    let other =
        NoteSigner::new("vigil.example/test", SigningKey::from_bytes(&[9; 32])).verifier_key();
    assert_eq!(
        run_vigil(&["verify-proof", &write("k.proof", proof), "--vkey", &other])
            .status
            .code(),
        Some(1)
    );
    // Usage errors are 2.
    assert_eq!(
        run_vigil(&["verify-proof", "/nonexistent/proof", "--vkey", vkey])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run_vigil(&[
            "verify-proof",
            &write("u.proof", proof),
            "--vkey",
            "not-a-key"
        ])
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn server_gives_the_vector_log_its_verdicts_and_hashes() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let jwks = vector_jwks(dir.path());
    let data = dir.path().join("data");
    let mut server = Server::start(
        &data,
        &[
            "--keys",
            jwks.to_str().unwrap(),
            "--origin",
            "vigil.example/test",
        ],
    );
    // The log first records its keys (contract section 6a): the vector
    // log's receipts follow them, numbered from there.
    let base = server.log_size();
    let entries = v["log"]["entries"].as_array().unwrap();
    let lines: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| serde_json::to_vec(&e["event"]).unwrap())
        .collect();
    let answer = server.post_ndjson(&lines);
    for (i, (r, e)) in answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(entries)
        .enumerate()
    {
        let receipt = &r["receipt"];
        assert_eq!(receipt["verdict"], e["body"]["verdict"], "entry {i}");
        assert_eq!(receipt["event_hash"], e["body"]["event_hash"], "entry {i}");
        assert_eq!(
            receipt["index"].as_u64().unwrap(),
            base + e["body"]["index"].as_u64().unwrap(),
            "entry {i}"
        );
        assert_eq!(receipt["log"], "vigil.example/test");
        for f in ["event_id", "agent_id", "key_id", "correlation_id", "spec"] {
            assert_eq!(receipt[f], e["body"][f], "entry {i} {f}");
        }
    }
    assert_eq!(server.stop(), Some(0));
    assert_log_verifies(&data);
}

#[test]
fn server_refuses_every_negative_vector_as_expected() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let jwks = vector_jwks(dir.path());
    let server = Server::start(
        &dir.path().join("data"),
        &["--keys", jwks.to_str().unwrap()],
    );
    for n in v["negative"].as_array().unwrap() {
        let raw = n["raw"].as_str().unwrap();
        let expect: Vec<&str> = n["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        if !raw.starts_with('{') {
            continue;
        }
        let r = server.req(
            "POST",
            "/v1/events",
            Some("application/json"),
            raw.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let res = &r.json()["results"][0];
        let got = format!(
            "{}:{}",
            res["status"].as_str().unwrap(),
            res["reason"].as_str().unwrap_or("")
        );
        assert!(
            expect.contains(&got.as_str()),
            "{}: got {got}, expected one of {expect:?}",
            n["why"]
        );
        let quarantined = got.ends_with(":unparseable") || got.ends_with(":unknown_agent");
        assert_eq!(
            res.get("receipt").is_some(),
            !quarantined,
            "{}: receipt presence",
            n["why"]
        );
        assert!(
            res["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: an error says what is wrong",
            n["why"]
        );
    }
}

#[test]
fn origin_with_a_plus_sign_exits_2() {
    let v = vectors();
    let neg = v["negative"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["expect"][0] == "vigil serve --origin exits 2")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run_vigil(&[
        "serve",
        "--data",
        dir.path().join("d").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--origin",
        neg["raw"].as_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains('+'));
}
