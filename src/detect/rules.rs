//! The detectors: each looks at one feature of an accepted event against
//! the agent's own baseline (or its role's, while the agent is new) and
//! says what it observed and what was expected.

use serde_json::{json, Value as J};

use super::anomaly::Signal;
use super::observation::Fields;
use super::profile::{Caps, Lesson, Profile, Stat, ValueSet, AGENT_CAPS, ROLE_CAPS};

/// Events after which an agent is judged by its own baseline.
pub const WARM_EVENTS: u64 = 30;
/// Events after which a role's baseline judges its new agents.
pub const ROLE_MATURE_EVENTS: u64 = 100;
/// Events after which an hour-of-week profile is trusted.
pub const HOURS_MATURE_EVENTS: u64 = 200;
/// An agent whose previous accepted event is this far behind (event time)
/// is dormant, and its next event a wake-up (the zombie threshold of
/// `[hygiene]`'s default).
pub const DORMANT_MS: i64 = 30 * 86_400_000;
/// A value the role has seen this often is normal for a new agent of it.
const ROLE_NORMAL: u32 = 3;

/// What the detectors look at for one event.
pub struct Context<'a> {
    /// The agent's own baseline.
    pub agent: &'a Profile,
    /// Its role's baseline, when it has a role.
    pub role: Option<&'a Profile>,
    /// The event's fields.
    pub fields: &'a Fields,
    /// The event's features.
    pub lesson: &'a Lesson,
    /// Failed or denied outcomes among the agent's last 20 events.
    pub failures: u32,
    /// The event is older than the reorder window: window features are
    /// not judged.
    pub late: bool,
    /// How far (ms, event time) it is after the agent's previous accepted
    /// event, if it had one and this one is not late.
    pub idle_ms: Option<i64>,
}

impl Context<'_> {
    fn warm(&self) -> bool {
        self.agent.events >= WARM_EVENTS
    }

    /// The baseline this event is judged by: the agent's own once warm,
    /// else its role's once mature, else none.
    fn reference(&self) -> Option<&Profile> {
        if self.warm() {
            Some(self.agent)
        } else {
            self.role.filter(|r| r.events >= ROLE_MATURE_EVENTS)
        }
    }
}

/// Every detector's signal about one accepted event.
pub fn judge(cx: &Context) -> Vec<Signal> {
    let mut out = Vec::new();
    let f = cx.fields;
    let l = cx.lesson;
    let sens = if f.sensitive { 15.0 } else { 0.0 };
    let action_base = [40.0, 55.0, 70.0, 75.0][usize::from(f.sensitivity.min(3))];
    let mut push = |s: Option<Signal>| out.extend(s);
    push(rare(
        cx,
        &Rare::ACTION,
        Some(l.action),
        &f.action,
        action_base,
    ));
    if let Some(r) = &f.resource {
        push(rare(cx, &Rare::RESOURCE, l.resource, r, 30.0 + sens));
    }
    if let Some(p) = &f.principal {
        push(rare(cx, &Rare::PRINCIPAL, l.principal, p, 35.0));
    }
    if let Some(ip) = &f.source_ip {
        push(rare(cx, &Rare::IP, l.ip, ip, 40.0));
    }
    if cx.agent.events >= 100 && cx.agent.actions.count(l.action) > 0 {
        push(rare(cx, &Rare::TRANSITION, l.transition, &f.action, 25.0));
    }
    push(lease_expired(f));
    push(off_hours(cx));
    push(deeper_delegation(cx));
    push(woke(cx));
    if !cx.late {
        push(window_spike(cx, &RATE, 0.0));
        push(window_spike(cx, &SWEEP, sens));
        if f.sensitive {
            push(window_spike(cx, &SENSITIVE, 0.0));
        }
        push(volume_spike(cx));
        push(denials(cx));
    }
    out
}

/// A kind of value a rare-value detector looks at.
struct Rare {
    kind: &'static str,
    feature: &'static str,
    noun: &'static str,
    set: fn(&Profile) -> &ValueSet,
    cap: fn(&Caps) -> usize,
}

