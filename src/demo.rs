//! `vigil demo`: the pipeline on a local data directory with simulated
//! agents, no configuration needed. It starts the server, registers three
//! agents, feeds their signed events (with the occasional forgery, which is
//! receipted as `rejected:bad_signature`), and prints where to look and how
//! to verify a receipt offline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;

use crate::cli::ServeArgs;
use crate::client::Client;
use crate::event::signature::{b64url, generate_key, sign};
use crate::json::{self, Value};
use crate::keys::private::PrivateJwk;
use crate::server::{serve_settings, Server};
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
    /// Events per second from the simulated agents.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
}

struct Agent {
    key: PrivateJwk,
    role: &'static str,
    actions: &'static [(&'static str, &'static str)],
    principal: &'static str,
}

/// An agent of the demo.
struct DemoAgent {
    id: &'static str,
    role: &'static str,
    /// (action, resource prefix) pairs it takes in turn.
    actions: &'static [(&'static str, &'static str)],
    /// The user it acts for.
    principal: &'static str,
}

const AGENTS: [DemoAgent; 3] = [
    DemoAgent {
        id: "hr-assistant-1",
        role: "hr-assistant",
        actions: &[
            ("hris.lookup_employee", "hris://employees/E"),
            ("hris.update_address", "hris://employees/E"),
        ],
        principal: "alice@corp.example",
    },
    DemoAgent {
        id: "support-bot-1",
        role: "support-bot",
        actions: &[
            ("crm.read_ticket", "crm://tickets/T"),
            ("llm.chat", "llm://models/support-"),
        ],
        principal: "bob@corp.example",
    },
    DemoAgent {
        id: "db-reporter-1",
        role: "db-reporter",
        actions: &[("db.query", "postgres://analytics/table_")],
        principal: "carol@corp.example",
    },
];

/// The demo's agents with their keys, and the JWKS file that registers
/// them (made on the first run, reused after).
fn load_agents(dir: &Path) -> anyhow::Result<(Vec<Agent>, PathBuf)> {
    create_dir_durably(dir)?;
    let mut agents = Vec::new();
    let mut jwks = Vec::new();
    for DemoAgent {
        id,
        role,
        actions,
        principal,
    } in AGENTS
    {
        let path = dir.join(format!("{id}.key.jwk"));
        let key = if path.exists() {
            PrivateJwk::parse(&std::fs::read(&path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        } else {
            let k = PrivateJwk {
                kid: format!("{id}#demo"),
                agent_id: Some(id.into()),
                key: generate_key()?,
            };
            write_file_durably(&path, k.to_json().as_bytes(), 0o600)?;
            k
        };
        let mut public = key.public_jwk();
        public["role"] = role.into();
        public["owner"] = "demo@vigil.local".into();
        public["status"] = "active".into();
        jwks.push(public);
        agents.push(Agent {
            key,
            role,
            actions,
            principal,
        });
    }
    let jwks_path = dir.join("agents.jwks.json");
    write_file_durably(
        &jwks_path,
        serde_json::to_vec_pretty(&serde_json::json!({ "keys": jwks }))?.as_slice(),
        0o644,
    )?;
    Ok((agents, jwks_path))
}

fn signed_event(agent: &Agent, n: u64, forge: bool) -> (String, Vec<u8>) {
    let (action, resource) = agent.actions[(n as usize) % agent.actions.len()];
    let event_id = uuid::Uuid::now_v7().to_string();
    let members = vec![
        (
            "spec".to_string(),
            Value::String(crate::event::EVENT_SPEC.into()),
        ),
        ("event_id".into(), Value::String(event_id.clone())),
        (
            "occurred_at".into(),
            Value::String(Timestamp::now().to_rfc3339_millis()),
        ),
        (
            "agent_id".into(),
            Value::String(agent.key.agent_id.clone().unwrap_or_default()),
        ),
        ("key_id".into(), Value::String(agent.key.kid.clone())),
        (
            "correlation_id".into(),
            Value::String(format!("demo-{}-{}", agent.role, n / 5)),
        ),
        ("action".into(), Value::String(action.into())),
        ("principal".into(), Value::String(agent.principal.into())),
        (
            "resource".into(),
            Value::String(format!("{resource}{}", 1000 + n % 37)),
        ),
        ("records".into(), Value::Number((n % 7) as f64)),
    ];
    let canonical = json::Canonical::of_object(&members, "signature");
    let signer = if forge {
        generate_key().expect("the OS has randomness")
    } else {
        agent.key.key.clone()
    };
    let mut members = members;
    members.push((
        "signature".into(),
        Value::String(b64url(&sign(&signer, &canonical.without))),
    ));
    let mut out = Vec::new();
    json::write_jcs(&Value::Object(members), &mut out);
    (event_id, out)
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging("warn");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (agents, jwks) = load_agents(&args.data.join("demo-agents"))?;
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
    let mut feed = Feed {
        client: Client::connect(addr, &token).await?,
        agents,
        n: 0,
        accepted: 0,
        rejected: 0,
    };
    let dir = args.data.display().to_string();
    println!("Vigil demo: 3 simulated agents sign their actions; the pipeline verifies and receipts each one.");
    println!("  server       http://{addr}   (token: {dir}/admin.token, e.g. curl -H \"Authorization: Bearer $(cat {dir}/admin.token)\" http://{addr}/v1/checkpoint)");
    let per_tick = (args.rate / 4).max(1) as u64;
    let deadline = (args.duration > 0)
        .then(|| tokio::time::Instant::now() + Duration::from_secs(args.duration));
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let mut shown = false;
    loop {
        let first = feed.tick(per_tick).await?;
        if let Some(first) = first.filter(|_| !shown) {
            show_receipt(&args, addr, &mut feed.client, &pipeline, &first).await?;
            println!(
                "  {}",
                if deadline.is_some() {
                    format!("Running for {} s.", args.duration)
                } else {
                    "Press Ctrl-C to stop.".into()
                }
            );
            shown = true;
        }
        let tick = tokio::time::sleep(Duration::from_millis(250));
        tokio::select! {
            _ = tick => {}
            _ = &mut ctrl_c => break,
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
    }
    let _ = stop_tx.send(());
    served.await.context("the demo server task failed")??;
    println!(
        "Stopped: {} events accepted, {} rejected, all receipted in {dir}.",
        feed.accepted, feed.rejected
    );
    Ok(())
}

/// The simulated agents' stream of events, sent to the server.
struct Feed {
    client: Client,
    agents: Vec<Agent>,
    /// Events made so far.
    n: u64,
    accepted: u64,
    rejected: u64,
}

/// An event that was sent and accepted.
struct Sent {
    event_id: String,
    agent_id: String,
}

impl Feed {
    /// Sends `count` events in one NDJSON body (every 25th a forgery);
    /// returns the first genuine one.
    async fn tick(&mut self, count: u64) -> anyhow::Result<Option<Sent>> {
        let mut body = Vec::new();
        let mut first = None;
        for _ in 0..count {
            let agent = &self.agents[(self.n % self.agents.len() as u64) as usize];
            let agent_id = agent.key.agent_id.clone().unwrap_or_default();
            let forge = self.n % 25 == 24;
            let (event_id, ev) = signed_event(agent, self.n, forge);
            if forge {
                println!("  forgery      event {event_id} claims {agent_id} but is signed with another key -> rejected:bad_signature (receipted)");
            } else if first.is_none() {
                first = Some(Sent { event_id, agent_id });
            }
            body.extend_from_slice(&ev);
            body.push(b'\n');
            self.n += 1;
        }
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
        Ok(first)
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
    Ok(())
}
