//! `vigil eval`: replays simulations through a real `vigil serve` (HTTP,
//! the log, the detection stage), reads the alerts from
//! `GET /v1/anomalies`, and scores them against the labels, beside the
//! simple baseline run on the same events.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;

use super::{simulate, Labels, Simulation};
use crate::client::Client;
use crate::detect::anomaly::{Anomaly, ALERT_SCORE};
use crate::detect::observation::Fields;
use crate::detect::simple::Simple;
use crate::loadgen::{batches, start_server};

/// `vigil eval` options.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Seeds to simulate and score (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "3,4,5")]
    pub seeds: Vec<u64>,
    /// Simulated days.
    #[arg(long, default_value_t = 14)]
    pub days: i64,
    /// Agents of each role.
    #[arg(long, default_value_t = 4)]
    pub per_role: usize,
    /// Keep the servers' data directories here (default: temporary).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// How one detector did on some simulations.
#[derive(Debug, Default, Clone)]
pub struct Score {
    /// Episodes by kind: (detected, total).
    pub by_kind: BTreeMap<String, (u32, u32)>,
    /// Alerts raised.
    pub alerts: u32,
    /// Alerts that name no attack event.
    pub false_alarms: u32,
    /// Detection delay of each detected episode, in events (1 = its first).
    pub delays: Vec<u32>,
    /// Agent-days simulated.
    pub agent_days: f64,
    /// False alarms by the kinds they named.
    pub false_kinds: BTreeMap<String, u32>,
}

/// An alert as scored: its kinds and its events (triggering first).
pub struct Alert {
    /// The detectors that fired.
    pub kinds: Vec<String>,
    /// Its events.
    pub event_ids: Vec<String>,
}

impl Score {
    /// Adds the alerts (each as its event ids, triggering first) of one
    /// simulation.
    pub fn add(&mut self, labels: &Labels, alerts: &[Alert]) {
        let mut episode_of: HashMap<&str, (usize, usize)> = HashMap::new();
        for (e, ep) in labels.episodes.iter().enumerate() {
            for (k, id) in ep.event_ids.iter().enumerate() {
                episode_of.insert(id, (e, k));
            }
        }
        let mut first_seen: Vec<Option<usize>> = vec![None; labels.episodes.len()];
        for alert in alerts {
            self.alerts += 1;
            let hits: Vec<(usize, usize)> = alert
                .event_ids
                .iter()
                .filter_map(|id| episode_of.get(id.as_str()).copied())
                .collect();
            if hits.is_empty() {
                self.false_alarms += 1;
                *self.false_kinds.entry(alert.kinds.join("+")).or_default() += 1;
            }
            for (e, k) in hits {
                let at = first_seen[e].get_or_insert(k);
                *at = (*at).min(k);
            }
        }
        for (ep, seen) in labels.episodes.iter().zip(&first_seen) {
            let entry = self.by_kind.entry(ep.kind.clone()).or_default();
            entry.1 += 1;
            if let Some(k) = seen {
                entry.0 += 1;
                self.delays.push(*k as u32 + 1);
            }
        }
        self.agent_days += (labels.agents as i64 * labels.days) as f64;
    }

    fn recall(&self) -> f64 {
        let (d, t) = self
            .by_kind
            .values()
            .fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
        f64::from(d) / f64::from(t.max(1))
    }

    fn precision(&self) -> f64 {
        f64::from(self.alerts - self.false_alarms) / f64::from(self.alerts.max(1))
    }

    fn median_delay(&self) -> f64 {
        let mut d = self.delays.clone();
        d.sort_unstable();
        d.get(d.len() / 2).map_or(f64::NAN, |&x| f64::from(x))
    }

    /// One row of the table.
    pub fn row(&self, name: &str) -> String {
        let (r, p) = (self.recall(), self.precision());
        let f1 = if r + p > 0.0 {
            2.0 * r * p / (r + p)
        } else {
            0.0
        };
        format!(
            "| {name} | {r:.2} | {p:.2} | {f1:.2} | {:.3} | {} | {} |",
            f64::from(self.false_alarms) / self.agent_days.max(1.0),
            self.median_delay(),
            self.alerts
        )
    }
}

/// The simple baseline's alerts on a simulation's accepted events.
pub fn simple_alerts(sim: &Simulation) -> Vec<Alert> {
    let forged: std::collections::HashSet<&str> = sim
        .labels
        .episodes
        .iter()
        .filter(|e| e.kind == "forged_burst")
        .flat_map(|e| e.event_ids.iter().map(String::as_str))
        .collect();
    let mut simple = Simple::default();
    for raw in &sim.events {
        let Ok(v) = crate::json::parse(raw) else {
            continue;
        };
        let id = v
            .get("event_id")
            .and_then(crate::json::Value::as_str)
            .unwrap_or("");
        let agent = v
            .get("agent_id")
            .and_then(crate::json::Value::as_str)
            .unwrap_or("");
        if forged.contains(id) {
            continue;
        }
        if let Some(f) = Fields::of(&v) {
            simple.observe(agent, id, &f);
        }
    }
    simple
        .alerts()
        .into_iter()
        .map(|event_ids| Alert {
            kinds: vec!["simple".into()],
            event_ids,
        })
        .collect()
}

