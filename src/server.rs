//! `vigil serve`: the configuration merged with flags, the pipeline, the
//! HTTP listeners, the Kafka consumer, key reloads, and an orderly stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::api::auth::{Role, TokenEntry, Tokens};
use crate::api::{self, AppState};
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::keys::TimeRules;
use crate::log::note::check_origin;
use crate::pipeline::{Pipeline, PipelineConfig};

mod reload;

/// The settings `vigil serve` runs with, after file and flags are merged.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The merged configuration.
    pub config: Config,
    /// The pipeline's configuration.
    pub pipeline: PipelineConfig,
    /// The response: identity services and policy, checked.
    pub response: crate::respond::config::Resolved,
    /// The configuration file, re-read on SIGHUP.
    pub config_file: Option<std::path::PathBuf>,
}

/// Merges a configuration file (if any) and flags, and checks them.
pub fn serve_settings(args: &ServeArgs) -> anyhow::Result<ServeSettings> {
    let mut config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = &args.data {
        config.server.data = d.clone();
    }
    if let Some(l) = &args.listen {
        config.server.listen = l.clone();
    }
    if !args.keys.is_empty() {
        config.keys.jwks = args.keys.clone();
    }
    if let Some(o) = &args.origin {
        config.server.origin = Some(o.clone());
    }
    if let Some(k) = &args.log_key {
        config.server.log_key_file = Some(k.clone());
    }
    if !args.log_key_previous.is_empty() {
        config.server.log_key_previous_files = args.log_key_previous.clone();
    }
    if let Some(brokers) = &args.kafka_brokers {
        let k = config
            .kafka
            .get_or_insert_with(|| crate::config::KafkaConfig::new(brokers));
        k.brokers = brokers.clone();
    }
    if args.kafka_topic.is_some() || args.kafka_group.is_some() {
        let k = config.kafka.as_mut().ok_or_else(|| {
            anyhow!("--kafka-topic and --kafka-group need --kafka-brokers or a [kafka] section")
        })?;
        if let Some(t) = &args.kafka_topic {
            k.topic = t.clone();
        }
        if let Some(g) = &args.kafka_group {
            k.group = g.clone();
        }
    }
    if let Some(k) = &config.kafka {
        crate::ingest::kafka::check_passthrough(k)?;
    }
    config.validate()?;
    if let Some(o) = &config.server.origin {
        check_origin(o).map_err(|e| anyhow!("--origin: {e}"))?;
    }
    let mut pipeline = PipelineConfig::new(config.server.data.clone());
    pipeline.origin = config.server.origin.clone();
    pipeline.log_keys = log_keys(args, &config);
    pipeline.jwks = config.keys.jwks.clone();
    pipeline.rules = TimeRules {
        revocation_grace_s: config.server.revocation_grace_s,
        max_clock_skew_s: config.server.max_clock_skew_s,
    };
    pipeline.checkpoint_interval = Duration::from_millis(config.server.checkpoint_interval_ms);
    pipeline.quarantine_max_entries = config.server.quarantine_max_entries;
    pipeline.verify_table_bytes = config.server.verify_table_bytes;
    pipeline.dedupe_filter_bytes = config.server.dedupe_filter_bytes;
    pipeline.segment_max_bytes = config.server.segment_max_bytes;
    let response = crate::respond::config::resolve(crate::respond::config::Sections {
        ciba: config.ciba.as_ref(),
        vault: config.vault.as_ref(),
        ssf: config.ssf.as_ref(),
        response: &config.response,
    })?;
    Ok(ServeSettings {
        config,
        pipeline,
        response,
        config_file: args.config.clone(),
    })
}

/// The environment variable that may hold the log key itself (a JWK).
pub const LOG_KEY_ENV: &str = "VIGIL_LOG_KEY";

/// Where the log keys come from: `--log-key` (or `$VIGIL_LOG_KEY_FILE`),
/// else `$VIGIL_LOG_KEY`, else `[server] log_key_file`, else the data
/// directory's own key.
fn log_keys(args: &ServeArgs, config: &Config) -> crate::store::datadir::LogKeys {
    use crate::store::datadir::{KeySource, LogKeys};
    let current = match &args.log_key {
        Some(path) => Some(KeySource::File(path.clone())),
        None if std::env::var_os(LOG_KEY_ENV).is_some() => Some(KeySource::Env(LOG_KEY_ENV.into())),
        None => config.server.log_key_file.clone().map(KeySource::File),
    };
    LogKeys {
        current,
        previous: config
            .server
            .log_key_previous_files
            .iter()
            .cloned()
            .map(KeySource::File)
            .collect(),
    }
}

