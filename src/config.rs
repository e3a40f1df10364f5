//! The TOML configuration (contract section 9), with defaults and checks.
//!
//! Every table refuses unknown keys so that a typo is an error at start,
//! not a silently ignored setting. Secrets may be given inline or as a
//! `*_file` path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening, storage and limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Bearer tokens and their roles.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Agent key sources.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Kafka ingestion (absent = none).
    pub kafka: Option<KafkaConfig>,
    /// Anomaly detection.
    #[serde(default)]
    pub detection: DetectionConfig,
    /// OpenID provider for CIBA step-up (absent = no step-up).
    pub ciba: Option<crate::respond::config::CibaConfig>,
    /// Vault lease revocation (absent = none).
    pub vault: Option<crate::respond::config::VaultConfig>,
    /// Shared Signals receiver for posture changes (absent = none).
    pub ssf: Option<crate::respond::config::SsfConfig>,
    /// The response policy.
    #[serde(default)]
    pub response: crate::respond::config::ResponseConfig,
    /// Limits of `POST /v1/query`.
    #[serde(default)]
    pub query: QueryConfig,
    /// OIDC bearer JWTs (absent = none).
    pub oidc: Option<crate::api::jwt::OidcConfig>,
    /// Thresholds of hygiene findings.
    #[serde(default)]
    pub hygiene: crate::hygiene::Policy,
    /// Traces over OTLP.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `[telemetry]`: traces of each event through the stages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL traces are posted to (`<url>/v1/traces`, JSON),
    /// such as `http://127.0.0.1:4318`; unset: `$OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// else no traces (and no cost).
    pub otlp_endpoint: Option<String>,
    /// The spans' `service.name` (default `vigil`).
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "vigil".into(),
        }
    }
}

impl TelemetryConfig {
    /// Starts the OTLP exporter when an endpoint is configured.
    pub fn start(&self) -> Result<(), crate::telemetry::otlp::OtlpError> {
        let endpoint = self
            .otlp_endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .filter(|e| !e.trim().is_empty());
        match endpoint {
            Some(e) => {
                crate::telemetry::otlp::start(&e, &self.service_name)?;
                tracing::info!(endpoint = %e, "Exporting traces over OTLP");
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Data directory.
    pub data: PathBuf,
    /// The log's origin, fixed when the log is created.
    pub origin: Option<String>,
    /// The log key as a private JWK file (else `DIR/log.key`).
    pub log_key_file: Option<PathBuf>,
    /// During a log key rotation: the previous keys (private JWK files),
    /// which co-sign every checkpoint until they are removed.
    pub log_key_previous_files: Vec<PathBuf>,
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Request bodies read, framed and judged at once, in bytes (each
    /// counted at its `Content-Length`, or at `max_body_bytes` when unknown
    /// or compressed); more wait, then get 503.
    pub max_inflight_bytes: usize,
    /// How far `occurred_at` may be ahead of the receipt time.
    pub max_clock_skew_s: u64,
    /// How long events signed by a revoked key are still taken.
    pub revocation_grace_s: u64,
    /// A separate address serving `/metrics` without a token.
    pub metrics_listen: Option<String>,
    /// Bound of the quarantine.
    pub quarantine_max_entries: u64,
    /// Longest time between checkpoints while the log grows.
    pub checkpoint_interval_ms: u64,
    /// Memory for per-key verification tables, in bytes (0: none).
    pub verify_table_bytes: usize,
    /// Size of the duplicate index's Bloom filter, in bytes.
    pub dedupe_filter_bytes: usize,
    /// Size at which a log segment is sealed (and written as Parquet).
    pub segment_max_bytes: u64,
    /// Most HTTP connections open at once on `listen` (more get 503).
    pub max_connections: usize,
    /// Seconds a connection may take to send a request head, or stay
    /// idle between requests, before it is closed.
    pub header_timeout_s: u64,
    /// Seconds a stop (SIGTERM) waits for requests in flight before it
    /// closes their connections, stops the Kafka consumer and writes the
    /// last checkpoint.
    pub drain_timeout_s: u64,
}

impl ServerConfig {
    /// The bounds of the API listener.
    pub fn conn_limits(&self) -> crate::api::ConnLimits {
        crate::api::ConnLimits {
            max_connections: self.max_connections.max(1),
            header_timeout: std::time::Duration::from_secs(self.header_timeout_s.max(1)),
            drain_timeout: std::time::Duration::from_secs(self.drain_timeout_s),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7070".into(),
            data: PathBuf::from("./vigil-data"),
            origin: None,
            log_key_file: None,
            log_key_previous_files: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
            max_inflight_bytes: 64 * 1024 * 1024,
            max_clock_skew_s: 300,
            revocation_grace_s: 3600,
            metrics_listen: None,
            quarantine_max_entries: 10_000,
            checkpoint_interval_ms: 1000,
            verify_table_bytes: crate::event::tables::DEFAULT_TABLE_BYTES,
            dedupe_filter_bytes: crate::store::dedupe::DEFAULT_FILTER_BYTES,
            segment_max_bytes: 64 << 20,
            max_connections: 4096,
            header_timeout_s: 30,
            drain_timeout_s: 20,
        }
    }
}

/// `[[tokens]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: Option<String>,
    /// The token itself.
    pub token: Option<String>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// Roles granted: ingest, audit, soc, posture, metrics, admin.
    pub roles: Vec<String>,
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// JWKS files (or URLs).
    pub jwks: Vec<String>,
    /// How often URLs are polled, seconds (a `Cache-Control: max-age`
    /// answer sets its own, within 5 s to 1 h).
    pub poll_s: u64,
    /// More CA certificates (PEM) to trust for https JWKS sources.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            jwks: Vec::new(),
            poll_s: 60,
            ca_file: None,
        }
    }
}

/// `[detection]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Whether the detection stage runs (default true).
    pub enabled: bool,
    /// Whether the multivariate model judges events (default true; it
    /// learns either way).
    pub model: bool,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            enabled: true,
            model: true,
        }
    }
}

