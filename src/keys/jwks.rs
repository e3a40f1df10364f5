//! Parsing and checking one JWKS document of agent keys.

use std::collections::HashMap;

use serde_json::Value as J;

use super::{AgentKey, AgentRecord, AgentStatus, KeySet};
use crate::event::signature::{b64url_decode, parse_public_key};
use crate::event::PIPELINE_AGENT;
use crate::time::Timestamp;

/// The checked contents of one JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeyDoc {
    /// Every key in the document.
    pub keys: Vec<AgentKey>,
    /// The record of each agent named, as its keys agree on it.
    pub agents: HashMap<String, AgentRecord>,
}

fn str_member<'a>(jwk: &'a J, name: &str, i: usize) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None | Some(J::Null) => Ok(None),
        Some(J::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("key {i}: {name} must be a string")),
    }
}

fn date_member(jwk: &J, name: &str, i: usize) -> Result<Option<Timestamp>, String> {
    match jwk.get(name) {
        None | Some(J::Null) => Ok(None),
        Some(J::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| Some(Timestamp::from_numeric_date(f)))
            .ok_or_else(|| format!("key {i}: {name} is not a usable NumericDate")),
        Some(_) => Err(format!(
            "key {i}: {name} must be a NumericDate (seconds since 1970)"
        )),
    }
}

/// Parses a JWKS document of agent keys and checks it as a whole: every key
/// an Ed25519 OKP key with `kid`, `x` and `agent_id`; no key for agent
/// `vigil`; no two keys with the same (`agent_id`, `kid`) but different `x`;
/// agent records that agree across an agent's keys; at least one key.
pub fn parse_jwks(text: &[u8]) -> Result<KeyDoc, String> {
    let doc: J = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(J::as_array)
        .ok_or("not a JWKS document: expected an object with a \"keys\" array")?;
    if keys.is_empty() {
        return Err("the document has no keys; a JWKS with no keys is refused".into());
    }
    let mut out = KeyDoc::default();
    for (i, jwk) in keys.iter().enumerate() {
        if !jwk.is_object() {
            return Err(format!("key {i} is not a JSON object"));
        }
        if str_member(jwk, "kty", i)? != Some("OKP")
            || str_member(jwk, "crv", i)? != Some("Ed25519")
        {
            return Err(format!(
                "key {i}: only Ed25519 keys are taken (kty \"OKP\", crv \"Ed25519\")"
            ));
        }
        if jwk.get("d").is_some() {
            return Err(format!(
                "key {i} contains a private key (d); publish only public keys and keep d secret"
            ));
        }
        let kid = str_member(jwk, "kid", i)?.ok_or(format!("key {i}: kid is missing"))?;
        let agent_id = str_member(jwk, "agent_id", i)?.ok_or(format!(
            "key {i} ({kid}): agent_id is missing; every key names its agent"
        ))?;
        if agent_id.is_empty() {
            return Err(format!("key {i} ({kid}): agent_id is empty"));
        }
        if agent_id == PIPELINE_AGENT {
            return Err(format!(
                "key {i} ({kid}) claims agent \"vigil\", which is reserved for the pipeline itself"
            ));
        }
        let x = str_member(jwk, "x", i)?.ok_or(format!("key {i} ({kid}): x is missing"))?;
        let raw = b64url_decode(x).ok_or(format!(
            "key {i} ({kid}): x is not canonical base64url without padding"
        ))?;
        let key = parse_public_key(&raw).map_err(|e| format!("key {i} ({kid}): {e}"))?;
        let status = match str_member(jwk, "status", i)? {
            None => AgentStatus::Active,
            Some(s) => AgentStatus::parse(s).ok_or(format!(
                "key {i} ({kid}): status {s:?} is not active, suspended or decommissioned"
            ))?,
        };
        let record = AgentRecord {
            role: str_member(jwk, "role", i)?.map(String::from),
            owner: str_member(jwk, "owner", i)?.map(String::from),
            status,
        };
        if let Some(existing) = out.agents.get(agent_id) {
            if *existing != record {
                return Err(format!(
                    "agent {agent_id:?}: its keys disagree on the agent record (role, owner, status)"
                ));
            }
        } else {
            out.agents.insert(agent_id.to_string(), record);
        }
        out.keys.push(AgentKey {
            agent_id: agent_id.to_string(),
            kid: kid.to_string(),
            key,
            nbf: date_member(jwk, "nbf", i)?,
            exp: date_member(jwk, "exp", i)?,
            revoked_at: date_member(jwk, "revoked_at", i)?,
            jwk: jwk.clone(),
        });
    }
    // Same (agent, kid) with different x inside one document.
    KeySet::merge([&out])?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X1: &str = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg";
    const X2: &str = "Kay64UG8yvCyLhqU000LxzYeUm0L_hLIl5S8kyKWbdc";

    fn doc(keys: &str) -> Result<KeyDoc, String> {
        parse_jwks(format!("{{\"keys\":[{keys}]}}").as_bytes())
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
        assert_eq!(d.keys[0].nbf, Some(Timestamp::from_secs(1)));
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