fn configured_tokens(config: &Config) -> anyhow::Result<Tokens> {
    let mut entries = Vec::new();
    for t in &config.tokens {
        let digest: [u8; 32] = match (&t.sha256, &t.token, &t.token_file) {
            (Some(h), _, _) => hex::decode(h)?
                .try_into()
                .map_err(|_| anyhow!("token {:?}: bad sha256", t.name))?,
            (_, Some(tok), _) => crate::event::sha256(tok.as_bytes()),
            (_, _, Some(f)) => {
                let tok = std::fs::read_to_string(f)
                    .with_context(|| format!("token {:?}: cannot read {}", t.name, f.display()))?;
                crate::event::sha256(tok.trim().as_bytes())
            }
            _ => bail!("token {:?} has no secret", t.name),
        };
        let roles = t
            .roles
            .iter()
            .map(|r| Role::parse(r).ok_or_else(|| anyhow!("unknown role {r:?}")))
            .collect::<Result<_, _>>()?;
        entries.push(TokenEntry {
            name: t.name.clone(),
            digest,
            roles,
        });
    }
    Ok(Tokens::new(entries))
}

/// The configured tokens and the OIDC issuer (its keys fetched once);
/// refuses a non-loopback address without either.
async fn caller_tokens(
    settings: &ServeSettings,
    listen: SocketAddr,
) -> anyhow::Result<(Tokens, Option<Arc<crate::api::jwt::Oidc>>)> {
    let mut tokens = configured_tokens(&settings.config)?;
    let oidc = match &settings.config.oidc {
        Some(cfg) => {
            let http = crate::respond::http::HttpClient::new(Duration::from_secs(10))
                .map_err(|e| anyhow!("{e}"))?;
            let oidc = Arc::new(crate::api::jwt::Oidc::new(cfg.clone(), http));
            if let Err(e) = oidc.fetch_keys().await {
                tracing::error!(error = %e, "Cannot load the OIDC issuer's keys yet; bearer JWTs are refused until they load (retried every 10 s)");
            }
            tokens = tokens.with_oidc(oidc.clone());
            Some(oidc)
        }
        None => None,
    };
    if tokens.is_empty() && !listen.ip().is_loopback() {
        bail!(
            "no token is configured, so vigil refuses to listen on the non-loopback address {listen}; \
             configure [[tokens]] or listen on 127.0.0.1"
        );
    }
    Ok((tokens, oidc))
}

/// Opens the pipeline (https key sources fetched first) and logs the keys
/// in force, covered by a checkpoint before anything is served.
async fn open_pipeline(settings: &ServeSettings) -> anyhow::Result<(Pipeline, Option<RemoteKeys>)> {
    let mut pipeline_cfg = settings.pipeline.clone();
    let remote_keys = fetch_remote_keys(settings, &mut pipeline_cfg.jwks).await?;
    let pipeline = Pipeline::open(&pipeline_cfg).map_err(|e| anyhow!("{e}"))?;
    let logged = pipeline
        .log_keys_in_force()
        .await
        .map_err(|e| anyhow!("cannot log the keys in force: {e}"))?;
    if logged > 0 {
        pipeline
            .checkpoint_now()
            .await
            .map_err(|e| anyhow!("cannot sign a checkpoint: {e}"))?;
    }
    Ok((pipeline, remote_keys))
}

/// The data directory's admin token (made on first start) with every role,
/// when no token is configured.
fn generated_admin_token(pipeline: &Pipeline) -> anyhow::Result<Tokens> {
    let (token, created) = pipeline
        .data_dir()
        .admin_token()
        .map_err(|e| anyhow!("{e}"))?;
    let path = crate::store::layout::Layout::new(&pipeline.data_dir().root).admin_token();
    if created {
        tracing::info!(path = %path.display(), "No tokens are configured: wrote a generated admin token (all roles) to this file");
    } else {
        tracing::info!(path = %path.display(), "No tokens are configured: using the admin token in this file");
    }
    Ok(Tokens::admin(&token))
}

