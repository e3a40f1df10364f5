//! SIGHUP: re-reads the agent keys (also polled every 2 s) and, from the
//! configuration file, the tokens and the response and hygiene policies,
//! without dropping a connection. A file that does not load changes
//! nothing and says why.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::api::auth::Tokens;
use crate::config::Config;
use crate::keys::registry::ReloadNote;
use crate::pipeline::Pipeline;

/// What a reload replaces, and where it reads it from.
pub(super) struct Reload {
    /// The signal.
    pub hup: tokio::signal::unix::Signal,
    /// The configuration file (none: only the keys are reloaded).
    pub config_file: Option<PathBuf>,
    /// The tokens the API checks.
    pub tokens: Arc<Tokens>,
    /// Whether the tokens came from the file (else the generated admin
    /// token, which a reload keeps).
    pub configured_tokens: bool,
    /// The response stage's services, whose policy a reload replaces.
    pub response: Arc<crate::respond::stage::Services>,
    /// The hygiene stage, whose thresholds a reload replaces.
    pub hygiene: Arc<crate::hygiene::stage::Hygiene>,
}

/// Reloads keys every 2 s and everything on SIGHUP, until `stop` fires.
pub(super) async fn run(pipeline: Arc<Pipeline>, mut r: Reload, mut stop: crate::shutdown::Stop) {
    loop {
        let hup = tokio::select! {
            _ = stop.stopped() => return,
            _ = r.hup.recv() => true,
            _ = tokio::time::sleep(Duration::from_secs(2)) => false,
        };
        if hup {
            tracing::info!("SIGHUP: reloading agent keys, tokens and policy");
            match r.config() {
                Ok(Some(what)) => tracing::info!("Reloaded {what}"),
                Ok(None) => {}
                Err(e) => tracing::error!(
                    "The configuration was not reloaded: {e:#}; the previous tokens and policy stay in force. Fix the file and send SIGHUP again"
                ),
            }
        }
        reload_keys(&pipeline).await;
    }
}

async fn reload_keys(pipeline: &Pipeline) {
    for note in pipeline.reload_keys().await {
        match note {
            ReloadNote::Info(line) => tracing::info!("{line}"),
            ReloadNote::Warning(line) => tracing::warn!("{line}"),
        }
    }
    let m = crate::telemetry::metrics();
    m.keys_refused_total
        .store(pipeline.keys().refused_total(), Relaxed);
    m.keys_loaded
        .store(pipeline.keys().current().key_count() as u64, Relaxed);
}

impl Reload {
    /// Re-reads the file and puts its tokens and policies in force, all
    /// or nothing. Returns what was reloaded (none without a file).
    fn config(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.config_file else {
            return Ok(None);
        };
        let config = Config::load(path)?;
        config.validate()?;
        let tokens = super::configured_tokens(&config)?;
        if self.configured_tokens && config.tokens.is_empty() {
            bail!("the file has no [[tokens]] any more, which would lock every client out; keep at least one");
        }
        let response = crate::respond::config::resolve(crate::respond::config::Sections {
            ciba: config.ciba.as_ref(),
            vault: config.vault.as_ref(),
            ssf: config.ssf.as_ref(),
            response: &config.response,
        })
        .map_err(|e| anyhow!("{e}"))?;
        let n = tokens.len();
        if self.configured_tokens {
            self.tokens.replace(tokens.into_entries());
        }
        self.response.policy.set(response.policy);
        self.hygiene.set_policy(config.hygiene);
        Ok(Some(format!(
            "{} from {}: {n} tokens, the response policy and the hygiene thresholds",
            if self.configured_tokens {
                "tokens and policy"
            } else {
                "policy"
            },
            path.display()
        )))
    }
}
