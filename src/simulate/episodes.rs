//! Labelled attack episodes, and the benign changes that must not alarm.

use super::fleet::{Agent, Role, Tool};
use super::rng::Rng;
use super::{Session, SimEvent, DAY_MS, HOUR_MS, START_MS, WARMUP_DAYS};
use crate::json::Value;

/// The benign changes in every simulation.
pub const BENIGN: &[&str] = &[
    "day 9 on: a new tool (crm.summarize_call) rolled out to every sales-copilot",
    "day 9 on: a new principal (newhire@corp.example) assigned to every hr-assistant",
    "day 10: a quiet holiday (a tenth of the usual sessions)",
    "last two days: a month-end peak (2.5 times the sessions of sales-copilot and db-analyst)",
];

const ROLLOUT_DAY: i64 = 9;
const HOLIDAY: i64 = 10;

/// How busy a role is on `day` (1 = usual).
pub fn activity(role: &Role, day: i64, days: i64) -> f64 {
    let mut m = 1.0;
    if day == HOLIDAY && !role.weekends {
        m *= 0.1;
    }
    if day >= days - 2 && matches!(role.name, "sales-copilot" | "db-analyst") {
        m *= 2.5;
    }
    m
}

/// A principal newly assigned to a role on `day`, if any.
pub fn new_principal(role: &Role, day: i64) -> Option<&'static str> {
    (role.name == "hr-assistant" && day >= ROLLOUT_DAY).then_some("newhire@corp.example")
}

const SUMMARIZE: Tool = Tool {
    action: "crm.summarize_call",
    weight: 20,
    sensitivity: "low",
    resource: "crm://calls/C{}",
    ids: 20_000,
    bytes: 0,
};

/// A tool of `role` chosen by weight (with the rollout from its day).
pub fn pick_tool(rng: &mut Rng, role: &Role, day: i64) -> Tool {
    if role.name == "sales-copilot" && day >= ROLLOUT_DAY && rng.chance(0.2) {
        return SUMMARIZE;
    }
    let total: u32 = role.tools.iter().map(|t| t.weight).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for t in role.tools {
        if x < t.weight {
            return *t;
        }
        x -= t.weight;
    }
    role.tools[0]
}

/// A planned episode: its kind, agent and events.
pub struct Plan {
    /// The kind.
    pub kind: &'static str,
    /// Index of the agent it acts as.
    pub agent: usize,
    /// Its events (tagged with the member `_episode`).
    pub events: Vec<SimEvent>,
}

/// The attack kinds, each with the roles it can hit (empty: any).
const KINDS: &[(&str, &[&str])] = &[
    ("mass_offboarding", &["hr-assistant"]),
    (
        "resource_sweep",
        &["hr-assistant", "sales-copilot", "it-ops"],
    ),
    ("exfil_new_tool", &[]),
    ("volume_exfil", &["db-analyst"]),
    (
        "off_hours",
        &["hr-assistant", "sales-copilot", "db-analyst"],
    ),
    ("stolen_lease", &[]),
    ("expired_lease", &[]),
    ("forged_burst", &[]),
    ("privilege_escalation", &["it-ops"]),
    ("misused_tool", &["db-analyst"]),
];

/// One episode of every kind, each on a random eligible agent at a
/// random working time after the warm-up.
pub fn plan(rng: &mut Rng, agents: &[Agent], days: i64) -> Vec<Plan> {
    let mut plans = Vec::new();
    for (n, (kind, roles)) in KINDS.iter().enumerate() {
        let eligible: Vec<usize> = (0..agents.len())
            .filter(|&i| roles.is_empty() || roles.contains(&agents[i].role().name))
            .collect();
        let agent = eligible[rng.below(eligible.len() as u64) as usize];
        let t = work_time(rng, days);
        let events = build(rng, kind, agents, agent, t, n as f64);
        // The episode acts as the agent of its labelled events (a stolen
        // lease is used by another agent than its owner).
        let agent = events
            .iter()
            .find(|e| e.members.iter().any(|(k, _)| k == "_episode"))
            .map_or(agent, |e| e.agent);
        plans.push(Plan {
            kind,
            agent,
            events,
        });
    }
    plans
}