/// A running server: the pipeline plus its HTTP listeners.
pub struct Server {
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The address the API listens on.
    pub addr: SocketAddr,
    listener: Option<tokio::net::TcpListener>,
    state: AppState,
    metrics_listen: Option<String>,
    conn_limits: crate::api::ConnLimits,
    kafka: Option<crate::config::KafkaConfig>,
    reload: Option<reload::Reload>,
    term: Option<tokio::signal::unix::Signal>,
    detection: Option<crate::detect::stage::Stage>,
    response: Option<crate::respond::stage::Stage>,
    oidc: Option<Arc<crate::api::jwt::Oidc>>,
    remote_keys: Option<RemoteKeys>,
}

/// The https JWKS sources and the client that refreshes them.
struct RemoteKeys {
    remotes: Vec<crate::keys::remote::Remote>,
    client: crate::respond::http::HttpClient,
    poll: Duration,
}

/// Fetches every https JWKS source once and puts its cache file in its
/// place among the sources. A source that cannot be fetched starts from
/// its last good document, or stops the start when there is none.
async fn fetch_remote_keys(
    settings: &ServeSettings,
    jwks: &mut [String],
) -> anyhow::Result<Option<RemoteKeys>> {
    use crate::keys::remote::{self, Remote};
    if !jwks.iter().any(|s| remote::is_url(s)) {
        return Ok(None);
    }
    let keys = &settings.config.keys;
    let poll = Duration::from_secs(keys.poll_s);
    let client =
        remote::client(keys.ca_file.as_deref()).map_err(|e| anyhow!("[keys] ca_file: {e}"))?;
    let data = &settings.pipeline.data;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let mut remotes = Vec::new();
    for source in jwks.iter_mut().filter(|s| remote::is_url(s)) {
        let mut r = Remote::new(source, data, poll);
        if let Err(e) = r.fetch(&client, poll).await {
            if !r.cache.exists() {
                bail!("cannot fetch agent keys from {source}: {e}; there is no earlier copy to start from");
            }
            tracing::warn!(url = %source, "Cannot fetch agent keys: {e}; starting from the last good copy ({})", r.cache.display());
        }
        *source = r.cache.to_string_lossy().into_owned();
        remotes.push(r);
    }
    Ok(Some(RemoteKeys {
        remotes,
        client,
        poll,
    }))
}

/// Raises the soft limit of open files to the hard limit, so that
/// `max_connections` sockets fit beside the log's files; warns when even
/// the hard limit is too low.
pub fn raise_file_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-file limit: {e}");
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // Segments, tiles, the index, Kafka and the metrics listener need some.
    let want = max_connections as u64 + 256;
    if soft < want {
        tracing::warn!(
            "The open-file limit is {soft}, below max_connections ({max_connections}) plus 256 for the log's files: \
             raise it (ulimit -n, LimitNOFILE=) or lower max_connections, or connections will be refused at accept"
        );
    }
}

/// Why the server stopped other than by a stop signal.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline failed: {0}")]
pub struct PipelineFailed(pub String);

/// How long a failed server keeps answering 503 before it exits.
const FAILED_GRACE: Duration = Duration::from_secs(2);

/// How long background tasks get to stop once the server is stopping.
const TASKS_STOP_LIMIT: Duration = Duration::from_secs(10);

/// What the API reads besides the pipeline, opened with the server.
struct Views {
    detection: Arc<crate::detect::stage::Detection>,
    postures: Arc<crate::respond::posture::Book>,
    parquet: crate::audit::objects::ParquetStore,
}

/// The state every handler shares.
fn app_state(
    settings: &ServeSettings,
    layout: &crate::store::layout::Layout,
    pipeline: Arc<Pipeline>,
    tokens: Tokens,
    views: Views,
) -> AppState {
    let server = &settings.config.server;
    AppState {
        tokens: Arc::new(tokens),
        max_body_bytes: server.max_body_bytes,
        intake: crate::api::intake::Intake::new(server.max_inflight_bytes, server.max_body_bytes),
        kafka_assigned: settings
            .config
            .kafka
            .as_ref()
            .map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false))),
        detection: views.detection,
        postures: views.postures,
        hygiene: crate::hygiene::stage::Hygiene::open(
            settings.config.hygiene.clone(),
            layout.hygiene_state(),
            pipeline.size(),
        ),
        audit: Arc::new(crate::audit::AuditStore::new(
            pipeline.view().clone(),
            views.parquet,
        )),
        query_limits: settings.config.query.limits(),
        sessions: Arc::default(),
        pipeline,
    }
}

