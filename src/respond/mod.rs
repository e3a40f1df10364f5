//! Closing the loop (contract sections 3, 5, 7 and 9): anomalies lead to
//! responses. The person an agent acts for is asked to approve on their
//! own device (OpenID CIBA); a denial, an expiry or a critical anomaly
//! revokes the agent's leases in Vault and suspends it; gateways ask the
//! agent's posture before acting. Every decision, request and answer is
//! an event of agent `vigil` in the same log.
//!
//! - [`policy`]: which anomalies lead to which response;
//! - [`fold`]: the response as a fold over the log (no I/O);
//! - [`evidence`]: the events it records;
//! - [`posture`]: what gateways read;
//! - [`ciba`], [`vault`], [`http`]: the clients of the identity services;
//! - [`signals`]: suspensions as Security Event Tokens pushed to a
//!   Shared Signals receiver;
//! - [`workers`], [`stage`]: the I/O around the fold.

pub mod ciba;
pub mod config;
pub mod evidence;
pub mod fold;
pub mod http;
pub mod policy;
pub mod posture;
pub mod signals;
pub mod stage;
pub mod vault;
pub mod workers;

use std::sync::Arc;

/// Builds the services a response uses from the checked configuration.
pub fn services(r: &config::Resolved) -> Result<stage::Services, http::HttpError> {
    let client = http::HttpClient::new(r.timeout)?;
    Ok(stage::Services {
        ciba: r
            .ciba
            .clone()
            .map(|c| Arc::new(ciba::Ciba::new(c, client.clone()))),
        vault: r
            .vault
            .clone()
            .map(|v| Arc::new(vault::Vault::new(v, client.clone()))),
        signals: r
            .ssf
            .clone()
            .map(|s| Arc::new(signals::Signals::new(s, client.clone()))),
        policy: crate::live::Live::new(r.policy.clone()),
    })
}
