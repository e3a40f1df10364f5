//! `vigil bench response`: how fast an anomaly becomes a response, under
//! background load. A real OpenID provider (tests/fixtures/oidc, run with
//! Node) takes the CIBA requests; background agents send at a fixed rate
//! while, every `--every-ms`, a victim agent sends an event using a lease
//! after it expired. For each trigger it measures, from the moment the
//! trigger's POST was answered (the receipt is durable): until the
//! victim's posture reads `step_up_required`, and until the provider
//! recorded the CIBA request. Every posture read is timed too: the route
//! gateways call on their request path.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;

use super::{batches, bench_agents, percentile, start_server};
use crate::client::Client;
use crate::json::{self, Value};
use crate::time::Timestamp;

/// `vigil bench response` options.
#[derive(Args, Debug, Clone)]
pub struct ResponseBenchArgs {
    /// Background events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: usize,
    /// Seconds of background load.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Milliseconds between triggers (each from its own victim agent).
    #[arg(long, default_value_t = 400)]
    pub every_ms: u64,
    /// Background agents.
    #[arg(long, default_value_t = 64)]
    pub agents: usize,
    /// The OpenID provider fixture (a folder with provider.mjs and its
    /// node_modules).
    #[arg(long, default_value = "tests/fixtures/oidc")]
    pub provider: PathBuf,
}

/// The provider fixture, killed on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// Every CIBA request the provider recorded (its test route).
    async fn requests(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let addr: SocketAddr = self.issuer.trim_start_matches("http://").parse()?;
        let mut c = Client::connect(addr, "").await?;
        let (_, body) = c.send("GET", "/test/requests", None, Bytes::new()).await?;
        Ok(serde_json::from_slice(&body)?)
    }
}

/// For each trigger, milliseconds from its acknowledgement to the CIBA
/// request the provider recorded for its victim (the provider's clock).
fn ciba_delays(
    requests: &[serde_json::Value],
    measured: &[Measured],
    victims: &[crate::keys::private::PrivateJwk],
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for (m, victim) in measured.iter().zip(victims) {
        let agent = victim.agent_id.clone().unwrap_or_default();
        let seen = requests
            .iter()
            .find(|r| r["authorization_details"][0]["agent_id"] == agent.as_str())
            .and_then(|r| r["at"].as_f64());
        match seen {
            Some(at) => out.push(at - m.acked_wall_ms),
            None => bail!("the provider never saw a CIBA request for {agent}"),
        }
    }
    Ok(out)
}

