//! `vigil simulate`: a realistic signed fleet over days, with labelled
//! attack episodes and benign changes that must not alarm; `vigil eval`
//! ([`eval`]) replays it through a real server and scores detection.
//!
//! Everything follows from the seed: the same seed writes the same bytes.

pub mod episodes;
pub mod eval;
pub mod fleet;
pub mod rng;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::json;

use crate::event::signature::{b64url, sign};
use crate::json::{self, Value};
use crate::time::Timestamp;
use fleet::{Agent, ROLES};
use rng::Rng;

/// Monday 2026-11-02 00:00 UTC, the first simulated day, in ms.
pub const START_MS: i64 = 1_793_577_600_000;
/// A day in ms.
pub const DAY_MS: i64 = 86_400_000;
/// An hour in ms.
pub const HOUR_MS: i64 = 3_600_000;
/// Days of routine before the first attack.
pub const WARMUP_DAYS: i64 = 7;

/// `vigil simulate` options.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Directory to write `agents.jwks.json`, `events.ndjson` and `labels.json` to.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed: the same seed writes the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated days (the first 7 are routine only).
    #[arg(long, default_value_t = 14)]
    pub days: i64,
    /// Agents of each role.
    #[arg(long, default_value_t = 4)]
    pub per_role: usize,
}

/// One simulated event before signing.
#[derive(Debug, Clone)]
pub struct SimEvent {
    /// `occurred_at`, ms.
    pub t_ms: i64,
    /// Index of its agent.
    pub agent: usize,
    /// Signed by someone else's key.
    pub forged: bool,
    /// Members besides `spec`, `event_id`, `occurred_at`, `agent_id`, `key_id`.
    pub members: Vec<(String, Value)>,
    /// Its event id (set when the fleet is written).
    pub event_id: String,
}

/// A labelled attack.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    /// `ep-<n>`.
    pub id: String,
    /// The kind of attack.
    pub kind: String,
    /// The agent it acts as.
    pub agent_id: String,
    /// Its events, in order.
    pub event_ids: Vec<String>,
}

/// What `labels.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Labels {
    /// The seed.
    pub seed: u64,
    /// Simulated days.
    pub days: i64,
    /// Agents.
    pub agents: usize,
    /// The attacks.
    pub episodes: Vec<Episode>,
    /// Benign changes in the data (they must not alarm).
    pub benign: Vec<String>,
}

/// A whole simulation in memory.
pub struct Simulation {
    /// The agents.
    pub agents: Vec<Agent>,
    /// Events in event-time order, signed (one JSON object each).
    pub events: Vec<Vec<u8>>,
    /// Each event's `occurred_at`, in ms.
    pub times: Vec<i64>,
    /// The labels.
    pub labels: Labels,
}

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Seed of the fleet (agents and their keys).
    pub fleet_seed: u64,
    /// Seed of the events (also part of every event id).
    pub seed: u64,
    /// The first day, a Monday 00:00 UTC, in ms ([`START_MS`] by default).
    pub start_ms: i64,
    /// Simulated days.
    pub days: i64,
    /// Agents of each role.
    pub per_role: usize,
}

/// Builds a simulation from one seed, starting at [`START_MS`].
pub fn simulate(seed: u64, days: i64, per_role: usize) -> Simulation {
    simulate_with(Options {
        fleet_seed: seed,
        seed,
        start_ms: START_MS,
        days,
        per_role,
    })
}

/// Builds a simulation.
pub fn simulate_with(o: Options) -> Simulation {
    let (seed, days) = (o.seed, o.days);
    let agents = fleet::agents(&mut Rng::new(o.fleet_seed), o.per_role);
    let mut rng = Rng::new(seed);
    let mut events: Vec<SimEvent> = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        routine(&mut rng, i, a, days, &mut events);
    }
    let mut plans = episodes::plan(&mut rng, &agents, days);
    for p in plans.iter_mut() {
        events.append(&mut p.events);
    }
    events.sort_by_key(|e| e.t_ms);
    let mut counters = vec![0u64; agents.len()];
    let mut signed = Vec::with_capacity(events.len());
    let mut by_episode: Vec<Vec<String>> = vec![Vec::new(); plans.len()];
    let shift = o.start_ms - START_MS;
    let mut times = Vec::with_capacity(events.len());
    for e in events.iter_mut() {
        counters[e.agent] += 1;
        e.event_id = format!("{}-{seed}-{:06}", agents[e.agent].id, counters[e.agent]);
        if shift != 0 {
            shift_times(e, shift);
        }
        times.push(e.t_ms);
        if let Some(Value::Number(ep)) = take_member(&mut e.members, "_episode") {
            by_episode[ep as usize].push(e.event_id.clone());
        }
        signed.push(sign_event(&agents[e.agent], e, seed));
    }
    let episodes = plans
        .iter()
        .zip(by_episode)
        .enumerate()
        .map(|(n, (p, ids))| Episode {
            id: format!("ep-{n}"),
            kind: p.kind.to_string(),
            agent_id: agents[p.agent].id.clone(),
            event_ids: ids,
        })
        .collect();
    let labels = Labels {
        seed,
        days,
        agents: agents.len(),
        episodes,
        benign: episodes::BENIGN.iter().map(|s| s.to_string()).collect(),
    };
    Simulation {
        agents,
        events: signed,
        times,
        labels,
    }
}

