//! The JWKS loader: any document is a key set or a refusal with a reason,
//! and every key it takes is an I-JSON Ed25519 key naming its agent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = vigil::keys::parse_jwks(data) {
        for (key, _) in &doc.keys {
            assert!(!key.agent_id.is_empty());
            vigil::json::parse(key.jwk.to_string().as_bytes()).expect("a key taken is I-JSON");
        }
    }
});
