//! Ed25519 with the contract's strict semantics, and the encodings around it.
//!
//! Valid means what every common verifier accepts (contract section 1):
//! `S < L`, canonical `A` and `R`, neither `A` nor `R` of small order, and
//! the cofactorless equation `[S]B = R + [k]A` (ed25519-dalek's
//! `verify_strict`, libsodium's `crypto_sign_verify_detached`). That is
//! split in two here:
//!
//! - [`parse_public_key`], when a key is loaded, refuses a non-canonical `A`
//!   and an `A` of small order;
//! - [`verify`] refuses an `R` whose bytes are one of the eight canonical
//!   small-order encodings (a comparison, no curve arithmetic), refuses
//!   `S >= L`, and checks the cofactorless equation by computing
//!   `[S]B - [k]A` and comparing its canonical encoding with the
//!   signature's `R` bytes, which also refuses any non-canonical or
//!   invalid `R`.
//!
//! Batch verification is not used: common batch verifiers check a
//! cofactored equation and accept signatures whose `R` has a small-order
//! component, which the contract forbids.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// Decodes canonical base64url without padding (unused bits must be zero).
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Encodes base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Encodes standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64 with padding, strictly.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

/// Why an event's `signature` member does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureEncodingError {
    /// Not 86 characters long (the length found).
    #[error("signature must be exactly 86 base64url characters without padding, not {0}")]
    Length(usize),
    /// Not canonical base64url.
    #[error(
        "signature is not canonical base64url (alphabet A-Z a-z 0-9 - _, no padding, \
         unused trailing bits zero)"
    )]
    NotBase64url,
}

/// Decodes an event's `signature` member: exactly 86 canonical base64url
/// characters holding 64 bytes.
pub fn decode_signature(s: &str) -> Result<[u8; 64], SignatureEncodingError> {
    if s.len() != 86 {
        return Err(SignatureEncodingError::Length(s.len()));
    }
    b64url_decode(s)
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or(SignatureEncodingError::NotBase64url)
}

/// Why bytes are not an Ed25519 public key the contract takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// Not 32 bytes (the length found).
    #[error("an Ed25519 public key is 32 bytes, not {0}")]
    Length(usize),
    /// The bytes decode to no point.
    #[error("the public key is not a point on Ed25519")]
    NotOnCurve,
    /// A point, but not in its canonical encoding.
    #[error("the public key is not canonically encoded")]
    NotCanonical,
    /// A point of small order, which any signature could match.
    #[error("the public key has small order (a weak key)")]
    SmallOrder,
    /// Refused by ed25519-dalek (its reason).
    #[error("the public key is invalid: {0}")]
    Invalid(String),
}

/// Parses a 32-byte Ed25519 public key, refusing non-canonical encodings and
/// points of small order (RFC 8032 decoding plus the contract's rule).
pub fn parse_public_key(bytes: &[u8]) -> Result<VerifyingKey, PublicKeyError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| PublicKeyError::Length(bytes.len()))?;
    let point = CompressedEdwardsY(arr)
        .decompress()
        .ok_or(PublicKeyError::NotOnCurve)?;
    if point.compress().to_bytes() != arr {
        return Err(PublicKeyError::NotCanonical);
    }
    if point.is_small_order() {
        return Err(PublicKeyError::SmallOrder);
    }
    VerifyingKey::from_bytes(&arr).map_err(|e| PublicKeyError::Invalid(e.to_string()))
}

/// The canonical encodings of the eight points of small order (the
/// 8-torsion subgroup). A non-canonical encoding of one of them never
/// matches in [`verify`], which compares `R` with a canonical encoding.
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 8] = [
    // The identity (order 1).
    hex32("0100000000000000000000000000000000000000000000000000000000000000"),
    // (0, -1), order 2.
    hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    // (+-sqrt(-1), 0), order 4.
    hex32("0000000000000000000000000000000000000000000000000000000000000000"),
    hex32("0000000000000000000000000000000000000000000000000000000000000080"),
    // Order 8.
    hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
];

const fn hex32(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not a lowercase hex digit"),
    }
}

