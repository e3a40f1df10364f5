//! Private keys as RFC 8037 JWKs (`vigil keygen`, the log key, the
//! pipeline's event key).

use ed25519_dalek::SigningKey;
use serde_json::{json, Value as J};

use crate::event::signature::{b64url, b64url_decode};

/// An Ed25519 private key with its JWK identity.
#[derive(Clone)]
pub struct PrivateJwk {
    /// The key id.
    pub kid: String,
    /// The agent the key signs for, when it is an agent key.
    pub agent_id: Option<String>,
    /// The key itself.
    pub key: SigningKey,
}

impl std::fmt::Debug for PrivateJwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateJwk")
            .field("kid", &self.kid)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// Why a private JWK is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivateJwkError {
    /// Not JSON (the parser's reason).
    #[error("not JSON: {0}")]
    NotJson(String),
    /// Another kind of key.
    #[error("not an Ed25519 JWK (kty \"OKP\", crv \"Ed25519\")")]
    NotEd25519,
    /// No private part.
    #[error("the JWK has no private key (d)")]
    NoD,
    /// `d` is not 32 bytes of base64url.
    #[error("d is not base64url of 32 bytes")]
    BadD,
    /// `x` is another key's.
    #[error("x does not match d: the file holds an inconsistent key")]
    XMismatch,
}

impl PrivateJwk {
    /// The private JWK (with `d`) as JSON text.
    pub fn to_json(&self) -> String {
        let mut j = self.public_jwk();
        j["d"] = J::String(b64url(self.key.as_bytes()));
        serde_json::to_string_pretty(&j).expect("a JWK always serialises") + "\n"
    }

    /// The public JWK (no `d`).
    pub fn public_jwk(&self) -> J {
        let mut j = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": self.kid,
            "x": b64url(self.key.verifying_key().as_bytes()),
        });
        if let Some(a) = &self.agent_id {
            j["agent_id"] = J::String(a.clone());
        }
        j
    }

    /// Parses a private JWK, checking that `x` (when present) matches `d`.
    pub fn parse(text: &[u8]) -> Result<PrivateJwk, PrivateJwkError> {
        let j: J =
            serde_json::from_slice(text).map_err(|e| PrivateJwkError::NotJson(e.to_string()))?;
        if j["kty"] != "OKP" || j["crv"] != "Ed25519" {
            return Err(PrivateJwkError::NotEd25519);
        }
        let d = j["d"].as_str().ok_or(PrivateJwkError::NoD)?;
        let seed: [u8; 32] = b64url_decode(d)
            .and_then(|b| b.try_into().ok())
            .ok_or(PrivateJwkError::BadD)?;
        let key = SigningKey::from_bytes(&seed);
        if let Some(x) = j["x"].as_str() {
            if b64url_decode(x).as_deref() != Some(key.verifying_key().as_bytes().as_slice()) {
                return Err(PrivateJwkError::XMismatch);
            }
        }
        Ok(PrivateJwk {
            kid: j["kid"].as_str().unwrap_or("").to_string(),
            agent_id: j["agent_id"].as_str().map(String::from),
            key,
        })
    }
}