/// Replays a simulation through a fresh server (with the multivariate
/// model judging, or not); returns its alerts.
async fn replay(
    sim: &Simulation,
    data: &std::path::Path,
    model: bool,
) -> anyhow::Result<Vec<Alert>> {
    std::fs::create_dir_all(data)?;
    let jwks = data.join("agents.jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&super::jwks(&sim.agents))?)?;
    let config = data.join("vigil.toml");
    std::fs::write(&config, format!("[detection]\nmodel = {model}\n"))?;
    let server = start_server(
        &data.join("data"),
        &jwks,
        &["--config", config.to_str().unwrap_or_default()],
    )?;
    let (addr, token) = (server.addr(), server.token().to_string());
    let mut client = Client::connect(addr, &token).await?;
    for body in batches(&sim.events, 500) {
        let (status, answer) = client
            .send("POST", "/v1/events", Some("application/x-ndjson"), body)
            .await?;
        if status != 200 {
            bail!(
                "POST /v1/events answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    settle(&mut client).await?;
    let (_, body) = client
        .send("GET", "/v1/anomalies?limit=10000", None, Bytes::new())
        .await?;
    let j: serde_json::Value = serde_json::from_slice(&body)?;
    let list: Vec<Anomaly> = serde_json::from_value(j["anomalies"].clone())
        .context("the anomalies are not what the contract says")?;
    server.stop()?;
    Ok(list
        .into_iter()
        .filter(|a| a.score >= ALERT_SCORE)
        .map(|a| Alert {
            kinds: a.kinds,
            event_ids: a.event_ids,
        })
        .collect())
}

/// Waits until detection has judged every durable record.
async fn settle(client: &mut Client) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = (0, 0);
    loop {
        let (_, ready) = client.send("GET", "/readyz", None, Bytes::new()).await?;
        let size = serde_json::from_slice::<serde_json::Value>(&ready)?["log_size"]
            .as_u64()
            .unwrap_or(0);
        let (_, metrics) = client.send("GET", "/metrics", None, Bytes::new()).await?;
        let text = String::from_utf8_lossy(&metrics);
        let position = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("vigil_detection_position_records ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0u64);
        if position >= size && last == (size, position) {
            return Ok(());
        }
        last = (size, position);
        if start.elapsed() > Duration::from_secs(120) {
            bail!("detection did not catch up with the log ({position} of {size})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `vigil eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let tmp = tempfile::Builder::new().prefix("vigil-eval-").tempdir()?;
    let root = args
        .data
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let mut rows = Rows::default();
    let mut events = 0;
    for &seed in &args.seeds {
        let sim = simulate(seed, args.days, args.per_role);
        events += sim.events.len();
        let dir = root.join(format!("seed-{seed}"));
        let alerts = rt.block_on(replay(&sim, &dir.join("model"), true))?;
        rows.vigil.add(&sim.labels, &alerts);
        let without = rt.block_on(replay(&sim, &dir.join("rules"), false))?;
        rows.rules_only.add(&sim.labels, &without);
        rows.simple.add(&sim.labels, &simple_alerts(&sim));
        eprintln!(
            "seed {seed}: {} events, {} alerts ({} without the model)",
            sim.events.len(),
            alerts.len(),
            without.len()
        );
    }
    print_table(&args, events, &rows);
    Ok(())
}

/// The rows of the table.
#[derive(Default)]
struct Rows {
    vigil: Score,
    rules_only: Score,
    simple: Score,
}

fn print_table(args: &EvalArgs, events: usize, rows: &Rows) {
    let (vigil, simple) = (&rows.vigil, &rows.simple);
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    println!(
        "vigil eval: seeds {}, {} days, {} agents each, {events} events in all",
        seeds.join(","),
        args.days,
        args.per_role * super::fleet::ROLES.len()
    );
    println!();
    println!("| detector | recall | precision | F1 | false alarms per agent-day | median delay (events) | alerts |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", vigil.row("vigil"));
    println!("{}", rows.rules_only.row("vigil without the linfa model"));
    println!("{}", simple.row("simple baseline"));
    println!();
    println!("| attack kind | vigil | without the model | simple baseline |");
    println!("|---|---|---|---|");
    for (kind, (d, t)) in &vigil.by_kind {
        let (rd, rt) = rows
            .rules_only
            .by_kind
            .get(kind)
            .copied()
            .unwrap_or_default();
        let (sd, st) = simple.by_kind.get(kind).copied().unwrap_or_default();
        println!("| {kind} | {d}/{t} | {rd}/{rt} | {sd}/{st} |");
    }
    if !vigil.false_kinds.is_empty() {
        println!();
        println!("vigil's false alarms by the kinds they named:");
        for (kinds, n) in &vigil.false_kinds {
            println!("  {n:4}  {kinds}");
        }
    }
}