/// Whether `r` is the canonical encoding of a point of small order.
pub fn is_small_order_encoding(r: &[u8]) -> bool {
    SMALL_ORDER_ENCODINGS.iter().any(|s| s[..] == *r)
}

/// Verifies `sig` over `msg` with the contract's semantics; `key` must come
/// from [`parse_public_key`] (see the module docs).
pub fn verify(key: &VerifyingKey, msg: &[u8], sig: &[u8; 64]) -> bool {
    !is_small_order_encoding(&sig[..32]) && key.verify(msg, &Signature::from_bytes(sig)).is_ok()
}

/// Signs `msg` (Ed25519 is deterministic).
pub fn sign(key: &SigningKey, msg: &[u8]) -> [u8; 64] {
    key.sign(msg).to_bytes()
}

/// A fresh random signing key from the operating system's generator.
pub fn generate_key() -> std::io::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(std::io::Error::other)?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1, tests 1-3.
    #[test]
    fn rfc8032_vectors() {
        let cases = [
            ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "",
             "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
            ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", "72",
             "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
            ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7", "af82",
             "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
        ];
        for (seed, msg, sig) in cases {
            let key = SigningKey::from_bytes(&hex::decode(seed).unwrap().try_into().unwrap());
            let msg = hex::decode(msg).unwrap();
            let want: [u8; 64] = hex::decode(sig).unwrap().try_into().unwrap();
            assert_eq!(sign(&key, &msg), want);
            let public = parse_public_key(key.verifying_key().as_bytes()).unwrap();
            assert!(verify(&public, &msg, &want));
            let mut bad = want;
            bad[63] ^= 0x01;
            assert!(!verify(&public, &msg, &bad));
        }
    }

    #[test]
    fn refuses_weak_and_noncanonical_keys() {
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            parse_public_key(&identity).unwrap_err(),
            PublicKeyError::SmallOrder
        );
        // y = p + 1 encodes the same point as y = 1, non-canonically.
        let mut noncanon = [0xffu8; 32];
        noncanon[0] = 0xee;
        noncanon[31] = 0x7f;
        assert_eq!(
            parse_public_key(&noncanon).unwrap_err(),
            PublicKeyError::NotCanonical
        );
    }

    #[test]
    fn the_small_order_list_is_the_eight_torsion_subgroup() {
        let mut points = Vec::new();
        for enc in SMALL_ORDER_ENCODINGS {
            let p = CompressedEdwardsY(enc).decompress().expect("on the curve");
            assert!(p.is_small_order(), "{}", crate::hexenc::encode(enc));
            assert_eq!(p.compress().to_bytes(), enc, "canonical");
            assert!(!points.contains(&p), "distinct");
            points.push(p);
        }
    }

    #[test]
    fn refuses_an_identity_r_that_satisfies_the_equation() {
        // R = identity and S = k*a: [S]B = [k]A = R + [k]A holds.
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = parse_public_key(key.verifying_key().as_bytes()).unwrap();
        let msg = b"forged by the key holder";
        let mut r = [0u8; 32];
        r[0] = 1;
        let k = {
            use sha2::{Digest, Sha512};
            let mut h = Sha512::new();
            h.update(r);
            h.update(public.as_bytes());
            h.update(msg);
            curve25519_dalek::Scalar::from_bytes_mod_order_wide(&h.finalize().into())
        };
        let s = k * key.to_scalar();
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice(s.as_bytes());
        assert!(
            public.verify(msg, &Signature::from_bytes(&sig)).is_ok(),
            "the cofactorless equation holds"
        );
        assert!(public
            .verify_strict(msg, &Signature::from_bytes(&sig))
            .is_err());
        assert!(!verify(&public, msg, &sig));
    }

    #[test]
    fn signature_encoding_is_strict() {
        let ok = "A".repeat(86);
        assert!(decode_signature(&ok).is_ok());
        assert!(decode_signature(&format!("{}B", "A".repeat(85))).is_err());
        assert!(decode_signature(&format!("{}==", "A".repeat(86))).is_err());
    }
}