/// A weekday working time after the warm-up, not the holiday.
fn work_time(rng: &mut Rng, days: i64) -> i64 {
    loop {
        let day = WARMUP_DAYS + rng.below((days - WARMUP_DAYS).max(1) as u64) as i64;
        if day % 7 < 5 && day != HOLIDAY {
            let hour = rng.between(9, 15) as i64;
            return START_MS + day * DAY_MS + hour * HOUR_MS + rng.below(3_600_000) as i64;
        }
    }
}

fn tagged(agent: usize, t: i64, mut members: Vec<(String, Value)>, ep: f64) -> SimEvent {
    members.push(("_episode".into(), Value::Number(ep)));
    SimEvent {
        t_ms: t,
        agent,
        forged: false,
        members,
        event_id: String::new(),
    }
}

fn set(members: &mut Vec<(String, Value)>, name: &str, v: Value) {
    members.retain(|(k, _)| k != name);
    members.push((name.to_string(), v));
}

fn tool(action: &'static str, sensitivity: &'static str, resource: &'static str) -> Tool {
    Tool {
        action,
        weight: 1,
        sensitivity,
        resource,
        ids: 1,
        bytes: 0,
    }
}

type Members = Vec<(String, Value)>;

/// Makes the `k`th event of an episode from its session.
type Maker = fn(&mut Rng, &Session, &Agent, i64, i64) -> Members;

/// An episode's shape: how many events, how far apart, and each one.
struct Shape {
    count: i64,
    every_ms: i64,
    /// Signed with another key.
    forged: bool,
    /// At 02:00 of its day instead of working hours.
    at_night: bool,
    make: Maker,
}

fn shape(kind: &str) -> Shape {
    let (count, every_ms, make): (i64, i64, Maker) = match kind {
        "mass_offboarding" => (25, 4000, offboard),
        "resource_sweep" => (50, 3000, sweep),
        "exfil_new_tool" => (3, 40_000, export),
        "volume_exfil" => (4, 30_000, big_query),
        "off_hours" => (6, 300_000, usual),
        "misused_tool" => (5, 40_000, describe_with_data),
        "expired_lease" => (4, 45_000, old_lease),
        "forged_burst" => (12, 1500, delete_records),
        _ => (4, 20_000, grant_admin),
    };
    Shape {
        count,
        every_ms,
        forged: kind == "forged_burst",
        at_night: kind == "off_hours",
        make,
    }
}

fn build(rng: &mut Rng, kind: &str, agents: &[Agent], i: usize, t: i64, ep: f64) -> Vec<SimEvent> {
    let a = &agents[i];
    let day = (t - START_MS) / DAY_MS;
    // Made for every kind, so that each seed keeps its random sequence.
    let s = Session::new(rng, a, day, t, 900_000 + ep as u64);
    if kind == "stolen_lease" {
        return stolen_lease(rng, agents, i, t, ep);
    }
    let sh = shape(kind);
    let start = if sh.at_night {
        t - t.rem_euclid(DAY_MS) + 2 * HOUR_MS
    } else {
        t
    };
    (0..sh.count)
        .map(|k| {
            let m = (sh.make)(rng, &s, a, day, k);
            let mut e = tagged(i, start + k * sh.every_ms, m, ep);
            e.forged = sh.forged;
            e
        })
        .collect()
}

fn with(mut m: Members, name: &str, v: Value) -> Members {
    set(&mut m, name, v);
    m
}

fn usual(rng: &mut Rng, s: &Session, a: &Agent, day: i64, _k: i64) -> Members {
    let tool = pick_tool(rng, a.role(), day);
    s.members(rng, &tool)
}

