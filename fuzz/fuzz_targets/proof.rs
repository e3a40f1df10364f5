//! The tlog-proof, signed note and checkpoint parsers: any text is parsed
//! or refused; a proof is verified against a fixed key (the seeds hold the
//! contract's real proof and checkpoints, which the mutations start from).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::log::note::{verifier_key, CheckpointBody, NoteVerifier};
use vigil::log::proof::{parse_proof, verify_proof};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_proof(text);
    let _ = CheckpointBody::parse(text);
    let _ = NoteVerifier::parse(text);
    // The contract's test log key (vectors: log.log_key_seed_hex).
    let seed: [u8; 32] = std::array::from_fn(|i| 0x64 + i as u8);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let verifier = NoteVerifier::parse(&verifier_key("vigil.example/test", &key))
        .expect("a verifier key made here parses");
    let _ = verifier.verify(text);
    let _ = verify_proof(text, &verifier, None);
});
