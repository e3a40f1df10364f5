//! `[ciba]`, `[vault]` and `[response]` (contract section 9), read and
//! checked at start: secrets from the file or a `*_file`, URLs that this
//! client can use, and rules that make sense.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ciba::CibaSettings;
use super::policy::{Policy, Rule};
use super::vault::VaultSettings;

/// `[ciba]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CibaConfig {
    /// The provider's issuer, exactly as its discovery document says it.
    pub issuer: String,
    /// Vigil's client id.
    pub client_id: String,
    /// Its secret, inline ...
    pub client_secret: Option<String>,
    /// ... or in a file.
    pub client_secret_file: Option<PathBuf>,
    /// Scope requested (default `openid`).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// `requested_expiry` in seconds (default: the provider's).
    pub requested_expiry_s: Option<u64>,
    /// The RFC 9396 type of the details sent (default `vigil_agent_action`).
    #[serde(default = "default_details_type")]
    pub authorization_details_type: String,
}

/// `[vault]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault's address.
    pub address: String,
    /// A token allowed to revoke leases, inline ...
    pub token: Option<String>,
    /// ... or in a file.
    pub token_file: Option<PathBuf>,
    /// Lease prefixes by role; only leases under these are revoked.
    #[serde(default)]
    pub lease_prefixes: BTreeMap<String, Vec<String>>,
}

/// `[ssf]`: Security Event Tokens pushed to a Shared Signals receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfConfig {
    /// The receiver's push endpoint (RFC 8935).
    pub receiver: String,
    /// The SETs' `aud` (the receiver's identifier).
    pub audience: String,
    /// The SETs' `iss` (default: the log's origin).
    pub issuer: Option<String>,
    /// A bearer token for the receiver, inline ...
    pub token: Option<String>,
    /// ... or in a file (neither: no Authorization header).
    pub token_file: Option<PathBuf>,
}

/// `[response]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// Rules, first match wins; none = the contract's default policy.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Seconds an identity service gets to answer one request (default 10).
    pub timeout_s: Option<u64>,
}

fn default_scope() -> String {
    "openid".into()
}

fn default_details_type() -> String {
    "vigil_agent_action".into()
}

/// Why a response section is refused.
#[derive(Debug, thiserror::Error)]
pub enum ResponseConfigError {
    /// A secret is missing, doubled or unreadable.
    #[error("[{section}] {what}")]
    Secret {
        /// The section.
        section: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A URL this client cannot use.
    #[error("[{section}] {key} = {value:?} is not an http:// or https:// URL; write it like https://idp.example")]
    Url {
        /// The section.
        section: &'static str,
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// A rule is refused.
    #[error(transparent)]
    Policy(#[from] super::policy::PolicyError),
    /// A lease prefix is empty.
    #[error("[vault] lease_prefixes for role {0:?} holds an empty prefix, which would allow every lease; name the prefix, like \"aws/creds/hr-assistant/\"")]
    EmptyPrefix(String),
}

fn secret(
    section: &'static str,
    name: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<String, ResponseConfigError> {
    let fail = |what: String| Err(ResponseConfigError::Secret { section, what });
    match (inline, file) {
        (Some(s), None) if !s.is_empty() => Ok(s.clone()),
        (None, Some(p)) => match std::fs::read_to_string(p) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Ok(_) => fail(format!("{name}_file {} is empty", p.display())),
            Err(e) => fail(format!("cannot read {name}_file {}: {e}", p.display())),
        },
        (Some(_), Some(_)) => fail(format!("give {name} or {name}_file, not both")),
        _ => fail(format!("{name} (or {name}_file) is required")),
    }
}

fn url(section: &'static str, key: &'static str, value: &str) -> Result<(), ResponseConfigError> {
    super::http::Url::parse(value)
        .map(|_| ())
        .map_err(|_| ResponseConfigError::Url {
            section,
            key,
            value: value.to_string(),
        })
}

/// Everything a response needs, checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The OpenID provider, if configured.
    pub ciba: Option<CibaSettings>,
    /// Vault, if configured.
    pub vault: Option<VaultSettings>,
    /// The Shared Signals receiver, if configured (`issuer` empty: the
    /// log's origin).
    pub ssf: Option<super::signals::SsfSettings>,
    /// The policy.
    pub policy: Policy,
    /// Time limit per request.
    pub timeout: std::time::Duration,
}

/// The sections a response reads.
#[derive(Debug, Clone, Copy)]
pub struct Sections<'a> {
    /// `[ciba]`
    pub ciba: Option<&'a CibaConfig>,
    /// `[vault]`
    pub vault: Option<&'a VaultConfig>,
    /// `[ssf]`
    pub ssf: Option<&'a SsfConfig>,
    /// `[response]`
    pub response: &'a ResponseConfig,
}

fn ssf(s: &SsfConfig) -> Result<super::signals::SsfSettings, ResponseConfigError> {
    url("ssf", "receiver", &s.receiver)?;
    let token = match (&s.token, &s.token_file) {
        (None, None) => None,
        _ => Some(secret("ssf", "token", &s.token, &s.token_file)?),
    };
    Ok(super::signals::SsfSettings {
        receiver: s.receiver.clone(),
        token,
        audience: s.audience.clone(),
        issuer: s.issuer.clone().unwrap_or_default(),
    })
}

/// Reads and checks the sections.
pub fn resolve(sections: Sections<'_>) -> Result<Resolved, ResponseConfigError> {
    let Sections {
        ciba,
        vault,
        response,
        ..
    } = sections;
    let ciba = match ciba {
        None => None,
        Some(c) => {
            url("ciba", "issuer", &c.issuer)?;
            Some(CibaSettings {
                issuer: c.issuer.clone(),
                client_id: c.client_id.clone(),
                client_secret: secret(
                    "ciba",
                    "client_secret",
                    &c.client_secret,
                    &c.client_secret_file,
                )?,
                scope: c.scope.clone(),
                requested_expiry_s: c.requested_expiry_s,
                details_type: c.authorization_details_type.clone(),
            })
        }
    };
    let vault = match vault {
        None => None,
        Some(v) => {
            url("vault", "address", &v.address)?;
            if let Some((role, _)) = v
                .lease_prefixes
                .iter()
                .find(|(_, ps)| ps.iter().any(String::is_empty))
            {
                return Err(ResponseConfigError::EmptyPrefix(role.clone()));
            }
            Some(VaultSettings {
                address: v.address.clone(),
                token: secret("vault", "token", &v.token, &v.token_file)?,
                lease_prefixes: v.lease_prefixes.clone(),
            })
        }
    };
    let policy = if response.rules.is_empty() {
        Policy::default_for(ciba.is_some())
    } else {
        Policy::from_rules(response.rules.clone(), ciba.is_some())?
    };
    Ok(Resolved {
        ciba,
        vault,
        ssf: sections.ssf.map(ssf).transpose()?,
        policy,
        timeout: std::time::Duration::from_secs(response.timeout_s.unwrap_or(10).max(1)),
    })
}