/// Moves an event by `shift` ms (whole weeks keep weekdays and hours).
fn shift_times(e: &mut SimEvent, shift: i64) {
    e.t_ms += shift;
    for (k, v) in e.members.iter_mut() {
        if k == "lease_expires_at" {
            if let Some(t) = v.as_str().and_then(Timestamp::parse_event_time) {
                *v = Value::String(at((t.0 / 1_000_000) as i64 + shift));
            }
        }
    }
}

/// The Monday 00:00 UTC at least `days_before` days before `now_ms`.
pub fn monday_before(now_ms: i64, days_before: i64) -> i64 {
    let t = now_ms - days_before * DAY_MS;
    let day = t.div_euclid(DAY_MS);
    // Day 0 (1970-01-01) was a Thursday: Monday is 4 days later.
    let weekday = (day - 4).rem_euclid(7);
    (day - weekday) * DAY_MS
}

fn take_member(members: &mut Vec<(String, Value)>, name: &str) -> Option<Value> {
    let i = members.iter().position(|(k, _)| k == name)?;
    Some(members.remove(i).1)
}

/// Routine sessions of one agent over `days`, with the benign changes.
fn routine(rng: &mut Rng, i: usize, a: &Agent, days: i64, out: &mut Vec<SimEvent>) {
    let role = a.role();
    let mut lease_n = 0;
    for day in 0..days {
        let weekday = day % 7;
        if !role.weekends && weekday >= 5 {
            continue;
        }
        let mult = episodes::activity(role, day, days);
        for hour in role.hours.0..role.hours.1 {
            let n = (role.sessions_per_hour * mult + rng.unit()) as u32;
            for _ in 0..n {
                lease_n += 1;
                let start = START_MS
                    + day * DAY_MS
                    + i64::from(hour) * HOUR_MS
                    + rng.below(3_600_000) as i64;
                let s = Session::new(rng, a, day, start, lease_n);
                s.emit(rng, i, a, day, out);
            }
        }
    }
}

/// One routine session: a principal, an address, a lease, some actions.
pub struct Session {
    /// Session and correlation id.
    pub id: String,
    /// When it starts, ms.
    pub start: i64,
    /// Its principal.
    pub principal: String,
    /// Its address.
    pub ip: String,
    /// Its lease.
    pub lease: String,
    /// When the lease expires, ms.
    pub lease_expires: i64,
}

impl Session {
    /// A session of `a` starting at `start`.
    pub fn new(rng: &mut Rng, a: &Agent, day: i64, start: i64, n: u64) -> Session {
        let mut principals: Vec<&str> = a.principals.clone();
        if let Some(p) = episodes::new_principal(a.role(), day) {
            principals.push(p);
        }
        let principal = principals[rng.below(principals.len() as u64) as usize].to_string();
        Session {
            id: format!("sess-{}-{n}", a.id),
            start,
            principal,
            ip: a.ips[rng.below(2) as usize].clone(),
            lease: format!("vault:{}/{}", a.id, n),
            lease_expires: start + HOUR_MS,
        }
    }

    fn emit(&self, rng: &mut Rng, i: usize, a: &Agent, day: i64, out: &mut Vec<SimEvent>) {
        let role = a.role();
        let k = rng.between(u64::from(role.actions.0), u64::from(role.actions.1));
        let mut t = self.start;
        for _ in 0..k {
            t += rng.between(15_000, 90_000) as i64;
            let tool = episodes::pick_tool(rng, role, day);
            let mut members = self.members(rng, &tool);
            let outcome = match rng.below(100) {
                0 | 1 => "failure",
                2 => "denied",
                _ => "success",
            };
            members.push(("outcome".into(), Value::String(outcome.into())));
            out.push(SimEvent {
                t_ms: t,
                agent: i,
                forged: false,
                members,
                event_id: String::new(),
            });
        }
    }