impl Server {
    /// Opens the pipeline and binds the listener (nothing served yet).
    pub async fn start(settings: ServeSettings) -> anyhow::Result<Server> {
        let listen: SocketAddr = settings
            .config
            .server
            .listen
            .parse()
            .context("bad listen address")?;
        let (mut tokens, oidc) = caller_tokens(&settings, listen).await?;
        let (pipeline, remote_keys) = open_pipeline(&settings).await?;
        let data = pipeline.data_dir().root.clone();
        if tokens.is_empty() {
            tokens = generated_admin_token(&pipeline)?;
        }
        // SIGHUP reloads keys and SIGTERM stops cleanly; take both over
        // before anyone can know our address.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let layout = crate::store::layout::Layout::new(&data);
        let (stage, detection) = crate::detect::stage::Stage::open(
            layout.detect_state(),
            settings.config.detection.model,
        );
        let (response, postures) = crate::respond::stage::Stage::open(
            layout.respond_state(),
            crate::respond::services(&settings.response)?,
            &pipeline,
            detection.clone(),
        );
        let parquet = crate::audit::objects::ParquetStore::open(
            settings.config.query.store.as_deref(),
            &layout,
        )?;
        let pipeline = Arc::new(pipeline);
        let state = app_state(
            &settings,
            &layout,
            pipeline.clone(),
            tokens,
            Views {
                detection,
                postures,
                parquet,
            },
        );
        let reload = reload::Reload {
            hup,
            config_file: settings.config_file.clone(),
            tokens: state.tokens.clone(),
            configured_tokens: !settings.config.tokens.is_empty(),
            response: response.services(),
            hygiene: state.hygiene.clone(),
        };
        // Last: whoever waits for this file may signal us at once.
        announce(&data, addr)?;
        Ok(Server {
            pipeline,
            addr,
            listener: Some(listener),
            state,
            metrics_listen: settings.config.server.metrics_listen.clone(),
            conn_limits: settings.config.server.conn_limits(),
            kafka: settings.config.kafka.clone(),
            reload: Some(reload),
            term: Some(term),
            detection: settings.config.detection.enabled.then_some(stage),
            response: Some(response),
            oidc,
            remote_keys,
        })
    }

