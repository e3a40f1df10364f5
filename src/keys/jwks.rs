//! Parsing and checking one JWKS document of agent keys.

use serde_json::Value as J;

use super::{AgentKey, AgentRecord, AgentStatus, KeySet, MergeError};
use crate::event::signature::{b64url_decode, parse_public_key};
use crate::event::PIPELINE_AGENT;
use crate::time::Timestamp;

/// The checked contents of one JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeyDoc {
    /// Every key in the document, with the agent record it carries.
    pub keys: Vec<(AgentKey, AgentRecord)>,
}

/// Why a JWKS document is refused as a whole (contract section 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not `{"keys": [...]}`.
    #[error("not a JWKS document: expected an object with a \"keys\" array")]
    NotJwks,
    /// `{"keys": []}`.
    #[error("the document has no keys; a JWKS with no keys is refused")]
    Empty,
    /// One key breaks a rule.
    #[error("key {index}{}: {why}", kid.as_ref().map(|k| format!(" ({k})")).unwrap_or_default())]
    BadKey {
        /// Position in the `keys` array.
        index: usize,
        /// Its `kid`, when it has one.
        kid: Option<String>,
        /// What is wrong and how to fix it.
        why: JwkError,
    },
    /// Two keys disagree (same kid, other `x`; other agent record).
    #[error(transparent)]
    Conflict(#[from] MergeError),
}