    /// The members of one action of this session with `tool`.
    pub fn members(&self, rng: &mut Rng, tool: &fleet::Tool) -> Vec<(String, Value)> {
        let s = |v: &str| Value::String(v.to_string());
        let resource = tool
            .resource
            .replace("{}", &rng.below(tool.ids).to_string());
        let mut m = vec![
            ("correlation_id".to_string(), s(&self.id)),
            ("session_id".into(), s(&self.id)),
            ("action".into(), s(tool.action)),
            ("resource".into(), s(&resource)),
            ("sensitivity".into(), s(tool.sensitivity)),
            ("principal".into(), s(&self.principal)),
            ("source_ip".into(), s(&self.ip)),
            ("lease_id".into(), s(&self.lease)),
            ("lease_expires_at".into(), s(&at(self.lease_expires))),
        ];
        if tool.bytes > 0 {
            let b = tool.bytes as f64 * (0.5 + 1.5 * rng.unit());
            m.push(("bytes".into(), Value::Number(b.round())));
        }
        m
    }
}

/// A time in ms as the contract writes it.
pub fn at(ms: i64) -> String {
    Timestamp(i128::from(ms) * 1_000_000).to_rfc3339_millis()
}

fn signing_key(seed: &[u8; 32]) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(seed)
}

fn sign_event(a: &Agent, e: &SimEvent, seed: u64) -> Vec<u8> {
    let s = |v: &str| Value::String(v.to_string());
    let mut members = vec![
        ("spec".to_string(), s(crate::event::EVENT_SPEC)),
        ("event_id".into(), s(&e.event_id)),
        ("occurred_at".into(), s(&at(e.t_ms))),
        ("agent_id".into(), s(&a.id)),
        ("key_id".into(), s(&a.kid())),
    ];
    members.extend(e.members.iter().cloned());
    let key = if e.forged {
        let mut forger = a.seed;
        forger[0] ^= 0xA5;
        forger[1] ^= seed as u8;
        signing_key(&forger)
    } else {
        signing_key(&a.seed)
    };
    let c = json::Canonical::of_object(&members, "signature");
    members.push(("signature".into(), s(&b64url(&sign(&key, &c.without)))));
    let mut out = Vec::new();
    json::write_jcs(&Value::Object(members), &mut out);
    out
}

/// The agents' public keys, with their roles, as a JWKS document.
pub fn jwks(agents: &[Agent]) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| {
            let pk = signing_key(&a.seed).verifying_key();
            json!({
                "kty": "OKP", "crv": "Ed25519", "kid": a.kid(), "agent_id": a.id,
                "x": b64url(pk.as_bytes()), "role": a.role().name,
                "owner": format!("{}-owners@corp.example", a.role().name),
            })
        })
        .collect();
    json!({ "keys": keys })
}

/// Writes a simulation's three files into `dir`.
pub fn write(sim: &Simulation, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join("agents.jwks.json"),
        serde_json::to_vec_pretty(&jwks(&sim.agents))?,
    )?;
    let mut nd = Vec::new();
    for e in &sim.events {
        nd.extend_from_slice(e);
        nd.push(b'\n');
    }
    std::fs::write(dir.join("events.ndjson"), nd)?;
    std::fs::write(
        dir.join("labels.json"),
        serde_json::to_vec_pretty(&sim.labels)?,
    )?;
    Ok(())
}

/// `vigil simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let sim = simulate(args.seed, args.days, args.per_role);
    write(&sim, &args.out)?;
    let roles: Vec<&str> = ROLES.iter().map(|r| r.name).collect();
    println!(
        "wrote {} events of {} agents ({}) over {} days, with {} labelled attacks, to {}",
        sim.events.len(),
        sim.agents.len(),
        roles.join(", "),
        args.days,
        sim.labels.episodes.len(),
        args.out.display()
    );
    println!(
        "replay: vigil serve --keys {0}/agents.jwks.json, then POST {0}/events.ndjson (application/x-ndjson); or score it with vigil eval --dir {0}",
        args.out.display()
    );
    Ok(())
}