    /// Serves until SIGTERM or SIGINT, then drains: stops taking requests,
    /// answers those in flight, writes a last checkpoint. A pipeline
    /// failure (the log cannot be written, a pipeline thread panicked)
    /// stops the server too, and is returned as [`PipelineFailed`].
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let mut term = match self.term.take() {
            Some(t) => t,
            None => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot handle SIGTERM")?,
        };
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!(
                "Shutting down: answering requests in flight, then writing a last checkpoint"
            );
        };
        self.run(shutdown).await
    }

    /// Serves until `shutdown` completes (or the pipeline fails), then
    /// drains as above.
    pub async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| anyhow!("the server already ran"))?;
        let mut tasks = crate::shutdown::Shutdown::default();
        self.spawn_tasks(&mut tasks).await?;
        tracing::info!(addr = %self.addr, log_size = self.pipeline.size(), "Vigil is serving");
        let health = self.pipeline.health().clone();
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        let mut http_stop = tasks.stop();
        let stop_signal = async move {
            tokio::select! {
                _ = shutdown => {}
                why = health.failed() => {
                    tracing::error!(
                        "Stopping in {} s: the pipeline failed ({why}); restart vigil to recover from what is durable",
                        FAILED_GRACE.as_secs()
                    );
                    let _ = failed_tx.send(why);
                    // Keep answering (ingest 503, /readyz 503) for a moment so
                    // that load balancers see the failure, then stop.
                    tokio::time::sleep(FAILED_GRACE).await;
                }
                _ = http_stop.stopped() => {}
            }
        };
        api::serve(
            listener,
            api::router(self.state.clone()),
            self.conn_limits,
            stop_signal,
        )
        .await?;
        tasks.stop_and_join(TASKS_STOP_LIMIT).await;
        self.pipeline.shutdown().await;
        if let Ok(why) = failed_rx.await {
            return Err(PipelineFailed(why).into());
        }
        tracing::info!("Stopped cleanly");
        Ok(())
    }

    /// Starts the background tasks, each obeying the stop signal: key
    /// reloads, detection, the metrics listener, the Kafka consumer.
    async fn spawn_tasks(&mut self, tasks: &mut crate::shutdown::Shutdown) -> anyhow::Result<()> {
        if let Some(mut stage) = self.detection.take() {
            if let Some(k) = &self.kafka {
                stage.publish_to(crate::ingest::kafka::KafkaSink::new(k)?);
            }
            tasks.spawn("detection", stage.run(self.pipeline.clone(), tasks.stop()));
        }
        if let Some(mut stage) = self.response.take() {
            if let Some(k) = &self.kafka {
                stage.publish_to(crate::ingest::kafka::KafkaSink::new(k)?);
            }
            tasks.spawn("response", stage.run(self.pipeline.clone(), tasks.stop()));
        }
        tasks.spawn(
            "hygiene",
            self.state
                .hygiene
                .clone()
                .run(self.pipeline.clone(), tasks.stop()),
        );
        if let Some(r) = self.reload.take() {
            tasks.spawn(
                "reloads",
                reload::run(self.pipeline.clone(), r, tasks.stop()),
            );
        }
        if let Some(rk) = self.remote_keys.take() {
            tasks.spawn(
                "jwks fetcher",
                crate::keys::remote::keep_fresh(rk.remotes, rk.client, rk.poll, tasks.stop()),
            );
        }
        if let Some(oidc) = self.oidc.take() {
            tasks.spawn(
                "oidc keys",
                crate::api::jwt::keep_keys_fresh(oidc, tasks.stop()),
            );
        }
        tasks.spawn(
            "parquet sealer",
            crate::audit::run_sealer(
                self.pipeline.view().clone(),
                self.state.audit.parquet().clone(),
                self.pipeline.sealed(),
                tasks.stop(),
            ),
        );
        tasks.spawn(
            "table metrics",
            table_metrics(self.pipeline.clone(), tasks.stop()),
        );
        self.spawn_metrics_listener(tasks).await?;
        self.spawn_kafka(tasks)?;
        Ok(())
    }

    /// Serves `/metrics` on its own listener, when one is configured.
    async fn spawn_metrics_listener(
        &self,
        tasks: &mut crate::shutdown::Shutdown,
    ) -> anyhow::Result<()> {
        if let Some(m) = &self.metrics_listen {
            let l = tokio::net::TcpListener::bind(m)
                .await
                .with_context(|| format!("cannot listen on metrics_listen {m}"))?;
            let mut stop = tasks.stop();
            tasks.spawn("metrics listener", async move {
                let _ = axum::serve(l, api::metrics_router())
                    .with_graceful_shutdown(async move { stop.stopped().await })
                    .await;
            });
        }
        Ok(())
    }

    /// Starts the Kafka consumer (and its readiness flag), when configured.
    fn spawn_kafka(&self, tasks: &mut crate::shutdown::Shutdown) -> anyhow::Result<()> {
        if let Some(k) = &self.kafka {
            let (consumer, handle) =
                crate::ingest::kafka::start(k, self.pipeline.clone(), tasks.stop())?;
            tasks.spawn("kafka consumer", async move {
                let _ = handle.await;
            });
            if let Some(flag) = self.state.kafka_assigned.clone() {
                tasks.spawn("kafka readiness", async move {
                    let mut stop = consumer.stop;
                    loop {
                        flag.store(
                            consumer.assigned.load(std::sync::atomic::Ordering::Relaxed),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        tokio::select! {
                            _ = stop.stopped() => return,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                });
            }
            tracing::info!(brokers = %k.brokers, topic = %k.topic, group = %k.group, "Consuming from Kafka");
        }
        Ok(())
    }
}

/// Writes the address the server listens on to `DIR/listen.addr`.
fn announce(data: &std::path::Path, addr: SocketAddr) -> anyhow::Result<()> {
    crate::store::fsutil::write_file_durably(
        &data.join("listen.addr"),
        format!("{addr}\n").as_bytes(),
        0o644,
    )
    .context("cannot write listen.addr")
}

/// Copies the verification tables' counters into the metrics every second.
async fn table_metrics(pipeline: Arc<Pipeline>, mut stop: crate::shutdown::Stop) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let (m, t) = (crate::telemetry::metrics(), &pipeline.tables().stats);
        m.verify_table_hits_total
            .store(t.hits.load(Relaxed), Relaxed);
        m.verify_table_misses_total
            .store(t.misses.load(Relaxed), Relaxed);
        m.verify_table_builds_total
            .store(t.builds.load(Relaxed), Relaxed);
        m.verify_table_evictions_total
            .store(t.evictions.load(Relaxed), Relaxed);
        m.verify_table_bytes
            .store(pipeline.tables().bytes() as u64, Relaxed);
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