impl Rare {
    const ACTION: Rare = Rare {
        kind: "rare_action",
        feature: "action",
        noun: "action",
        set: |p| &p.actions,
        cap: |c| c.actions,
    };
    const RESOURCE: Rare = Rare {
        kind: "rare_resource",
        feature: "resource_pattern",
        noun: "kind of resource",
        set: |p| &p.resources,
        cap: |c| c.resources,
    };
    const PRINCIPAL: Rare = Rare {
        kind: "rare_principal",
        feature: "principal",
        noun: "principal",
        set: |p| &p.principals,
        cap: |c| c.principals,
    };
    const IP: Rare = Rare {
        kind: "rare_source_ip",
        feature: "source_ip",
        noun: "source address",
        set: |p| &p.ips,
        cap: |c| c.ips,
    };
    const TRANSITION: Rare = Rare {
        kind: "rare_transition",
        feature: "action_transition",
        noun: "sequence of actions",
        set: |p| &p.transitions,
        cap: |c| c.transitions,
    };
}

/// A value never seen by the agent (or by its role while it is new).
/// A value its role does often is context, not an alert: a tool rolled
/// out to the whole role must not alarm. A feature with many values (its
/// set three quarters full) says nothing by a new one.
fn rare(cx: &Context, what: &Rare, fp: Option<u64>, shown: &str, base: f64) -> Option<Signal> {
    let fp = fp?;
    let reference = cx.reference()?;
    let caps = if cx.warm() { &AGENT_CAPS } else { &ROLE_CAPS };
    let refset = (what.set)(reference);
    if refset.count(fp) > 0 || refset.len() * 4 >= (what.cap)(caps) * 3 {
        return None;
    }
    let role_count = cx.role.map_or(0, |r| (what.set)(r).count(fp));
    let (score, whose) = if role_count >= ROLE_NORMAL {
        (base * 0.3, "usual for its role")
    } else if cx.warm() {
        (base, "new to it and to its role")
    } else {
        (base, "new to its role")
    };
    if score < 20.0 {
        return None;
    }
    Some(Signal {
        kind: what.kind,
        feature: what.feature,
        observed: J::from(shown),
        expected: json!(format!("one of {} known", refset.len())),
        score,
        says: format!("used {shown}, {} {} {whose}", article(what.noun), what.noun),
    })
}

/// "a" or "an" before `noun`.
fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn lease_expired(f: &Fields) -> Option<Signal> {
    let (lease, expires) = (f.lease_id.as_ref()?, f.lease_expires_ms?);
    if f.occurred_ms <= expires {
        return None;
    }
    let late_s = (f.occurred_ms - expires) / 1000;
    Some(Signal {
        kind: "expired_lease",
        feature: "lease_age",
        observed: json!(format!("used {late_s} s after it expired")),
        expected: json!("used before lease_expires_at"),
        score: 85.0,
        says: format!("used lease {lease} {late_s} s after it expired"),
    })
}

fn off_hours(cx: &Context) -> Option<Signal> {
    let reference = if cx.agent.events >= HOURS_MATURE_EVENTS {
        cx.agent
    } else {
        cx.role.filter(|r| r.events >= HOURS_MATURE_EVENTS * 5)?
    };
    let h = usize::from(cx.lesson.hour);
    let share = reference.hour_of_day_share(cx.lesson.hour);
    let around: f64 = [167, 0, 1]
        .iter()
        .map(|d| reference.hour_of_day_share((cx.lesson.hour + d) % 168))
        .sum();
    if reference.hours[h] > 0 || around >= 0.01 {
        return None;
    }
    let hod = h % 24;
    Some(Signal {
        kind: "off_hours",
        feature: "hour_of_week",
        observed: json!(format!("{hod:02}:00 UTC")),
        expected: json!(format!("{:.1}% of its events at this hour", share * 100.0)),
        score: if cx.fields.sensitive { 70.0 } else { 55.0 },
        says: format!("acted at {hod:02}:00 UTC, outside its usual hours"),
    })
}

/// A dormant agent acting again: a forgotten agent's credentials in use is
/// how a zombie turns into a breach.
fn woke(cx: &Context) -> Option<Signal> {
    let idle = cx.idle_ms.filter(|&i| i >= DORMANT_MS)?;
    let days = idle / 86_400_000;
    Some(Signal {
        kind: "dormant_agent",
        feature: "idle_days",
        observed: json!(days),
        expected: json!(format!(
            "under {} days between its events",
            DORMANT_MS / 86_400_000
        )),
        score: if cx.fields.sensitive { 70.0 } else { 55.0 },
        says: format!("acted after {days} days without an accepted event"),
    })
}

fn deeper_delegation(cx: &Context) -> Option<Signal> {
    let reference = cx.reference()?;
    if cx.lesson.depth <= reference.max_depth {
        return None;
    }
    Some(Signal {
        kind: "delegation_depth",
        feature: "delegation_depth",
        observed: J::from(cx.lesson.depth),
        expected: json!(format!("at most {}", reference.max_depth)),
        score: 35.0,
        says: format!("acted through a delegation chain of {}", cx.lesson.depth),
    })
}

