//! `vigil bench ingest`: the load generator.
//!
//! It measures this machine's strict Ed25519 verification rate (1 and N
//! threads), signs a corpus before any timing starts (signing costs as much
//! as verifying), starts `vigil serve` as a child process on a fresh data
//! directory, then drives `POST /v1/events` with NDJSON batches twice: as
//! fast as it can (throughput) and at a fixed rate (acknowledgement
//! latency, measured from each batch's scheduled send time so queueing
//! counts). It reports events/s, p50/p99 latency, and the CPU time used by
//! the server and by itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use ed25519_dalek::SigningKey;
use rayon::prelude::*;

use crate::client::Client;
use crate::event::signature::{b64url, sign};
use crate::json::{self, Value};
use crate::keys::private::PrivateJwk;
use crate::time::Timestamp;

pub mod kafka;
pub mod log;
pub mod query;
pub mod response;

/// `vigil bench ingest` options.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Events in the throughput phase.
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Events per NDJSON batch in the throughput phase.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent connections in the throughput phase.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Events per second in the latency phase.
    #[arg(long, default_value_t = 10_000)]
    pub rate: usize,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Distinct simulated agents.
    #[arg(long, default_value_t = 64)]
    pub agents: usize,
    /// Keep the server's data directory here (default: a temporary one).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A configuration file for the server (`vigil serve --config`), to
    /// compare settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl LoadArgs {
    /// The extra `vigil serve` arguments these options ask for.
    fn serve_args(&self) -> Vec<&str> {
        match &self.config {
            Some(c) => vec!["--config", c.to_str().unwrap_or_default()],
            None => Vec::new(),
        }
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) used so far by a process.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

/// Waits (at most 60 s) until the server `pid` has used under a tenth of a
/// core for half a second: a fresh server first logs its keys in force and
/// its followers read those records (with 10,000 agents, seconds of work),
/// and a timed phase should measure the steady state, not that start.
pub(crate) fn wait_until_idle(pid: &str) {
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut before = cpu_seconds(pid);
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
        let now = cpu_seconds(pid);
        if now - before < 0.01 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(500) {
                return;
            }
        } else {
            quiet_since = None;
        }
        before = now;
    }
    eprintln!("vigil bench: the server was still busy after 60 s; measuring anyway");
}

