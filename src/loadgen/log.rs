//! `vigil bench log`: the log's read side at scale (issue 8's targets).
//!
//! It grows one log to each size given (1M and 10M receipts by default,
//! signed and sent over HTTP like any ingest), and at each size measures:
//! the server's start-up after a clean stop and after a kill -9 during
//! ingest, its resident memory, the latency of `GET /v1/receipts` with its
//! inclusion proof for random receipts, the size on disk, and `vigil
//! verify` over the whole log against the machine's strict verification
//! rate measured in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use rayon::prelude::*;

use super::{
    bench_agents, make_event_with_id, percentile, start_server, throughput, verify_rate,
    ServerProcess,
};
use crate::client::Client;
use crate::keys::private::PrivateJwk;
use crate::time::Timestamp;

/// `vigil bench log` options.
#[derive(Args, Debug, Clone)]
pub struct LogBenchArgs {
    /// Log sizes to measure at, ascending (the log grows from one to the next).
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    pub sizes: Vec<u64>,
    /// Distinct simulated agents.
    #[arg(long, default_value_t = 64)]
    pub agents: usize,
    /// Receipts looked up (with proofs) at each size.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Keep the data directory here (default: a temporary one).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// What was measured at one size.
struct Row {
    size: u64,
    disk_bytes: u64,
    start_clean_s: f64,
    start_crash_s: f64,
    rss_start_mib: f64,
    rss_after_mib: f64,
    hwm_mib: f64,
    proof_p50_ms: f64,
    proof_p99_ms: f64,
    verify_s: f64,
    verify_peak_mib: f64,
    /// `verify_strict` on every core, measured just before `verify_s`.
    strict_rate: f64,
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The event id of bench receipt `i`.
fn event_id(i: u64) -> String {
    format!("log-{i:010}")
}

/// Signs and sends events `from..to` (in chunks, signing in parallel).
fn fill(
    rt: &tokio::runtime::Runtime,
    server: &ServerProcess,
    keys: &[PrivateJwk],
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let now = Timestamp::now().to_rfc3339_millis();
    let started = Instant::now();
    let mut at = from;
    while at < to {
        let end = (at + 100_000).min(to);
        let events: Vec<Vec<u8>> = (at..end)
            .into_par_iter()
            .map(|i| {
                let key = &keys[i as usize % keys.len()];
                make_event_with_id(key, &event_id(i), i as usize, &now)
            })
            .collect();
        let bodies: Vec<Bytes> = super::batches(&events, 1000);
        rt.block_on(throughput(server.addr, &server.token, bodies, 4, 1000))?;
        at = end;
        eprintln!(
            "vigil bench log: {at} receipts ({:.0}/s)",
            (at - from) as f64 / started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// How many bench events (`event_id(0..n)`) the log already holds, when
/// `--data` names the directory of an earlier run: they were sent in
/// order, so the first missing one is found by binary search.
fn already_filled(
    rt: &tokio::runtime::Runtime,
    server: &ServerProcess,
    keys: &[PrivateJwk],
    most: u64,
) -> anyhow::Result<u64> {
    rt.block_on(async {
        let mut c = Client::connect(server.addr, &server.token).await?;
        let (mut lo, mut hi) = (0u64, most);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let agent = keys[mid as usize % keys.len()]
                .agent_id
                .clone()
                .unwrap_or_default();
            let path = format!("/v1/receipts/{}?agent_id={agent}", event_id(mid));
            let (status, _) = c.send("GET", &path, None, Bytes::new()).await?;
            if status == 200 {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        anyhow::Ok(lo)
    })
}

/// Starts the server and waits until it answers `/readyz`; returns it and
/// the time it took.
fn start_timed(
    data: &Path,
    jwks: &Path,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(ServerProcess, f64)> {
    let t = Instant::now();
    let server = start_server(data, jwks, &[])?;
    rt.block_on(async {
        let mut c = Client::connect(server.addr, &server.token).await?;
        loop {
            let (status, _) = c.send("GET", "/readyz", None, Bytes::new()).await?;
            if status == 200 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })?;
    Ok((server, t.elapsed().as_secs_f64()))
}

/// Looks up `samples` random receipts with their proofs; returns sorted
/// latencies in seconds.
fn sample_proofs(
    rt: &tokio::runtime::Runtime,
    server: &ServerProcess,
    keys: &[PrivateJwk],
    size: u64,
    samples: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut state = 0x5eed_u64 ^ size;
    rt.block_on(async {
        let mut c = Client::connect(server.addr, &server.token).await?;
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (state >> 11) % size;
            let agent = keys[i as usize % keys.len()]
                .agent_id
                .clone()
                .unwrap_or_default();
            let path = format!("/v1/receipts/{}?agent_id={agent}", event_id(i));
            let t = Instant::now();
            let (status, body) = c.send("GET", &path, None, Bytes::new()).await?;
            lat.push(t.elapsed().as_secs_f64());
            if status != 200 || !body.windows(22).any(|w| w == b"c2sp.org/tlog-proof@v1") {
                bail!(
                    "{path}: {status} without a proof: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        lat.sort_by(f64::total_cmp);
        anyhow::Ok(lat)
    })
}

/// How `vigil verify` over the whole log went.
struct VerifyRun {
    secs: f64,
    /// Its peak RSS (sampled every 100 ms).
    peak_mib: f64,
}

/// Times `vigil verify` over the whole log and follows its memory.
fn verify_run(data: &Path) -> anyhow::Result<VerifyRun> {
    let t = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["verify", "--quiet", "--data"])
        .arg(data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run vigil verify")?;
    let mut peak_kib: f64 = 0.0;
    let status = loop {
        peak_kib = peak_kib.max(status_kib(child.id(), "VmHWM:"));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err)?;
        }
        bail!("vigil verify failed: {err}");
    }
    Ok(VerifyRun {
        secs: t.elapsed().as_secs_f64(),
        peak_mib: peak_kib / 1024.0,
    })
}

fn measure(
    rt: &tokio::runtime::Runtime,
    data: &Path,
    jwks: &Path,
    keys: &[PrivateJwk],
    size: u64,
    samples: usize,
    server: ServerProcess,
) -> anyhow::Result<(Row, ServerProcess)> {
    server.stop()?;
    let _ = Command::new("sync").status();
    let disk_bytes = dir_bytes(data);
    let (server, start_clean_s) = start_timed(data, jwks, rt)?;
    let pid = server.child.id();
    let rss_start_mib = status_kib(pid, "VmRSS:") / 1024.0;
    let lat = sample_proofs(rt, &server, keys, size, samples)?;
    let rss_after_mib = status_kib(pid, "VmRSS:") / 1024.0;
    let hwm_mib = status_kib(pid, "VmHWM:") / 1024.0;
    // A crash during ingest, then the time to serve again.
    let extra: Vec<Bytes> = super::batches(
        &(0..2000u64)
            .map(|i| {
                make_event_with_id(
                    &keys[0],
                    &format!("crash-{size}-{i}"),
                    i as usize,
                    &Timestamp::now().to_rfc3339_millis(),
                )
            })
            .collect::<Vec<_>>(),
        100,
    );
    let (addr, token) = (server.addr, server.token.clone());
    let sender = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(throughput(addr, &token, extra, 1, 100)).ok()
    });
    std::thread::sleep(Duration::from_millis(150));
    server.kill9()?;
    let _ = sender.join();
    let (server, start_crash_s) = start_timed(data, jwks, rt)?;
    server.stop()?;
    // The machine's speed drifts: the reference rate is measured right
    // before the run it is compared with.
    let cores = super::cores();
    let strict_rate = (0..3).map(|_| verify_rate(cores)).fold(0.0, f64::max);
    let verify = verify_run(data)?;
    let (server, _) = start_timed(data, jwks, rt)?;
    Ok((
        Row {
            size,
            disk_bytes,
            start_clean_s,
            start_crash_s,
            rss_start_mib,
            rss_after_mib,
            hwm_mib,
            proof_p50_ms: percentile(&lat, 0.5) * 1e3,
            proof_p99_ms: percentile(&lat, 0.99) * 1e3,
            verify_s: verify.secs,
            verify_peak_mib: verify.peak_mib,
            strict_rate,
        },
        server,
    ))
}

/// Runs the benchmark and prints its report.
pub fn run(args: LogBenchArgs) -> anyhow::Result<()> {
    let cores = super::cores();
    let vn = (0..3).map(|_| verify_rate(cores)).fold(0.0, f64::max);
    println!("vigil bench log: {cores} cores; strict Ed25519 verification {vn:.0}/s on {cores} threads (verify_strict, best of 3 s)");
    let tmp;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("vigil-bench-log-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let (jwks, keys) = bench_agents(&data, args.agents)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (mut server, _) = start_timed(&data, &jwks, &rt)?;
    let mut rows = Vec::new();
    let most = args.sizes.iter().copied().max().unwrap_or(0);
    let mut filled = already_filled(&rt, &server, &keys, most)?;
    if filled > 0 {
        println!(
            "vigil bench log: {} already holds {filled} bench receipts; continuing",
            data.display()
        );
    }
    for &size in &args.sizes {
        if filled < size {
            fill(&rt, &server, &keys, filled, size)?;
            filled = size;
        }
        let (row, next) = measure(&rt, &data, &jwks, &keys, size, args.samples, server)?;
        server = next;
        let r = &row;
        println!(
            "{} receipts: start {:.2} s (clean), {:.2} s (after kill -9); RSS {:.0} MiB at start, {:.0} MiB after {} lookups (peak {:.0} MiB); \
             receipt with proof p50 {:.2} ms, p99 {:.2} ms; {:.0} bytes on disk per receipt; verify {:.0} s = {:.0} receipts/s ({:.2} of the {cores}-thread verification rate, {:.0}/s just before; peak RSS {:.0} MiB)",
            r.size, r.start_clean_s, r.start_crash_s, r.rss_start_mib, r.rss_after_mib, args.samples, r.hwm_mib,
            r.proof_p50_ms, r.proof_p99_ms, r.disk_bytes as f64 / r.size as f64, r.verify_s,
            r.size as f64 / r.verify_s, r.size as f64 / r.verify_s / r.strict_rate, r.strict_rate, r.verify_peak_mib
        );
        rows.push(row);
    }
    server.stop()?;
    if let [first, .., last] = rows.as_slice() {
        println!(
            "Server peak RSS: {:.0} MiB at {} receipts, {:.0} MiB at {} ({:+.0} MiB)",
            first.hwm_mib,
            first.size,
            last.hwm_mib,
            last.size,
            last.hwm_mib - first.hwm_mib
        );
    }
    Ok(())
}