fn start_provider(dir: &std::path::Path) -> anyhow::Result<Provider> {
    if !dir.join("node_modules/oidc-provider").exists() {
        bail!(
            "{} has no node_modules/oidc-provider: run `npm ci` there (scripts/test.sh does)",
            dir.display()
        );
    }
    let mut child = Command::new("node")
        .arg(dir.join("provider.mjs"))
        .args(["vigil", "bench-secret"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start node")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let j: serde_json::Value =
        serde_json::from_str(&line).context("the provider printed no issuer")?;
    let issuer = j["issuer"].as_str().context("no issuer")?.to_string();
    Ok(Provider { child, issuer })
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// An event of `key`'s agent using a lease that expired an hour ago.
fn trigger(key: &crate::keys::private::PrivateJwk, n: usize) -> Vec<u8> {
    let now = Timestamp::now();
    let members = vec![
        (
            "spec".to_string(),
            Value::String(crate::event::EVENT_SPEC.into()),
        ),
        ("event_id".into(), Value::String(format!("trigger-{n}"))),
        ("occurred_at".into(), Value::String(now.to_rfc3339_millis())),
        (
            "agent_id".into(),
            Value::String(key.agent_id.clone().unwrap_or_default()),
        ),
        ("key_id".into(), Value::String(key.kid.clone())),
        (
            "correlation_id".into(),
            Value::String(format!("trigger-corr-{n}")),
        ),
        ("action".into(), Value::String("db.export".into())),
        (
            "resource".into(),
            Value::String("postgres://hr/employees".into()),
        ),
        (
            "principal".into(),
            Value::String(format!("owner{n}@corp.example")),
        ),
        (
            "lease_id".into(),
            Value::String(format!("database/creds/bench/{n}")),
        ),
        (
            "lease_expires_at".into(),
            Value::String(Timestamp::from_secs(now.secs() - 3600).to_rfc3339_millis()),
        ),
    ];
    let c = json::Canonical::of_object(&members, "signature");
    let sig = crate::event::signature::sign(&key.key, &c.without);
    let mut members = members;
    members.push((
        "signature".into(),
        Value::String(crate::event::signature::b64url(&sig)),
    ));
    let mut out = Vec::new();
    json::write_jcs(&Value::Object(members), &mut out);
    out
}

/// What one trigger measured, in milliseconds from its acknowledgement.
struct Measured {
    posture_ms: f64,
    acked_wall_ms: f64,
}

/// Sends triggers and watches each victim's posture, timing every read.
async fn triggers(
    addr: SocketAddr,
    token: String,
    victims: Vec<crate::keys::private::PrivateJwk>,
    every: Duration,
) -> anyhow::Result<(Vec<Measured>, Vec<f64>)> {
    let mut client = Client::connect(addr, &token).await?;
    let mut reads = Vec::new();
    let mut measured = Vec::new();
    for (n, key) in victims.iter().enumerate() {
        let started = Instant::now();
        let (status, body) = client
            .send(
                "POST",
                "/v1/events",
                Some("application/x-ndjson"),
                Bytes::from(trigger(key, n)),
            )
            .await?;
        if status != 200 {
            bail!(
                "the trigger was answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let (acked, acked_wall_ms) = (Instant::now(), wall_ms());
        let path = format!(
            "/v1/agents/{}/posture",
            key.agent_id.clone().unwrap_or_default()
        );
        loop {
            let t = Instant::now();
            let (_, body) = client.send("GET", &path, None, Bytes::new()).await?;
            reads.push(t.elapsed().as_secs_f64() * 1e3);
            if body.windows(16).any(|w| w == b"step_up_required") {
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                bail!("agent {path} never became step_up_required");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        measured.push(Measured {
            posture_ms: acked.elapsed().as_secs_f64() * 1e3,
            acked_wall_ms,
        });
        tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
    }
    Ok((measured, reads))
}

/// A gateway asking background agents' postures every 5 ms until `stop`.
async fn gateway(
    addr: SocketAddr,
    token: String,
    agents: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<f64>> {
    let mut client = Client::connect(addr, &token).await?;
    let mut reads = Vec::new();
    for agent in agents.iter().cycle() {
        if *stop.borrow() {
            break;
        }
        let t = Instant::now();
        let (status, _) = client
            .send(
                "GET",
                &format!("/v1/agents/{agent}/posture"),
                None,
                Bytes::new(),
            )
            .await?;
        if status != 200 {
            bail!("the posture of {agent} was answered {status}");
        }
        reads.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(reads)
}

fn report(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{name}: n {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(0.0)
    );
}

/// A configuration asking for a step-up on every expired lease.
fn bench_config(data: &std::path::Path, issuer: &str) -> anyhow::Result<PathBuf> {
    let config = data.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[ciba]\nissuer = \"{issuer}\"\nclient_id = \"vigil\"\nclient_secret = \"bench-secret\"\n\
             [[response.rules]]\nkinds = [\"expired_lease\"]\nthen = \"step_up\"\n"
        ),
    )?;
    Ok(config)
}

/// Runs the benchmark and prints its report.
pub fn run(args: ResponseBenchArgs) -> anyhow::Result<()> {
    let provider = start_provider(&args.provider)?;
    let tmp = tempfile::Builder::new()
        .prefix("vigil-bench-response-")
        .tempdir()?;
    let data = tmp.path().to_path_buf();
    let n_triggers = (args.seconds * 1000 / args.every_ms.max(1)).saturating_sub(2) as usize;
    let (jwks, keys) = bench_agents(&data, args.agents + n_triggers)?;
    let (background, victims) = keys.split_at(args.agents);
    let now = Timestamp::now().to_rfc3339_millis();
    let total = args.rate * args.seconds as usize;
    let corpus: Vec<Vec<u8>> = (0..total)
        .map(|i| super::make_event(&background[i % background.len()], i, &now))
        .collect();
    let per_tick = (args.rate / 100).max(1);
    let config = bench_config(&data, &provider.issuer)?;
    let server = start_server(
        &data.join("data"),
        &jwks,
        &["--config", config.to_str().unwrap_or_default()],
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "vigil bench response: {} background events/s for {} s from {} agents, a trigger every {} ms",
        args.rate, args.seconds, args.agents, args.every_ms
    );
    let (addr, token) = (server.addr(), server.token().to_string());
    let names: Vec<String> = background
        .iter()
        .filter_map(|k| k.agent_id.clone())
        .collect();
    let (load, measured, gateway_reads) = rt.block_on(async {
        let (t, b) = (token.clone(), batches(&corpus, per_tick));
        let load = tokio::spawn(async move { super::fixed_rate(addr, &t, b, per_tick).await });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(gateway(addr, token.clone(), names, stop_rx));
        // Let the load reach its rate first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let measured = triggers(
            addr,
            token,
            victims.to_vec(),
            Duration::from_millis(args.every_ms),
        )
        .await;
        let _ = stop_tx.send(true);
        (load.await, measured, reader.await)
    });
    let (elapsed, lat, sent) = load??;
    let (measured, reads) = measured?;
    let gateway_reads = gateway_reads??;
    let requests = rt.block_on(provider.requests())?;
    let ciba = ciba_delays(&requests, &measured, victims)?;
    println!(
        "background: {:.0} events/s achieved; acknowledgement p99 {:.1} ms",
        sent as f64 / elapsed,
        percentile(&lat, 0.99) * 1e3
    );
    report(
        "trigger acknowledged -> posture step_up_required",
        measured.iter().map(|m| m.posture_ms).collect(),
    );
    report("trigger acknowledged -> CIBA request at the provider", ciba);
    report("GET /v1/agents/{id}/posture, victims while waiting", reads);
    report(
        "GET /v1/agents/{id}/posture, a gateway every 5 ms",
        gateway_reads,
    );
    server.stop()?;
    Ok(())
}
