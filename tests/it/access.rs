//! Access from outside: every route without credentials, with an expired,
//! foreign, forged or tampered JWT, and with the wrong role answers 401 or
//! 403 and nothing else; JWTs from the configured OpenID provider (the real
//! oidc-provider, client_credentials) grant the roles their claim lists.

use std::time::Duration;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Signer as RsaSigner;
use serde_json::{json, Value as J};

use crate::services::Provider;
use crate::util::*;

const INGEST: &str = "t-static-ingest";

/// (method, path, body, whether ingest is the role it needs).
const ROUTES: &[(&str, &str, &[u8], bool)] = &[
    ("POST", "/v1/events", b"{}", true),
    ("GET", "/v1/receipts/e-1?agent_id=acc-0", b"", false),
    (
        "POST",
        "/v1/query",
        br#"{"sql":"SELECT * FROM receipts"}"#,
        false,
    ),
    ("GET", "/v1/quarantine", b"", false),
    ("GET", "/v1/anomalies", b"", false),
    ("GET", "/v1/anomalies/stream", b"", false),
    (
        "POST",
        "/v1/anomalies/a-1/feedback",
        br#"{"verdict":"confirmed"}"#,
        false,
    ),
    ("GET", "/v1/agents/acc-0/posture", b"", false),
    ("GET", "/v1/agents/acc-0/baseline", b"", false),
    ("GET", "/v1/findings", b"", false),
    (
        "GET",
        "/v1/reports/access?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z",
        b"",
        false,
    ),
    ("GET", "/v1/agents", b"", false),
    ("PUT", "/v1/agents/acc-0", br#"{"owner":"x"}"#, false),
    (
        "POST",
        "/v1/agents/acc-0/keys",
        br#"{"kid":"k","x":"x"}"#,
        false,
    ),
    ("POST", "/v1/agents/acc-0/keys/acc-0%231/revoke", b"", false),
    ("POST", "/v1/agents/acc-0/decommission", b"", false),
    (
        "POST",
        "/v1/agents/acc-0/attest",
        br#"{"needed":true,"by":"x"}"#,
        false,
    ),
    ("POST", "/v1/agents/acc-0/suspend", b"", false),
    ("POST", "/v1/agents/acc-0/restore", b"", false),
    ("GET", "/metrics", b"", false),
];

fn b64url(b: &[u8]) -> String {
    vigil::event::signature::b64url(b)
}

/// A JWT with these header and claims, signed by `sign`.
fn jwt(header: &J, claims: &J, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let head = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(header).unwrap()),
        b64url(&serde_json::to_vec(claims).unwrap())
    );
    let sig = sign(head.as_bytes());
    format!("{head}.{}", b64url(&sig))
}

fn claims_of(token: &str) -> J {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&vigil::event::signature::b64url_decode(p).unwrap()).unwrap()
}

#[test]
fn every_route_refuses_missing_expired_foreign_and_forged_credentials() {
    let provider = Provider::start("vigil", "unused-ciba-secret", None);
    let foreign = Provider::start("vigil", "unused-ciba-secret", None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("access.toml");
    std::fs::write(
        &cfg,
        format!(
            "[detection]\nenabled = false\n[[tokens]]\nname = \"siem\"\ntoken = \"{INGEST}\"\nroles = [\"ingest\"]\n\
             [oidc]\nissuer = \"{}\"\naudience = \"https://vigil.example/\"\nleeway_s = 0\n",
            provider.issuer
        ),
    )
    .unwrap();
    let (signers, jwks) = fleet(dir.path(), "acc", 50, 1);
    let server = Server::start_configured(&dir.path().join("data"), &jwks, &cfg);
    let call = |token: Option<&str>, method: &str, path: &str, body: &[u8]| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        http(server.addr, method, path, &h, body)
    };

    // Tokens from the provider grant what their claim lists.
    let soc = provider.console_token("vigil-soc");
    let audit = provider.console_token("vigil-audit");
    let ingest = provider.console_token("vigil-ingest");
    let s = &signers[0];
    let event = s.sign(&s.event("e-1", json!({})));
    assert_eq!(
        call(Some(&ingest), "POST", "/v1/events", &event).status,
        200
    );
    assert_eq!(call(Some(&soc), "GET", "/v1/anomalies", b"").status, 200);
    let sql = br#"{"sql":"SELECT count(*) FROM receipts"}"#;
    assert_eq!(call(Some(&audit), "POST", "/v1/query", sql).status, 200);
    assert_eq!(call(Some(&soc), "POST", "/v1/query", sql).status, 200);
    assert_eq!(
        call(Some(&audit), "GET", "/v1/receipts/e-1?agent_id=acc-0", b"").status,
        200
    );

    // Bad credentials of every kind.
    let short = provider.console_token("vigil-short");
    let from_elsewhere = foreign.console_token("vigil-soc");
    let good = claims_of(&soc);
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": "keystore-CHANGE-ME"});
    let mut admin = good.clone();
    admin["vigil_roles"] = json!(["admin"]);
    let sig_of_soc = soc.split('.').nth(2).unwrap();
    let tampered = format!(
        "{}.{}",
        jwt(&header, &admin, |_| Vec::new())
            .rsplit_once('.')
            .unwrap()
            .0,
        sig_of_soc
    );
    let other_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let sign_other = |m: &[u8]| {
        let mut s = RsaSigner::new(MessageDigest::sha256(), &other_key).unwrap();
        s.sign_oneshot_to_vec(m).unwrap()
    };
    let forged = jwt(&header, &admin, sign_other);
    let unsigned = jwt(
        &json!({"alg": "none", "kid": "keystore-CHANGE-ME"}),
        &admin,
        |_| Vec::new(),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let bad: Vec<(&str, String)> = vec![
        ("expired", short),
        ("from another issuer", from_elsewhere),
        ("payload changed after signing", tampered),
        ("signed by another key", forged),
        ("alg none", unsigned),
        ("not a JWT", "not-a-token".into()),
    ];
    for (method, path, body, ingest_route) in ROUTES {
        let none = call(None, method, path, body);
        assert_eq!(none.status, 401, "{method} {path} without a token");
        for (what, token) in &bad {
            let r = call(Some(token), method, path, body);
            assert_eq!(
                r.status,
                401,
                "{method} {path} with a token {what}: {}",
                r.text()
            );
        }
        let wrong = if *ingest_route { &soc } else { &ingest };
        let r = call(Some(wrong), method, path, body);
        assert_eq!(
            r.status,
            403,
            "{method} {path} with the wrong role: {}",
            r.text()
        );
        for r in [&none, &r] {
            let j = r.json();
            assert!(
                j.as_object().is_some_and(|o| o.len() == 2) && j["error"].is_string(),
                "{method} {path}: only an error, nothing else: {}",
                r.text()
            );
        }
    }
    // The dashboard's page: the sign-in page with 401, 403 without soc.
    assert_eq!(call(None, "GET", "/", b"").status, 401);
    for (what, token) in &bad {
        assert_eq!(
            call(Some(token), "GET", "/", b"").status,
            401,
            "GET / with a token {what}"
        );
    }
    assert_eq!(call(Some(&ingest), "GET", "/", b"").status, 403);
    assert_eq!(call(Some(&soc), "GET", "/", b"").status, 200);
    // The static token still works beside the issuer.
    let event = s.sign(&s.event("e-2", json!({})));
    let r = call(Some(INGEST), "POST", "/v1/events", &event);
    assert_eq!(r.status, 200, "{}", r.text());
}