/// `[query]`: what one `POST /v1/query` may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Most rows in an answer (default 10000).
    pub max_rows: usize,
    /// Longest a query may run, in seconds (default 30).
    pub timeout_s: u64,
    /// Most memory a query's operators may hold, in MiB (default 512).
    pub memory_mib: usize,
    /// Where sealed segments are written as Parquet and queried from:
    /// `s3://bucket/prefix` for an S3-compatible bucket (endpoint, region
    /// and credentials from the `AWS_*` environment variables), or unset
    /// for the data directory's `parquet/` folder.
    pub store: Option<String>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let d = crate::audit::query::Limits::default();
        QueryConfig {
            max_rows: d.max_rows,
            timeout_s: d.timeout.as_secs(),
            memory_mib: d.memory_bytes >> 20,
            store: None,
        }
    }
}

impl QueryConfig {
    /// The limits these settings give.
    pub fn limits(&self) -> crate::audit::query::Limits {
        crate::audit::query::Limits {
            max_rows: self.max_rows,
            timeout: std::time::Duration::from_secs(self.timeout_s.max(1)),
            memory_bytes: self.memory_mib.max(1) << 20,
        }
    }
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Topic to consume.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Consumer group.
    #[serde(default = "default_group")]
    pub group: String,
    /// librdkafka properties passed through.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// A configuration with defaults for everything but the brokers.
    pub fn new(brokers: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic: default_topic(),
            group: default_group(),
            librdkafka: BTreeMap::new(),
        }
    }
}

fn default_topic() -> String {
    "agent-events".into()
}

fn default_group() -> String {
    "vigil".into()
}