/// Why one agent key is refused: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,
    /// Not I-JSON (the parser's reason).
    #[error("is not I-JSON ({0}); numbers must be integers of at most 2^53-1 or exact doubles")]
    NotIJson(String),
    /// Another kind of key than Ed25519.
    #[error("only Ed25519 keys are taken (kty \"OKP\", crv \"Ed25519\")")]
    NotEd25519,
    /// It holds its private part.
    #[error("contains a private key (d); publish only public keys and keep d secret")]
    Private,
    /// No `kid`.
    #[error("kid is missing")]
    NoKid,
    /// No `agent_id`.
    #[error("agent_id is missing; every key names its agent")]
    NoAgent,
    /// An empty `agent_id`.
    #[error("agent_id is empty")]
    EmptyAgent,
    /// `agent_id` is the pipeline's.
    #[error("claims agent \"vigil\", which is reserved for the pipeline itself")]
    ReservedAgent,
    /// No `x`.
    #[error("x is missing")]
    NoX,
    /// `x` is not canonical base64url.
    #[error("x is not canonical base64url without padding")]
    XNotBase64url,
    /// `x` is not a key the contract takes.
    #[error(transparent)]
    PublicKey(#[from] crate::event::signature::PublicKeyError),
    /// A status the contract does not name.
    #[error("status {0:?} is not active, suspended or decommissioned")]
    Status(String),
    /// A member that must be a string is not (its name).
    #[error("{0} must be a string")]
    NotAString(&'static str),
    /// A NumericDate out of range (its name).
    #[error("{0} is not a usable NumericDate (seconds since 1970, 0 to {MAX_NUMERIC_DATE})")]
    DateOutOfRange(&'static str),
    /// A date member that is not a number (its name).
    #[error("{0} must be a NumericDate (seconds since 1970)")]
    NotADate(&'static str),
}

fn str_member<'a>(jwk: &'a J, name: &'static str) -> Result<Option<&'a str>, JwkError> {
    match jwk.get(name) {
        None | Some(J::Null) => Ok(None),
        Some(J::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwkError::NotAString(name)),
    }
}

/// The latest NumericDate taken: 9999-12-31T23:59:59Z.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

fn date_member(jwk: &J, name: &'static str) -> Result<Option<Timestamp>, JwkError> {
    match jwk.get(name) {
        None | Some(J::Null) => Ok(None),
        Some(J::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(f))
            .map(|f| Some(Timestamp::from_numeric_date(f)))
            .ok_or(JwkError::DateOutOfRange(name)),
        Some(_) => Err(JwkError::NotADate(name)),
    }
}

/// Parses a JWKS document of agent keys and checks it as a whole: every key
/// an Ed25519 OKP key with `kid`, `x` and `agent_id`; no key for agent
/// `vigil`; no two keys with the same (`agent_id`, `kid`) but different `x`;
/// agent records that agree across an agent's keys; at least one key.
pub fn parse_jwks(text: &[u8]) -> Result<KeyDoc, JwksError> {
    let doc: J = serde_json::from_slice(text).map_err(|e| JwksError::NotJson(e.to_string()))?;
    let keys = doc
        .get("keys")
        .and_then(J::as_array)
        .ok_or(JwksError::NotJwks)?;
    if keys.is_empty() {
        return Err(JwksError::Empty);
    }
    let mut out = KeyDoc::default();
    for (index, jwk) in keys.iter().enumerate() {
        let (key, record) = parse_key(jwk).map_err(|why| JwksError::BadKey {
            index,
            kid: jwk.get("kid").and_then(J::as_str).map(String::from),
            why,
        })?;
        out.keys.push((key, record));
    }
    // Same (agent, kid) with different x, or disagreeing records.
    KeySet::merge([&out])?;
    Ok(out)
}

/// Parses one agent key and the agent record it carries.
pub fn parse_key(jwk: &J) -> Result<(AgentKey, AgentRecord), JwkError> {
    if !jwk.is_object() {
        return Err(JwkError::NotAnObject);
    }
    // The key is logged as a vigil event (canonical JSON): every number
    // in it must be exact in I-JSON, whatever member holds it.
    crate::json::parse(jwk.to_string().as_bytes())
        .map_err(|e| JwkError::NotIJson(e.to_string()))?;
    if str_member(jwk, "kty")? != Some("OKP") || str_member(jwk, "crv")? != Some("Ed25519") {
        return Err(JwkError::NotEd25519);
    }
    if jwk.get("d").is_some() {
        return Err(JwkError::Private);
    }
    let kid = str_member(jwk, "kid")?.ok_or(JwkError::NoKid)?;
    let agent_id = str_member(jwk, "agent_id")?.ok_or(JwkError::NoAgent)?;
    if agent_id.is_empty() {
        return Err(JwkError::EmptyAgent);
    }
    if agent_id == PIPELINE_AGENT {
        return Err(JwkError::ReservedAgent);
    }
    let x = str_member(jwk, "x")?.ok_or(JwkError::NoX)?;
    let raw = b64url_decode(x).ok_or(JwkError::XNotBase64url)?;
    let key = parse_public_key(&raw)?;
    let status = match str_member(jwk, "status")? {
        None => AgentStatus::Active,
        Some(s) => AgentStatus::parse(s).ok_or_else(|| JwkError::Status(s.to_string()))?,
    };
    let record = AgentRecord {
        role: str_member(jwk, "role")?.map(String::from),
        owner: str_member(jwk, "owner")?.map(String::from),
        status,
    };
    let key = AgentKey {
        agent_id: agent_id.to_string(),
        kid: kid.to_string(),
        key,
        nbf: date_member(jwk, "nbf")?,
        exp: date_member(jwk, "exp")?,
        revoked_at: date_member(jwk, "revoked_at")?,
        jwk: jwk.clone(),
    };
    Ok((key, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    const X1: &str = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg";
    const X2: &str = "Kay64UG8yvCyLhqU000LxzYeUm0L_hLIl5S8kyKWbdc";

    fn doc(keys: &str) -> Result<KeyDoc, String> {
        parse_jwks(format!("{{\"keys\":[{keys}]}}").as_bytes()).map_err(|e| e.to_string())
    }

    fn key(agent: &str, kid: &str, x: &str, extra: &str) -> String {
        format!(
            r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"{x}","agent_id":"{agent}"{extra}}}"#
        )
    }

    #[test]
    fn accepts_a_good_document() {
        let d = doc(&format!(
            "{},{}",
            key("a", "k1", X1, r#","nbf":1,"status":"active""#),
            key("b", "k1", X2, "")
        ))
        .unwrap();
        assert_eq!(d.keys.len(), 2);
        assert_eq!(d.keys[0].0.nbf, Some(Timestamp::from_secs(1)));
    }

    #[test]
    fn refuses_bad_documents_whole() {
        assert!(doc("").unwrap_err().contains("no keys"));
        assert!(doc(&key("vigil", "k", X1, ""))
            .unwrap_err()
            .contains("reserved"));
        let dup = format!("{},{}", key("a", "k", X1, ""), key("a", "k", X2, ""));
        assert!(doc(&dup).unwrap_err().contains("two different public keys"));
        let disagree = format!(
            "{},{}",
            key("a", "k1", X1, r#","role":"x""#),
            key("a", "k2", X2, r#","role":"y""#)
        );
        assert!(doc(&disagree).unwrap_err().contains("disagree"));
        assert!(doc(&key("a", "k", "AAAA", "")).is_err());
        assert!(doc(&key("a", "k", X1, r#","d":"secret""#))
            .unwrap_err()
            .contains("private"));
    }
}
