//! Bearer tokens and roles (contract section 5).
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time
//! against every configured token, so neither timing nor memory gives a
//! token away.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::event::sha256;

/// A role a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Send events.
    Ingest,
    /// Read receipts, proofs, quarantine, SQL.
    Audit,
    /// Watch anomalies (SOC).
    Soc,
    /// Ask an agent's posture (gateways).
    Posture,
    /// Scrape metrics.
    Metrics,
    /// Everything.
    Admin,
}

impl Role {
    /// Parses a role name from the configuration.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "ingest" => Role::Ingest,
            "audit" => Role::Audit,
            "soc" => Role::Soc,
            "posture" => Role::Posture,
            "metrics" => Role::Metrics,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// One configured token.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// Name for logs.
    pub name: String,
    /// SHA-256 of the token.
    pub digest: [u8; 32],
    /// Roles it grants.
    pub roles: Vec<Role>,
}

/// Why a request is not authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one that matches no configured token (401).
    Unauthenticated,
    /// A valid token without any of the roles the route needs (403).
    Forbidden,
}

/// Every configured token, and the OIDC issuer whose JWTs are accepted.
#[derive(Default)]
pub struct Tokens {
    entries: crate::live::Live<Vec<TokenEntry>>,
    oidc: Option<std::sync::Arc<super::jwt::Oidc>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("entries", &self.entries.get().len())
            .field("oidc", &self.oidc.is_some())
            .finish()
    }
}

impl Tokens {
    /// Tokens from entries.
    pub fn new(entries: Vec<TokenEntry>) -> Tokens {
        Tokens {
            entries: crate::live::Live::new(entries),
            oidc: None,
        }
    }

    /// Puts `entries` in force instead of the configured tokens (a
    /// reload); requests already authorized are not affected.
    pub fn replace(&self, entries: Vec<TokenEntry>) {
        self.entries.set(entries);
    }

    /// The configured tokens (for a reload to put in force elsewhere).
    pub fn into_entries(self) -> Vec<TokenEntry> {
        self.entries.get().as_ref().clone()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.entries.get().len()
    }

    /// Also accepts the JWTs `oidc` verifies.
    pub fn with_oidc(mut self, oidc: std::sync::Arc<super::jwt::Oidc>) -> Tokens {
        self.oidc = Some(oidc);
        self
    }

    /// A single token with every role (the generated admin token).
    pub fn admin(token: &str) -> Tokens {
        Tokens::new(vec![TokenEntry {
            name: "admin (generated)".into(),
            digest: sha256(token.as_bytes()),
            roles: vec![Role::Admin],
        }])
    }

    /// The token a request presents: `Authorization: Bearer <t>`, the scheme
    /// case-insensitive; with `allow_splunk`, also `Splunk <t>` (HEC).
    pub fn presented(headers: &HeaderMap, allow_splunk: bool) -> Option<&str> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .trim();
        let (scheme, token) = value.split_once(' ')?;
        let ok = scheme.eq_ignore_ascii_case("bearer")
            || (allow_splunk && scheme.eq_ignore_ascii_case("splunk"));
        let token = token.trim();
        (ok && !token.is_empty()).then_some(token)
    }

    /// Checks that `token` (a configured token, or a JWT of the OIDC
    /// issuer) grants one of `roles` (`admin` grants all).
    pub fn check(&self, token: Option<&str>, roles: &[Role]) -> Result<TokenEntry, Denied> {
        let token = token.ok_or(Denied::Unauthenticated)?;
        let digest = sha256(token.as_bytes());
        let entries = self.entries.get();
        let mut found: Option<&TokenEntry> = None;
        for e in entries.iter() {
            if bool::from(e.digest.ct_eq(&digest)) {
                found = Some(e);
            }
        }
        let entry = match (found, &self.oidc) {
            (Some(e), _) => e.clone(),
            (None, Some(oidc)) => jwt_entry(oidc, token)?,
            (None, None) => return Err(Denied::Unauthenticated),
        };
        if entry.roles.contains(&Role::Admin) || entry.roles.iter().any(|r| roles.contains(r)) {
            Ok(entry)
        } else {
            Err(Denied::Forbidden)
        }
    }

    /// Whether no token is configured and no OIDC issuer either.
    pub fn is_empty(&self) -> bool {
        self.entries.get().is_empty() && self.oidc.is_none()
    }
}

/// The caller a JWT names, or 401 (why is logged at debug level).
fn jwt_entry(oidc: &super::jwt::Oidc, token: &str) -> Result<TokenEntry, Denied> {
    let now = crate::time::Timestamp::now().secs();
    match oidc.verify(token, now) {
        Ok(claims) => Ok(TokenEntry {
            name: format!("oidc:{}", claims.subject),
            digest: [0; 32],
            roles: claims.roles,
        }),
        Err(why) => {
            tracing::debug!(%why, "A bearer token is neither a configured token nor an accepted JWT");
            Err(Denied::Unauthenticated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_schemes() {
        let t = Tokens::new(vec![TokenEntry {
            name: "siem".into(),
            digest: sha256(b"s3cret"),
            roles: vec![Role::Ingest],
        }]);
        assert!(t.check(Some("s3cret"), &[Role::Ingest]).is_ok());
        assert_eq!(
            t.check(Some("s3cret"), &[Role::Audit]).unwrap_err(),
            Denied::Forbidden
        );
        assert_eq!(
            t.check(Some("nope"), &[Role::Ingest]).unwrap_err(),
            Denied::Unauthenticated
        );
        assert_eq!(
            t.check(None, &[Role::Ingest]).unwrap_err(),
            Denied::Unauthenticated
        );
        let mut h = HeaderMap::new();
        h.insert("authorization", "bEaReR s3cret".parse().unwrap());
        assert_eq!(Tokens::presented(&h, false), Some("s3cret"));
        h.insert("authorization", "Splunk s3cret".parse().unwrap());
        assert_eq!(Tokens::presented(&h, false), None);
        assert_eq!(Tokens::presented(&h, true), Some("s3cret"));
    }
}
