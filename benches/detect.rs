//! Criterion benchmarks of detection's per-event cost.
//!
//! - `detect/read_event`: parsing a whole event and taking the fields
//!   detection uses; `detect/read_event_members`: parsing only those
//!   members (what the stage does per record, besides reading it).
//! - `detect/observe_week`: a simulated week of 10 agents (about 5,000
//!   events) through a fresh detector: baselines, rules, the model's
//!   learning and fits, anomalies.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::detect::{Detector, Fields, Judged, Observation};
use vigil::simulate::simulate;

fn observations() -> (Vec<Vec<u8>>, Vec<Observation>) {
    let sim = simulate(1, 7, 2);
    let roles: std::collections::HashMap<String, String> = sim
        .agents
        .iter()
        .map(|a| (a.id.clone(), a.role().name.to_string()))
        .collect();
    let obs = sim
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let v = vigil::json::parse(raw).ok()?;
            let text = |n: &str| v.get(n)?.as_str().map(str::to_string);
            let agent = text("agent_id")?;
            let f = Fields::of(&v)?;
            Some(Observation {
                index: i as u64,
                role: roles.get(&agent).cloned(),
                agent_id: agent,
                event_id: text("event_id")?,
                correlation_id: text("correlation_id").unwrap_or_default(),
                received_ms: f.occurred_ms,
                judged: Judged::Accepted(f),
            })
        })
        .collect();
    (sim.events, obs)
}

fn bench_detect(c: &mut Criterion) {
    let (raw, obs) = observations();
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("read_event", |b| {
        b.iter(|| {
            raw.iter()
                .filter_map(|e| Fields::of(&vigil::json::parse(e).ok()?))
                .count()
        })
    });
    g.bench_function("read_event_members", |b| {
        b.iter(|| raw.iter().filter_map(|e| Fields::of_bytes(e)).count())
    });
    g.throughput(Throughput::Elements(obs.len() as u64));
    g.bench_function("observe_week", |b| {
        b.iter(|| {
            let mut d = Detector::default();
            obs.iter().filter_map(|o| d.observe(o, "now")).count()
        })
    });
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, bench_detect);
}

criterion_main!(group::benches);
