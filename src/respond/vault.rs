//! Lease revocation through the Vault HTTP API (`PUT
//! /v1/sys/leases/revoke`), as OpenBao and Vault serve it.

use std::collections::BTreeMap;

use super::http::{HttpClient, HttpError};

/// `[vault]`, resolved.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// `https://vault.example:8200`.
    pub address: String,
    /// A token allowed to revoke leases.
    pub token: String,
    /// Lease prefixes by role: only these leases are revoked.
    pub lease_prefixes: BTreeMap<String, Vec<String>>,
}

/// Why a revocation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No answer.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Vault refused.
    #[error("Vault answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its errors, as it said them.
        body: String,
    },
}

impl VaultError {
    /// Whether trying again may help (no answer, or a server error).
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Http(_) => true,
            VaultError::Refused { status, .. } => *status >= 500 || *status == 429,
        }
    }
}

/// The client.
#[derive(Debug)]
pub struct Vault {
    settings: VaultSettings,
    http: HttpClient,
}

impl Vault {
    /// A client.
    pub fn new(settings: VaultSettings, http: HttpClient) -> Vault {
        Vault { settings, http }
    }

    /// Lease prefixes by role.
    pub fn prefixes(&self) -> &BTreeMap<String, Vec<String>> {
        &self.settings.lease_prefixes
    }

    /// Revokes one lease. Revoking a lease that is already gone succeeds
    /// (Vault answers 204 for it too), so a retry is harmless.
    pub async fn revoke(&self, lease_id: &str) -> Result<(), VaultError> {
        let url = format!(
            "{}/v1/sys/leases/revoke",
            self.settings.address.trim_end_matches('/')
        );
        let body =
            serde_json::to_vec(&serde_json::json!({ "lease_id": lease_id })).expect("serialises");
        let headers = [
            ("x-vault-token", self.settings.token.as_str()),
            ("content-type", "application/json"),
        ];
        let reply = self.http.send("PUT", &url, &headers, body).await?;
        if (200..300).contains(&reply.status) {
            return Ok(());
        }
        Err(VaultError::Refused {
            status: reply.status,
            body: String::from_utf8_lossy(&reply.body)
                .chars()
                .take(300)
                .collect(),
        })
    }
}