/// Strict verifications per second with `threads` threads for ~1 s.
pub(crate) fn verify_rate(threads: usize) -> f64 {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    let msgs: Vec<(Vec<u8>, [u8; 64])> = (0..256u32)
        .map(|i| {
            let mut m = vec![b'x'; 600];
            m[..4].copy_from_slice(&i.to_le_bytes());
            let s = sign(&key, &m);
            (m, s)
        })
        .collect();
    let msgs = Arc::new(msgs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let msgs = msgs.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(1000) {
                    for (m, s) in msgs.iter().take(64) {
                        let sig = ed25519_dalek::Signature::from_bytes(s);
                        assert!(
                            public.verify_strict(m, &sig).is_ok(),
                            "a signature made here verifies"
                        );
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("a verify thread finishes"))
        .sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// A signed benchmark event (about 560 bytes) of `key`'s agent, number `i`,
/// occurring at `now`; its event id is unique.
pub fn make_event(key: &PrivateJwk, i: usize, now: &str) -> Vec<u8> {
    make_event_with_id(
        key,
        &format!("bench-{i:09}-{}", uuid::Uuid::now_v7()),
        i,
        now,
    )
}

/// [`make_event`] with a given event id.
pub fn make_event_with_id(key: &PrivateJwk, event_id: &str, i: usize, now: &str) -> Vec<u8> {
    let members = vec![
        (
            "spec".to_string(),
            Value::String(crate::event::EVENT_SPEC.into()),
        ),
        ("event_id".into(), Value::String(event_id.to_string())),
        ("occurred_at".into(), Value::String(now.to_string())),
        (
            "agent_id".into(),
            Value::String(key.agent_id.clone().unwrap_or_default()),
        ),
        ("key_id".into(), Value::String(key.kid.clone())),
        (
            "correlation_id".into(),
            Value::String(format!("bench-corr-{}", i / 10)),
        ),
        (
            "action".into(),
            Value::String(["db.query", "llm.chat", "hris.lookup_employee"][i % 3].into()),
        ),
        (
            "principal".into(),
            Value::String(format!("user{}@corp.example", i % 500)),
        ),
        (
            "resource".into(),
            Value::String(format!("postgres://analytics/table_{}", i % 97)),
        ),
        (
            "session_id".into(),
            Value::String(format!("sess-{}", i / 50)),
        ),
        ("source_ip".into(), Value::String("10.1.2.3".into())),
        ("records".into(), Value::Number((i % 1000) as f64)),
        (
            "justification".into(),
            Value::String("scheduled report for the finance team, ticket FIN-2231".into()),
        ),
    ];
    let c = json::Canonical::of_object(&members, "signature");
    let mut members = members;
    members.push((
        "signature".into(),
        Value::String(b64url(&sign(&key.key, &c.without))),
    ));
    let mut out = Vec::new();
    json::write_jcs(&Value::Object(members), &mut out);
    out
}

pub(crate) fn batches(events: &[Vec<u8>], size: usize) -> Vec<Bytes> {
    events
        .chunks(size)
        .map(|chunk| {
            let mut body = Vec::with_capacity(chunk.len() * 700);
            for e in chunk {
                body.extend_from_slice(e);
                body.push(b'\n');
            }
            Bytes::from(body)
        })
        .collect()
}

pub(crate) struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    token: String,
}

impl ServerProcess {
    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its admin token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// SIGTERM, then waits for it to exit.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        self.child.wait()?;
        std::mem::forget(self);
        Ok(())
    }

    /// SIGKILL, then waits for it.
    pub(crate) fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_server(
    data: &Path,
    jwks: &Path,
    extra: &[&str],
) -> anyhow::Result<ServerProcess> {
    let exe = std::env::current_exe()?;
    let _ = std::fs::remove_file(data.join("listen.addr"));
    // Bench traffic is random: detection flags some of it, and the default
    // response policy would suspend bench agents mid-run. Without a
    // configuration of the caller's, responses are turned off.
    let quiet = data.join("bench-no-response.toml");
    let mut extra: Vec<&str> = extra.to_vec();
    if !extra.contains(&"--config") {
        std::fs::create_dir_all(data)?;
        std::fs::write(&quiet, "[[response.rules]]\nthen = \"none\"\n")?;
        extra.extend(["--config", quiet.to_str().unwrap_or_default()]);
    }
    let child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--keys")
        .arg(jwks)
        .args(&extra)
        .env("RUST_LOG", "warn")
        .spawn()
        .context("cannot start vigil serve")?;
    let addr_file = data.join("listen.addr");
    let start = Instant::now();
    while !addr_file.exists() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("vigil serve did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = std::fs::read_to_string(&addr_file)?.trim().parse()?;
    let token = std::fs::read_to_string(crate::store::layout::Layout::new(data).admin_token())?
        .trim()
        .to_string();
    Ok(ServerProcess { child, addr, token })
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The keys of `agents` bench agents, and their JWKS written into `data`.
pub(crate) fn bench_agents(
    data: &Path,
    agents: usize,
) -> anyhow::Result<(PathBuf, Vec<PrivateJwk>)> {
    let keys: Vec<PrivateJwk> = (0..agents)
        .map(|i| {
            // A distinct key per agent, whatever their number.
            let mut seed = [1u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            PrivateJwk {
                kid: format!("bench-agent-{i}#1"),
                agent_id: Some(format!("bench-agent-{i}")),
                key: SigningKey::from_bytes(&seed),
            }
        })
        .collect();
    let jwks: Vec<serde_json::Value> = keys.iter().map(|k| k.public_jwk()).collect();
    let jwks_path = data.join("bench.jwks.json");
    std::fs::create_dir_all(data)?;
    std::fs::write(
        &jwks_path,
        serde_json::to_vec(&serde_json::json!({ "keys": jwks }))?,
    )?;
    Ok((jwks_path, keys))
}

/// Writes the JWKS of `agents` bench agents into `data` and signs `total`
/// events (in parallel, before any timing); returns the JWKS path and the
/// events.
pub(crate) fn signed_corpus(
    data: &Path,
    agents: usize,
    total: usize,
) -> anyhow::Result<(PathBuf, Vec<Vec<u8>>)> {
    let (jwks_path, keys) = bench_agents(data, agents)?;
    let sign_start = Instant::now();
    let now = Timestamp::now().to_rfc3339_millis();
    let corpus: Vec<Vec<u8>> = (0..total)
        .into_par_iter()
        .map(|i| make_event(&keys[i % keys.len()], i, &now))
        .collect();
    let mean_size = corpus.iter().map(Vec::len).sum::<usize>() / corpus.len().max(1);
    println!(
        "signed a corpus of {total} events (mean {mean_size} bytes) in {:.1} s, before any timing",
        sign_start.elapsed().as_secs_f64()
    );
    Ok((jwks_path, corpus))
}

/// The cores this machine offers (2 if it cannot tell).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// CPU seconds used by the server and by this process since [`Cpu::start`].
struct Cpu {
    server_pid: String,
    server: f64,
    this: f64,
}

impl Cpu {
    fn start(server_pid: &str) -> Cpu {
        Cpu {
            server_pid: server_pid.to_string(),
            server: cpu_seconds(server_pid),
            this: cpu_seconds("self"),
        }
    }

    /// Seconds used so far.
    fn used(&self) -> CpuUsed {
        CpuUsed {
            server: cpu_seconds(&self.server_pid) - self.server,
            load_generator: cpu_seconds("self") - self.this,
        }
    }
}

/// CPU seconds used over a phase.
struct CpuUsed {
    server: f64,
    load_generator: f64,
}

/// Runs the benchmark and prints its report.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let cores = cores();
    println!("vigil bench ingest: {cores} cores");
    // The best of three 1-second runs each: the baseline should not be
    // lowered by a passing hiccup of the machine.
    let v1 = (0..3).map(|_| verify_rate(1)).fold(0.0, f64::max);
    let vn = (0..3).map(|_| verify_rate(cores)).fold(0.0, f64::max);
    println!(
        "strict Ed25519 verification (ed25519-dalek verify_strict, 600-byte messages, best of 3 s): {v1:.0}/s on 1 thread, {vn:.0}/s on {cores} threads"
    );
    let tmp;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("vigil-bench-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let latency_events = args.rate * args.latency_seconds as usize;
    let total = args.events + latency_events;
    let (jwks_path, corpus) = signed_corpus(&data, args.agents, total)?;
    let (throughput_events, latency_corpus) = corpus.split_at(args.events);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = start_server(&data, &jwks_path, &args.serve_args())?;
    throughput_phase(
        &rt,
        &server,
        batches(throughput_events, args.batch),
        &args,
        vn,
    )?;
    // The latency phase runs on a fresh server and data directory, after
    // the throughput phase's writes are flushed, so that it measures the
    // steady state at that rate rather than the previous phase's writeback.
    drop(server);
    let _ = Command::new("sync").status();
    let server = start_server(&data.join("latency"), &jwks_path, &args.serve_args())?;
    latency_phase(&rt, &server, latency_corpus, &args)
}

/// Sends the throughput corpus as fast as the server acknowledges it;
/// prints the rate (against `strict_rate`, the all-core `verify_strict`
/// rate), the latencies, CPU and table cache.
fn throughput_phase(
    rt: &tokio::runtime::Runtime,
    server: &ServerProcess,
    corpus: Vec<Bytes>,
    args: &LoadArgs,
    strict_rate: f64,
) -> anyhow::Result<()> {
    let cores = cores();
    let server_pid = server.child.id().to_string();
    wait_until_idle(&server_pid);
    let cpu = Cpu::start(&server_pid);
    let (elapsed, lat) = rt.block_on(throughput(
        server.addr,
        &server.token,
        corpus,
        args.connections,
        args.batch,
    ))?;
    let CpuUsed {
        server: server_cpu,
        load_generator: own_cpu,
    } = cpu.used();
    println!();
    println!(
        "## throughput: {} events in batches of {}, {} connections",
        args.events, args.batch, args.connections
    );
    let rate = args.events as f64 / elapsed;
    println!(
        "durable ingest: {rate:.0} events/s ({:.2} of the {cores}-thread strict verification rate)",
        rate / strict_rate
    );
    println!(
        "batch acknowledgement latency: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3
    );
    println!(
        "CPU: vigil {server_cpu:.1} s ({:.0}% of {cores} cores), load generator {own_cpu:.1} s, over {elapsed:.1} s",
        server_cpu / elapsed / cores as f64 * 100.0,
    );
    if let Some(line) = rt.block_on(table_cache(server.addr, &server.token))? {
        println!("{line}");
    }
    Ok(())
}

/// Sends the latency corpus at the fixed rate in 100 batches a second;
/// prints the latencies from each batch's scheduled time, CPU and
/// detection lag.
fn latency_phase(
    rt: &tokio::runtime::Runtime,
    server: &ServerProcess,
    corpus: &[Vec<u8>],
    args: &LoadArgs,
) -> anyhow::Result<()> {
    let per_tick = (args.rate / 100).max(1);
    let server_pid = server.child.id().to_string();
    wait_until_idle(&server_pid);
    let cpu = Cpu::start(&server_pid);
    let (elapsed, lat, sent) = rt.block_on(fixed_rate(
        server.addr,
        &server.token,
        batches(corpus, per_tick),
        per_tick,
    ))?;
    let CpuUsed {
        server: server_cpu,
        load_generator: own_cpu,
    } = cpu.used();
    println!();
    println!(
        "## latency: {} events/s for {} s in batches of {per_tick} (100 batches/s)",
        args.rate, args.latency_seconds
    );
    println!(
        "achieved {:.0} events/s; acknowledgement latency from scheduled send: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sent as f64 / elapsed,
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3,
        lat.last().copied().unwrap_or(0.0) * 1e3
    );
    println!("CPU: vigil {server_cpu:.1} s, load generator {own_cpu:.1} s, over {elapsed:.1} s");
    if let Some(lag) = rt.block_on(detection_lag(server.addr, &server.token))? {
        println!("{lag}");
    }
    Ok(())
}

/// The server's per-key verification tables: hits, misses, builds and
/// memory, from its metrics.
async fn table_cache(addr: SocketAddr, token: &str) -> anyhow::Result<Option<String>> {
    // The server copies the counters into its metrics every second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut client = Client::connect(addr, token).await?;
    let (_, body) = client.send("GET", "/metrics", None, Bytes::new()).await?;
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let (Some(hits), Some(misses), Some(builds), Some(bytes)) = (
        value("vigil_verify_table_hits_total"),
        value("vigil_verify_table_misses_total"),
        value("vigil_verify_table_builds_total"),
        value("vigil_verify_table_bytes"),
    ) else {
        return Ok(None);
    };
    Ok(Some(format!(
        "per-key tables: {hits:.0} hits, {misses:.0} misses ({:.1}% of checks by table), {builds:.0} built, {:.1} MiB",
        hits / (hits + misses).max(1.0) * 100.0,
        bytes / (1 << 20) as f64
    )))
}

/// The server's detection lag (receipt to judged) from its histogram, or
/// `None` when detection is off.
async fn detection_lag(addr: SocketAddr, token: &str) -> anyhow::Result<Option<String>> {
    // Let detection judge the last events sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut client = Client::connect(addr, token).await?;
    let (_, body) = client.send("GET", "/metrics", None, Bytes::new()).await?;
    let text = String::from_utf8_lossy(&body);
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("vigil_detection_lag_seconds_bucket{le=\"") else {
            continue;
        };
        let Some((le, n)) = rest.split_once("\"} ") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((le, n.trim().parse()?));
    }
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return Ok(None);
    }
    let within = |bound: f64| buckets.iter().find(|b| b.0 >= bound).map_or(total, |b| b.1) / total;
    let p99 = buckets
        .iter()
        .find(|b| b.1 / total >= 0.99)
        .map_or(f64::INFINITY, |b| b.0);
    Ok(Some(format!(
        "detection: {:.1}% of {total:.0} events judged within 100 ms of their receipt time, p99 at most {:.0} ms",
        within(0.1) * 100.0,
        p99 * 1e3
    )))
}

async fn post_checked(client: &mut Client, body: Bytes, expect: usize) -> anyhow::Result<()> {
    let (status, answer) = client
        .send("POST", "/v1/events", Some("application/x-ndjson"), body)
        .await?;
    if status != 200 {
        bail!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let a: serde_json::Value = serde_json::from_slice(&answer)?;
    if a["accepted"].as_u64() != Some(expect as u64) {
        bail!(
            "a batch of {expect} was not all accepted: {}",
            &String::from_utf8_lossy(&answer)[..300.min(answer.len())]
        );
    }
    Ok(())
}

pub(crate) async fn throughput(
    addr: SocketAddr,
    token: &str,
    batches: Vec<Bytes>,
    connections: usize,
    batch: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let batches = Arc::new(batches);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (batches, next, token) = (batches.clone(), next.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &token).await?;
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = batches.get(i) else { break };
                let expect = body.iter().filter(|&&b| b == b'\n').count().min(batch);
                let t = Instant::now();
                post_checked(&mut client, body.clone(), expect).await?;
                lat.push(t.elapsed().as_secs_f64());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((elapsed, lat))
}

async fn fixed_rate(
    addr: SocketAddr,
    token: &str,
    batches: Vec<Bytes>,
    per_tick: usize,
) -> anyhow::Result<(f64, Vec<f64>, usize)> {
    let (tx, rx) = async_channel(batches.len());
    // Connected before the schedule starts: the first batches measure the
    // server, not TCP handshakes.
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(Client::connect(addr, token).await?);
    }
    let start = tokio::time::Instant::now();
    let mut workers = Vec::new();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for mut client in clients {
        let rx = rx.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let job = rx.lock().await.recv().await;
                let Some((scheduled, body)) = job else { break };
                let expect = per_tick;
                post_checked(&mut client, body, expect).await?;
                lat.push(scheduled_elapsed(scheduled));
                if std::env::var_os("VIGIL_TRACE_LAT").is_some() && *lat.last().unwrap() > 0.012 {
                    eprintln!(
                        "SLOW at {:.3} s: {:.1} ms",
                        (scheduled - start).as_secs_f64(),
                        lat.last().unwrap() * 1e3
                    );
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let n = batches.len();
    for (k, body) in batches.into_iter().enumerate() {
        let at = start + Duration::from_millis(10 * k as u64);
        tokio::time::sleep_until(at).await;
        tx.send((at, body))
            .await
            .map_err(|_| anyhow::anyhow!("latency workers stopped early"))?;
    }
    drop(tx);
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((elapsed, lat, n * per_tick))
}

fn scheduled_elapsed(at: tokio::time::Instant) -> f64 {
    at.elapsed().as_secs_f64()
}

type Job = (tokio::time::Instant, Bytes);

fn async_channel(
    cap: usize,
) -> (
    tokio::sync::mpsc::Sender<Job>,
    tokio::sync::mpsc::Receiver<Job>,
) {
    tokio::sync::mpsc::channel(cap.max(1))
}
