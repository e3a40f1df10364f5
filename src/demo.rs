//! `vigil demo`: the pipeline on a local data directory with the simulated
//! fleet of `vigil simulate`, no configuration needed. It starts the
//! server, replays a week of history at once (baselines learn it in event
//! time), sends a forgery (receipted as `rejected:bad_signature`), then
//! plays the second week faster than life, with its attacks, printing each
//! alert as detection raises it, and prints how to verify a receipt
//! offline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;

use crate::cli::ServeArgs;
use crate::client::Client;
use crate::json::{self, Value};
use crate::server::{serve_settings, Server};
use crate::simulate::{monday_before, simulate_with, Options, Simulation};
use crate::store::fsutil::{create_dir_durably, write_file_durably};
use crate::time::Timestamp;

/// `vigil demo` options.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Data directory (kept between runs).
    #[arg(long, default_value = "./vigil-demo")]
    pub data: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Stop after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Simulated seconds per second in the live week (720: an hour every
    /// 5 s, an attack every minute or two).
    #[arg(long, default_value_t = 720)]
    pub speed: u64,
}

/// Days of history replayed at once before the live week.
const HISTORY_DAYS: i64 = 7;
/// How long before the first attack the live part starts, in simulated
/// ms (5 s at the default speed).
const LEAD_MS: i64 = crate::simulate::HOUR_MS;
/// Simulated days in all.
const DAYS: i64 = 14;
/// The demo's fleet (agents and keys) is the same on every run.
const FLEET_SEED: u64 = 1;

