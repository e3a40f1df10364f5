//! The HTTP API (contract section 5), built on axum.
//!
//! [`router`] builds the whole app from an [`AppState`]; [`serve`] runs it
//! until a shutdown future completes, letting requests in flight finish
//! (each waits for its receipts to be durable) before returning.

mod admin;
mod anomalies;
pub mod auth;
mod dashboard;
pub mod error;
mod events;
mod findings;
mod hec;
pub mod intake;
pub mod jwt;
pub mod listen;
mod posture;
mod query;
mod read;
pub mod session;

pub use listen::{serve, ConnLimits};

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::Router;

use crate::pipeline::Pipeline;
use auth::{Denied, Role, Tokens};
use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline events go into and receipts come from.
    pub pipeline: Arc<Pipeline>,
    /// Configured tokens.
    pub tokens: Arc<Tokens>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// The bound on request bodies in flight.
    pub intake: intake::Intake,
    /// Whether Kafka partitions are assigned, when Kafka is configured.
    pub kafka_assigned: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The anomalies detection shows.
    pub detection: Arc<crate::detect::stage::Detection>,
    /// Agent postures.
    pub postures: Arc<crate::respond::posture::Book>,
    /// The agent inventory hygiene findings are judged from.
    pub hygiene: Arc<crate::hygiene::stage::Hygiene>,
    /// SQL over the audit store.
    pub audit: Arc<crate::audit::AuditStore>,
    /// What one query may use.
    pub query_limits: crate::audit::query::Limits,
    /// Signed-in browsers (the dashboard).
    pub sessions: Arc<session::Sessions>,
}

impl AppState {
    /// Checks the request's bearer token (else its session cookie) for one
    /// of `roles`; returns the caller's entry.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        roles: &[Role],
    ) -> Result<auth::TokenEntry, ApiError> {
        match session::caller(self, headers, roles) {
            Ok(entry) => Ok(entry),
            Err(Denied::Unauthenticated) => Err(ApiError::unauthenticated()),
            Err(Denied::Forbidden) => {
                let names: Vec<String> = roles
                    .iter()
                    .map(|r| format!("{r:?}").to_lowercase())
                    .collect();
                Err(ApiError::forbidden(&names.join(" or ")))
            }
        }
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/events", post(events::post_events))
        .route("/services/collector/event", post(hec::post_hec))
        .route("/services/collector", post(hec::post_hec))
        .route("/services/collector/health", get(hec::health))
        .route("/v1/receipts/{event_id}", get(read::receipt))
        .route("/v1/checkpoint", get(read::checkpoint))
        .route("/checkpoint", get(read::tlog_checkpoint))
        .route("/tile/{*rest}", get(read::tile))
        .route("/v1/proof/consistency", get(read::consistency))
        .route("/v1/log-key", get(read::log_key))
        .route("/v1/pipeline-keys", get(read::pipeline_keys))
        .route("/v1/quarantine", get(read::quarantine))
        .route("/v1/query", post(query::post_query))
        .route("/v1/anomalies", get(anomalies::list))
        .route("/v1/anomalies/stream", get(anomalies::stream))
        .route("/v1/anomalies/{id}/feedback", post(anomalies::feedback))
        .route("/v1/agents/{agent_id}/posture", get(posture::get_posture))
        .route("/v1/agents/{agent_id}/baseline", get(posture::get_baseline))
        .route("/v1/findings", get(findings::list))
        .route("/v1/reports/access", get(findings::access_report))
        .route("/v1/agents", get(posture::list_agents))
        .route("/v1/agents/{agent_id}", put(admin::put_agent))
        .route("/v1/agents/{agent_id}/keys", post(admin::add_key))
        .route(
            "/v1/agents/{agent_id}/keys/{kid}/revoke",
            post(admin::revoke_key),
        )
        .route(
            "/v1/agents/{agent_id}/decommission",
            post(admin::decommission),
        )
        .route("/v1/agents/{agent_id}/attest", post(admin::attest))
        .route("/v1/agents/{agent_id}/restore", post(posture::restore))
        .route("/v1/agents/{agent_id}/suspend", post(posture::suspend))
        .route("/metrics", get(read::metrics))
        .route("/healthz", get(read::healthz))
        .route("/readyz", get(read::readyz))
        .route(
            "/v1/session",
            post(session::sign_in)
                .get(session::current)
                .delete(session::sign_out),
        )
        .route("/", get(dashboard::page))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/v1/openapi.json", get(read::openapi))
        .fallback(read::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::csrf,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.max_body_bytes,
            error::json_errors,
        ))
        .with_state(state)
}

/// A router serving only `/metrics`, without a token (for `metrics_listen`).
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(read::metrics_open))
}
