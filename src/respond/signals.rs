//! Posture changes as Security Event Tokens (RFC 8417) in the OpenID
//! Shared Signals shape: a suspension is a CAEP `session-revoked` event
//! about the agent, signed with the pipeline's event key (EdDSA) and
//! pushed to a configured receiver as RFC 8935 says, so that an identity
//! provider that takes shared signals can end the agent's sessions too.

use base64::Engine;
use serde_json::json;

use super::http::{HttpClient, HttpError};
use super::posture::{Posture, State};

/// The CAEP event type sent when an agent is suspended.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

/// `[ssf]`, resolved.
#[derive(Debug, Clone)]
pub struct SsfSettings {
    /// Where SETs are pushed (RFC 8935).
    pub receiver: String,
    /// A bearer token for the receiver, if it wants one.
    pub token: Option<String>,
    /// The SET's `aud`.
    pub audience: String,
    /// The SET's `iss`.
    pub issuer: String,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// No answer.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The receiver refused the SET (RFC 8935 section 2.3).
    #[error("the receiver answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its `err` and `description`, as it said them.
        body: String,
    },
}

impl PushError {
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            PushError::Http(_) => true,
            PushError::Refused { status, .. } => *status >= 500 || *status == 429,
        }
    }
}

/// What a SET is made of besides the posture.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// `jti`.
    pub jti: &'a str,
    /// `iat`, seconds.
    pub iat: i64,
    /// The pipeline key's `kid`.
    pub kid: &'a str,
}

/// The SET for a posture change, signed by `sign`; `None` for changes
/// that have no Shared Signals event (only suspensions have one).
pub fn token(p: &Posture, env: Envelope<'_>, sign: impl Fn(&[u8]) -> [u8; 64]) -> Option<String> {
    if p.state != State::Suspended {
        return None;
    }
    let since = crate::time::Timestamp::parse_event_time(&p.since).map_or(env.iat, |t| t.secs());
    let header = json!({"typ": "secevent+jwt", "alg": "EdDSA", "kid": env.kid});
    let claims = json!({
        "iss": env.issuer,
        "aud": env.audience,
        "iat": env.iat,
        "jti": env.jti,
        "sub_id": {"format": "opaque", "id": p.agent_id},
        "events": {
            SESSION_REVOKED: {
                "event_timestamp": since,
                "initiating_entity": if p.anomaly_id.is_some() { "policy" } else { "admin" },
                "reason_admin": {"en": p.reason},
            }
        }
    });
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(v).expect("serialises"))
    };
    let signing_input = format!("{}.{}", b64(&header), b64(&claims));
    let sig = sign(signing_input.as_bytes());
    Some(format!(
        "{signing_input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    ))
}

/// The push client.
#[derive(Debug)]
pub struct Signals {
    settings: SsfSettings,
    http: HttpClient,
}

impl Signals {
    /// A client.
    pub fn new(settings: SsfSettings, http: HttpClient) -> Signals {
        Signals { settings, http }
    }

    /// The configured `iss` and `aud`.
    pub fn settings(&self) -> &SsfSettings {
        &self.settings
    }

    /// Pushes one SET (RFC 8935): 202 is delivered.
    pub async fn push(&self, set: &str) -> Result<(), PushError> {
        let auth = self.settings.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("content-type", "application/secevent+jwt"),
            ("accept", "application/json"),
        ];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let reply = self
            .http
            .send(
                "POST",
                &self.settings.receiver,
                &headers,
                set.as_bytes().to_vec(),
            )
            .await?;
        if reply.status == 202 || reply.status == 200 {
            return Ok(());
        }
        Err(PushError::Refused {
            status: reply.status,
            body: String::from_utf8_lossy(&reply.body)
                .chars()
                .take(300)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey, Verifier};

    #[test]
    fn a_suspension_is_a_signed_session_revoked_set() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let p = Posture {
            state: State::Suspended,
            anomaly_id: Some("anom-1".into()),
            reason: "suspended".into(),
            ..Posture::active("hr-1", "2026-11-30T09:00:00.000Z")
        };
        let env = Envelope {
            issuer: "vigil.example/prod",
            audience: "https://idp.example",
            jti: "j-1",
            iat: 1_796_000_000,
            kid: "vigil#1",
        };
        let set = token(&p, env, |m| key.sign(m).to_bytes()).unwrap();
        let parts: Vec<&str> = set.split('.').collect();
        let dec = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        let sig = ed25519_dalek::Signature::from_slice(&dec(parts[2])).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        key.verifying_key().verify(input.as_bytes(), &sig).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&dec(parts[1])).unwrap();
        assert_eq!(claims["sub_id"]["id"], "hr-1");
        assert_eq!(
            claims["events"][SESSION_REVOKED]["initiating_entity"],
            "policy"
        );
        assert_eq!(
            claims["events"][SESSION_REVOKED]["event_timestamp"],
            1_796_029_200
        );
        let header: serde_json::Value = serde_json::from_slice(&dec(parts[0])).unwrap();
        assert_eq!(header["typ"], "secevent+jwt");
        // Only suspensions are signalled.
        assert!(token(&Posture::active("hr-1", "x"), env, |m| key
            .sign(m)
            .to_bytes())
        .is_none());
    }
}