/// The demo's simulation: two agents of each role over two weeks ending
/// about a day ago, with an attack of every kind in the second week.
fn demo_simulation(dir: &Path) -> anyhow::Result<(Simulation, PathBuf)> {
    create_dir_durably(dir)?;
    let now_ms = (Timestamp::now().0 / 1_000_000) as i64;
    let seed = (now_ms / 1000) as u64;
    let sim = simulate_with(Options {
        fleet_seed: FLEET_SEED,
        seed,
        start_ms: monday_before(now_ms, DAYS + 1),
        days: DAYS,
        per_role: 2,
    });
    let jwks_path = dir.join("agents.jwks.json");
    write_file_durably(
        &jwks_path,
        &serde_json::to_vec_pretty(&crate::simulate::jwks(&sim.agents))?,
        0o644,
    )?;
    Ok((sim, jwks_path))
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging("warn");
    // Traces when $OTEL_EXPORTER_OTLP_ENDPOINT names a collector.
    crate::config::TelemetryConfig::default().start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ran = rt.block_on(demo(args));
    crate::telemetry::trace::shutdown();
    ran
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (sim, jwks) = demo_simulation(&args.data.join("demo-agents"))?;
    let serve = ServeArgs {
        data: Some(args.data.clone()),
        listen: Some(args.listen.clone()),
        keys: vec![jwks.display().to_string()],
        ..ServeArgs::default()
    };
    let mut server = Server::start(serve_settings(&serve)?)
        .await
        .context("cannot start the demo server (is another vigil using the port or directory?)")?;
    let addr = server.addr;
    let pipeline = server.pipeline.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        server
            .run(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    let token =
        std::fs::read_to_string(crate::store::layout::Layout::new(&args.data).admin_token())?
            .trim()
            .to_string();
    let dir = args.data.display().to_string();
    println!(
        "Vigil demo: {} simulated agents in {} roles sign their actions; the pipeline verifies, receipts and watches each one.",
        sim.agents.len(),
        crate::simulate::fleet::ROLES.len()
    );
    println!("  server       http://{addr}   (token: {dir}/admin.token, e.g. curl -H \"Authorization: Bearer $(cat {dir}/admin.token)\" http://{addr}/v1/checkpoint)");
    println!("  dashboard    http://{addr}/   (sign in with the token in {dir}/admin.token; attacks appear live)");
    println!("  anomalies    GET http://{addr}/v1/anomalies, live as Server-Sent Events at GET http://{addr}/v1/anomalies/stream");
    println!("  SQL          POST http://{addr}/v1/query {{\"sql\":\"SELECT agent_id, count(*) FROM events GROUP BY 1\"}} (tables events, receipts, anomalies, responses, quarantine)");
    let mut feed = Feed::new(Client::connect(addr, &token).await?, sim);
    let first = feed.history().await?;
    feed.forgery().await?;
    if let Some(first) = first {
        show_receipt(&args, addr, &mut feed.client, &pipeline, &first).await?;
    }
    println!(
        "  live week    simulated time runs {}x faster; {} attacks are coming. {}",
        args.speed,
        feed.sim.labels.episodes.len(),
        if args.duration > 0 {
            format!("Running for {} s.", args.duration)
        } else {
            "Press Ctrl-C to stop.".into()
        }
    );
    feed.live(&args).await?;
    let _ = stop_tx.send(());
    served.await.context("the demo server task failed")??;
    println!(
        "Stopped: {} events accepted, {} rejected, all receipted in {dir}; {} alerts shown.",
        feed.accepted,
        feed.rejected,
        feed.alerts_shown.len()
    );
    Ok(())
}

/// The simulation sent to the server: history at once, then the live
/// week paced by its event times.
struct Feed {
    client: Client,
    sim: Simulation,
    /// Events sent so far.
    next: usize,
    accepted: u64,
    rejected: u64,
    alerts_shown: std::collections::HashSet<String>,
    /// Anomalies whose response was shown.
    responses_shown: std::collections::HashSet<String>,
    /// Suspended agents the demo's analyst restores, and when.
    to_restore: Vec<(String, tokio::time::Instant)>,
}

/// How long a suspension lasts before the demo's analyst lifts it.
const RESTORE_AFTER: Duration = Duration::from_secs(3);

/// An event that was sent and accepted.
struct Sent {
    event_id: String,
    agent_id: String,
}

impl Feed {
    fn new(client: Client, sim: Simulation) -> Feed {
        Feed {
            client,
            sim,
            next: 0,
            accepted: 0,
            rejected: 0,
            alerts_shown: Default::default(),
            responses_shown: Default::default(),
            to_restore: Vec::new(),
        }
    }

    /// Sends the first week at once, and on up to [`LEAD_MS`] before the
    /// first attack (baselines learn it in event time; the live part then
    /// reaches an attack within seconds); returns an accepted event to
    /// show the receipt of.
    async fn history(&mut self) -> anyhow::Result<Option<Sent>> {
        let t0 = self.sim.times[0];
        let week = t0 + HISTORY_DAYS * crate::simulate::DAY_MS;
        let end = self
            .first_attack_ms()?
            .map_or(week, |t| week.max(t - LEAD_MS));
        let upto = self.sim.times.partition_point(|&t| t < end);
        let started = std::time::Instant::now();
        while self.next < upto {
            let n = (upto - self.next).min(500);
            self.send(n).await?;
        }
        let hours = (end - t0) / crate::simulate::HOUR_MS;
        println!(
            "  history      replayed {} days {} h ({upto} events) in {:.1} s: every agent now has a baseline, learnt in event time",
            hours / 24,
            hours % 24,
            started.elapsed().as_secs_f64()
        );
        let first = &self.sim.events[0];
        let v = json::parse(first)?;
        let field = |n: &str| v.get(n).and_then(Value::as_str).unwrap_or("").to_string();
        Ok(Some(Sent {
            event_id: field("event_id"),
            agent_id: field("agent_id"),
        }))
    }

    /// When the first event of any attack occurs, in ms.
    fn first_attack_ms(&self) -> anyhow::Result<Option<i64>> {
        let ids: std::collections::HashSet<&str> = (self.sim.labels.episodes.iter())
            .flat_map(|e| e.event_ids.iter().map(String::as_str))
            .collect();
        for (event, &t) in self.sim.events.iter().zip(&self.sim.times) {
            let v = json::parse(event)?;
            if v.get("event_id")
                .and_then(Value::as_str)
                .is_some_and(|id| ids.contains(id))
            {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// Sends one event whose signature no longer matches (its action was
    /// changed after signing).
    async fn forgery(&mut self) -> anyhow::Result<()> {
        let i = self.next.min(self.sim.events.len() - 1);
        let mut v = json::parse(&self.sim.events[i])?
            .into_members()
            .unwrap_or_default();
        let agent = v
            .iter()
            .find(|(k, _)| k == "agent_id")
            .and_then(|(_, a)| a.as_str().map(str::to_string))
            .unwrap_or_default();
        for (k, val) in v.iter_mut() {
            match k.as_str() {
                "event_id" => *val = Value::String(format!("forged-{}", uuid::Uuid::now_v7())),
                "action" => *val = Value::String("hr.delete_all_records".into()),
                _ => {}
            }
        }
        let mut body = Vec::new();
        json::write_jcs(&Value::Object(v), &mut body);
        self.post(body).await?;
        println!("  forgery      an event claiming {agent} was altered after signing -> rejected:bad_signature (receipted)");
        Ok(())
    }

    /// Sends the rest paced by event time, showing alerts as they come.
    async fn live(&mut self, args: &DemoArgs) -> anyhow::Result<()> {
        let deadline = (args.duration > 0)
            .then(|| tokio::time::Instant::now() + Duration::from_secs(args.duration));
        let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
        let wall0 = tokio::time::Instant::now();
        let sim0 = self.sim.times.get(self.next).copied().unwrap_or(0);
        let speed = args.speed.max(1) as f64;
        while self.next < self.sim.events.len() {
            let elapsed_ms = wall0.elapsed().as_secs_f64() * 1000.0 * speed;
            let due =
                self.sim.times[self.next..].partition_point(|&t| ((t - sim0) as f64) <= elapsed_ms);
            if due > 0 {
                self.send(due.min(500)).await?;
            }
            self.show_alerts().await?;
            self.restore_due().await?;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = &mut ctrl_c => return Ok(()),
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(());
            }
        }
        println!("  the simulated fortnight is over; the server keeps serving until Ctrl-C");
        if deadline.is_none() {
            let _ = ctrl_c.await;
        }
        Ok(())
    }

    async fn send(&mut self, n: usize) -> anyhow::Result<()> {
        let mut body = Vec::new();
        for e in &self.sim.events[self.next..self.next + n] {
            body.extend_from_slice(e);
            body.push(b'\n');
        }
        self.next += n;
        self.post(body).await
    }

    async fn post(&mut self, body: Vec<u8>) -> anyhow::Result<()> {
        let (status, answer) = self
            .client
            .send(
                "POST",
                "/v1/events",
                Some("application/x-ndjson"),
                Bytes::from(body),
            )
            .await?;
        anyhow::ensure!(
            status == 200,
            "the demo server answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        let a: serde_json::Value = serde_json::from_slice(&answer)?;
        self.accepted += a["accepted"].as_u64().unwrap_or(0);
        self.rejected += a["rejected"].as_u64().unwrap_or(0);
        Ok(())
    }

    /// Prints alerts not shown yet.
    async fn show_alerts(&mut self) -> anyhow::Result<()> {
        let (_, body) = self
            .client
            .send(
                "GET",
                "/v1/anomalies?min_score=50&limit=50",
                None,
                Bytes::new(),
            )
            .await?;
        let list: serde_json::Value = serde_json::from_slice(&body)?;
        let Some(items) = list["anomalies"].as_array() else {
            return Ok(());
        };
        for a in items.iter().rev() {
            let id = a["anomaly_id"].as_str().unwrap_or("").to_string();
            if self.alerts_shown.insert(id.clone()) {
                println!(
                    "  ALERT {:>3} {:<8} {} {}",
                    a["score"],
                    a["severity"].as_str().unwrap_or(""),
                    a["event_time"].as_str().unwrap_or(""),
                    a["summary"].as_str().unwrap_or("")
                );
            }
            self.show_response(&id, a);
        }
        Ok(())
    }

    /// Prints what the response did about an anomaly, once.
    fn show_response(&mut self, id: &str, a: &serde_json::Value) {
        let (action, status) = (
            a["response"]["action"].as_str().unwrap_or("none"),
            a["response"]["status"].as_str().unwrap_or(""),
        );
        if action == "none" || !self.responses_shown.insert(id.to_string()) {
            return;
        }
        let agent = a["agent_id"].as_str().unwrap_or("").to_string();
        println!(
            "  RESPONSE     {action} -> {status}: agent {agent} (GET /v1/agents/{agent}/posture; its next events are rejected:agent_not_active)"
        );
        if status == "suspended" {
            self.to_restore
                .push((agent, tokio::time::Instant::now() + RESTORE_AFTER));
        }
    }

    /// Lifts the suspensions that are due, as an analyst would after
    /// looking.
    async fn restore_due(&mut self) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.to_restore.drain(..).partition(|(_, at)| *at <= now);
        self.to_restore = later;
        for (agent, _) in due {
            let path = format!("/v1/agents/{agent}/restore");
            let (status, _) = self.client.send("POST", &path, None, Bytes::new()).await?;
            if status == 200 {
                println!("  restored     {agent}: the demo's analyst lifted the suspension (POST {path}, receipted)");
            }
        }
        Ok(())
    }
}

/// Checkpoints, fetches the receipt of `sent` with its proof, saves the
/// proof and the log's verifier key, and prints how to verify both.
async fn show_receipt(
    args: &DemoArgs,
    addr: std::net::SocketAddr,
    client: &mut Client,
    pipeline: &crate::pipeline::Pipeline,
    sent: &Sent,
) -> anyhow::Result<()> {
    let Sent { event_id, agent_id } = sent;
    let checkpoint = pipeline.checkpoint_now().await?;
    let (status, body) = client
        .send(
            "GET",
            &format!("/v1/receipts/{event_id}?agent_id={agent_id}"),
            None,
            Bytes::new(),
        )
        .await?;
    anyhow::ensure!(status == 200, "receipt lookup answered {status}");
    let found: serde_json::Value = serde_json::from_slice(&body)?;
    let proof_path = args.data.join("demo-receipt.proof");
    let vkey_path = args.data.join("log.vkey");
    write_file_durably(
        &proof_path,
        found["proof"].as_str().unwrap_or("").as_bytes(),
        0o644,
    )?;
    write_file_durably(
        &vkey_path,
        format!("{}\n", pipeline.verifier_keys()[0]).as_bytes(),
        0o644,
    )?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "vigil".into());
    println!("  checkpoint   (GET http://{addr}/v1/checkpoint)");
    for line in checkpoint.lines() {
        println!("               {line}");
    }
    println!(
        "  receipt      event {event_id} of {agent_id}: {}",
        found["receipt"]["verdict"]
    );
    println!("  verify it offline, with nothing but the proof and the log's public key:");
    println!(
        "               {exe} verify-proof {} --vkey {}",
        proof_path.display(),
        vkey_path.display()
    );
    println!("  verify the whole log after stopping the demo:");
    println!("               {exe} verify --data {}", args.data.display());
    println!("  and query it:  {exe} query --data {} \"SELECT kinds, count(*) FROM anomalies GROUP BY 1\"", args.data.display());
    Ok(())
}