fn offboard(rng: &mut Rng, s: &Session, _: &Agent, _: i64, k: i64) -> Members {
    let m = s.members(
        rng,
        &tool("hr.offboard_employee", "high", "hris://employees/E"),
    );
    with(
        m,
        "resource",
        Value::String(format!("hris://employees/E{}", 5000 + k)),
    )
}

fn sweep(rng: &mut Rng, s: &Session, a: &Agent, _: i64, k: i64) -> Members {
    let base = a.role().tools[0];
    let r = base.resource.replace("{}", &(100_000 + k).to_string());
    with(s.members(rng, &base), "resource", Value::String(r))
}

fn export(rng: &mut Rng, s: &Session, _: &Agent, _: i64, _: i64) -> Members {
    let m = s.members(
        rng,
        &tool("s3.export_bucket", "high", "s3://corp-exports/dump"),
    );
    with(m, "bytes", Value::Number(5e8))
}

fn big_query(rng: &mut Rng, s: &Session, a: &Agent, day: i64, k: i64) -> Members {
    with(usual(rng, s, a, day, k), "bytes", Value::Number(8e8))
}

/// A metadata tool made to return data: each value is usual for the
/// agent, the combination is not.
fn describe_with_data(rng: &mut Rng, s: &Session, a: &Agent, _: i64, _: i64) -> Members {
    let m = s.members(rng, &a.role().tools[1]);
    let bytes = 40_000.0 + rng.below(40_000) as f64;
    with(m, "bytes", Value::Number(bytes))
}

fn old_lease(rng: &mut Rng, s: &Session, a: &Agent, day: i64, k: i64) -> Members {
    let m = usual(rng, s, a, day, k);
    let m = with(
        m,
        "lease_id",
        Value::String(format!("vault:{}/old-{k}", a.id)),
    );
    let expired = super::at(s.start - 2 * HOUR_MS);
    let m = with(m, "lease_expires_at", Value::String(expired));
    with(m, "source_ip", Value::String("198.51.100.7".into()))
}

fn delete_records(rng: &mut Rng, s: &Session, _: &Agent, _: i64, _: i64) -> Members {
    s.members(
        rng,
        &tool("hr.delete_records", "critical", "hris://employees/all"),
    )
}

fn grant_admin(rng: &mut Rng, s: &Session, _: &Agent, _: i64, _: i64) -> Members {
    let m = s.members(
        rng,
        &tool("iam.grant_role", "critical", "iam://roles/admin"),
    );
    let m = with(m, "principal", Value::String("admin@corp.example".into()));
    let chain = vec![
        Value::String("orchestrator-1".into()),
        Value::String("planner-2".into()),
    ];
    with(m, "delegation", Value::Array(chain))
}

/// Another agent uses the victim's live lease from a new address.
fn stolen_lease(rng: &mut Rng, agents: &[Agent], victim: usize, t: i64, ep: f64) -> Vec<SimEvent> {
    let thief = (victim + 1 + rng.below(agents.len() as u64 - 1) as usize) % agents.len();
    let day = (t - START_MS) / DAY_MS;
    let v = &agents[victim];
    let s = Session::new(rng, v, day, t, 800_000 + ep as u64);
    let mut out = Vec::new();
    // The victim's own session with the lease (routine, not labelled).
    for k in 0..2 {
        let m = {
            let tool = pick_tool(rng, v.role(), day);
            s.members(rng, &tool)
        };
        out.push(SimEvent {
            t_ms: t + k * 30_000,
            agent: victim,
            forged: false,
            members: m,
            event_id: String::new(),
        });
    }
    let th = &agents[thief];
    for k in 0..5 {
        let mut m = {
            let tool = pick_tool(rng, th.role(), day);
            s.members(rng, &tool)
        };
        set(&mut m, "principal", Value::String(th.principals[0].into()));
        set(&mut m, "source_ip", Value::String("203.0.113.50".into()));
        out.push(tagged(thief, t + 300_000 + k * 20_000, m, ep));
    }
    out
}