/// The roles a token can grant.
pub const ROLES: [&str; 6] = ["ingest", "audit", "soc", "posture", "metrics", "admin"];

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys included).
    #[error("the configuration {path} is invalid: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What the TOML reader found.
        source: toml::de::Error,
    },
    /// A value is out of range or values disagree.
    #[error("{0}")]
    Invalid(String),
    /// A valid file whose values are refused.
    #[error("the configuration {path} is invalid: {source}")]
    InFile {
        /// The file.
        path: String,
        /// What is wrong.
        source: Box<ConfigError>,
    },
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: shown(),
            source,
        })?;
        cfg.validate().map_err(|e| ConfigError::InFile {
            path: shown(),
            source: Box::new(e),
        })?;
        Ok(cfg)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return invalid(format!(
                "[server] listen {:?} is not an address like 127.0.0.1:7070",
                self.server.listen
            ));
        }
        if let Some(m) = &self.server.metrics_listen {
            if m.parse::<SocketAddr>().is_err() {
                return invalid(format!(
                    "[server] metrics_listen {m:?} is not an address like 127.0.0.1:9464"
                ));
            }
        }
        if self.server.max_body_bytes < 1024 {
            return invalid(format!(
                "[server] max_body_bytes {} is too small; use at least 1024",
                self.server.max_body_bytes
            ));
        }
        if self.server.checkpoint_interval_ms == 0 || self.server.checkpoint_interval_ms > 1000 {
            return invalid("[server] checkpoint_interval_ms must be 1 to 1000 (the contract asks for a checkpoint at least every second)".into());
        }
        self.tokens.iter().try_for_each(TokenConfig::validate)
    }
}

impl TokenConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        let given = [
            self.sha256.is_some(),
            self.token.is_some(),
            self.token_file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            return invalid(format!(
                "token {:?} must have exactly one of sha256, token or token_file",
                self.name
            ));
        }
        if let Some(h) = &self.sha256 {
            if h.len() != 64 || hex::decode(h).is_err() {
                return invalid(format!(
                    "token {:?}: sha256 must be 64 hex digits",
                    self.name
                ));
            }
        }
        if self.roles.is_empty() {
            return invalid(format!("token {:?} grants no roles", self.name));
        }
        if let Some(r) = self.roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
            return invalid(format!(
                "token {:?}: unknown role {r:?}; roles are {}",
                self.name,
                ROLES.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example and the compose trial's file load as they are.
    #[test]
    fn the_deploy_examples_load() {
        for file in ["deploy/vigil.example.toml", "deploy/compose/vigil.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(cfg.server.drain_timeout_s > 0, "{file}");
        }
    }

    #[test]
    fn parses_the_contract_example_and_refuses_typos() {
        let cfg: Config = toml::from_str(
            r#"
[server]
listen = "127.0.0.1:7070"
data = "./vigil-data"
origin = "vigil.example/prod/shard-0"
max_body_bytes = 10485760
max_clock_skew_s = 300
revocation_grace_s = 3600
[[tokens]]
name = "siem"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
roles = ["ingest"]
[keys]
jwks = ["keys/agents.jwks.json"]
poll_s = 60
[kafka]
brokers = "127.0.0.1:9092"
topic = "agent-events"
group = "vigil"
[kafka.librdkafka]
"security.protocol" = "SASL_SSL"
[ciba]
issuer = "https://idp.example"
client_id = "vigil"
client_secret = "..."
"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            cfg.kafka.unwrap().librdkafka["security.protocol"],
            "SASL_SSL"
        );
        assert!(toml::from_str::<Config>("[server]\nlisten_addr = \"x\"").is_err());
    }

    #[test]
    fn the_deploy_example_is_a_valid_configuration() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/vigil.example.toml");
        let cfg = Config::load(&path).unwrap();
        crate::ingest::kafka::check_passthrough(cfg.kafka.as_ref().unwrap()).unwrap();
        let rules = crate::respond::policy::Policy::from_rules(cfg.response.rules.clone(), true);
        assert!(rules.is_ok(), "{rules:?}");
    }
}