/// How far above its usual a windowed value is, or `None` when it is not
/// (at least `floor`, and above the mean by `k` deviations, `ratio` times
/// the mean, and the largest value seen).
fn spike(stat: &Stat, x: f64, floor: f64, k: f64, ratio: f64) -> Option<f64> {
    let bar = floor
        .max(stat.mean + k * stat.sd())
        .max(ratio * stat.mean)
        .max(stat.max);
    (x > bar).then(|| x / stat.mean.max(1.0))
}

/// A windowed count that spikes against its running statistic.
struct Window {
    kind: &'static str,
    feature: &'static str,
    stat: fn(&Profile) -> &Stat,
    value: fn(&Lesson) -> f64,
    /// The least value that can be a spike.
    floor: f64,
    /// How many times the mean a spike is, at least.
    ratio: f64,
    /// Score at the bar, and points per doubling above it.
    base: f64,
    per_doubling: f64,
    /// What it says, given the value.
    says: fn(f64) -> String,
}

const RATE: Window = Window {
    kind: "rate_spike",
    feature: "events_per_minute",
    stat: |p| &p.rate,
    value: |l| l.rate,
    floor: 8.0,
    ratio: 4.0,
    base: 50.0,
    per_doubling: 10.0,
    says: |x| format!("took {x:.0} actions in a minute"),
};

const SWEEP: Window = Window {
    kind: "resource_sweep",
    feature: "distinct_resources_10m",
    stat: |p| &p.sweep,
    value: |l| l.sweep,
    floor: 4.0,
    ratio: 3.0,
    base: 45.0,
    per_doubling: 8.0,
    says: |x| format!("touched {x:.0} distinct resources in ten minutes"),
};

const SENSITIVE: Window = Window {
    kind: "sensitive_rate_spike",
    feature: "sensitive_actions_10m",
    stat: |p| &p.sensitive,
    value: |l| l.sensitive,
    floor: 4.0,
    ratio: 3.0,
    base: 50.0,
    per_doubling: 10.0,
    says: |x| format!("took {x:.0} high-sensitivity actions in ten minutes"),
};

/// A window spike against the agent's (or its role's) usual; `extra`
/// points are added (a sweep of sensitive resources weighs more).
fn window_spike(cx: &Context, w: &Window, extra: f64) -> Option<Signal> {
    let r = cx.reference()?;
    let stat = (w.stat)(r);
    let x = (w.value)(cx.lesson);
    let times = spike(stat, x, w.floor, 6.0, w.ratio)?;
    Some(Signal {
        kind: w.kind,
        feature: w.feature,
        observed: J::from(x),
        expected: json!(format!("{:.1} (at most {:.0} seen)", stat.mean, stat.max)),
        score: (w.base + extra + w.per_doubling * times.log2()).min(90.0),
        says: format!("{}, {times:.0} times its usual", (w.says)(x)),
    })
}

fn volume_spike(cx: &Context) -> Option<Signal> {
    let r = cx.reference()?;
    let v = cx.lesson.volume?;
    if r.volume.n < WARM_EVENTS {
        return None;
    }
    let bar = (r.volume.mean + 4.0 * r.volume.sd()).max(r.volume.max + std::f64::consts::LN_2);
    if v <= bar || v < 7.0 {
        return None;
    }
    let observed = v.exp() - 1.0;
    let usual = r.volume.mean.exp() - 1.0;
    Some(Signal {
        kind: "volume_spike",
        feature: "data_volume",
        observed: J::from(observed.round()),
        expected: json!(format!(
            "about {usual:.0} (at most {:.0})",
            r.volume.max.exp() - 1.0
        )),
        score: (55.0 + 5.0 * (observed / usual.max(1.0)).log10()).min(90.0),
        says: format!("moved {observed:.0} bytes and records, against about {usual:.0} usually"),
    })
}

fn denials(cx: &Context) -> Option<Signal> {
    if cx.failures < 6 || !cx.fields.failed {
        return None;
    }
    Some(Signal {
        kind: "denial_spike",
        feature: "failure_ratio",
        observed: json!(format!(
            "{} of its last 20 failed or were denied",
            cx.failures
        )),
        expected: json!("a few"),
        score: 40.0 + 2.5 * f64::from(cx.failures - 6),
        says: format!("was refused {} times in its last 20 actions", cx.failures),
    })
}
