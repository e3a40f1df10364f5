//! What an agent (or a whole role) normally does, in bounded memory:
//! counted sets of the values it used, running statistics of its window
//! features, and its hour-of-week profile. Values are kept as 64-bit
//! fingerprints (the first 8 bytes of their SHA-256), never as strings.

use serde::{Deserialize, Serialize};

/// Fingerprint of a value: the first 8 bytes of its SHA-256 (an attacker
/// cannot make a new value pass for a known one).
pub fn fingerprint(kind: &str, value: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// A bounded set of fingerprints with how often each was seen; when full,
/// a new value replaces the rarest one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ValueSet(Vec<(u64, u32)>);

impl ValueSet {
    /// How often `fp` was seen (0 when never, or forgotten).
    pub fn count(&self, fp: u64) -> u32 {
        self.0.iter().find(|(f, _)| *f == fp).map_or(0, |(_, c)| *c)
    }

    /// How many distinct values it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Counts `fp` `times` more, keeping at most `cap` values.
    pub fn learn(&mut self, fp: u64, times: u32, cap: usize) {
        if let Some((_, c)) = self.0.iter_mut().find(|(f, _)| *f == fp) {
            *c = c.saturating_add(times);
            return;
        }
        if self.0.len() < cap {
            if self.0.capacity() == 0 {
                self.0.reserve_exact(cap);
            }
            self.0.push((fp, times));
            return;
        }
        if let Some(rarest) = self.0.iter_mut().min_by_key(|(_, c)| *c) {
            *rarest = (fp, times);
        }
    }
}

/// A running mean, variance and maximum of one feature (exponentially
/// weighted once it has seen `1/ALPHA` values).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Stat {
    /// Values seen.
    pub n: u64,
    /// Their (weighted) mean.
    pub mean: f64,
    /// Their (weighted) variance.
    pub var: f64,
    /// The largest value seen.
    pub max: f64,
}

/// Weight of a new value once the statistic is warm.
const ALPHA: f64 = 0.01;

impl Stat {
    /// Takes one value in.
    pub fn learn(&mut self, x: f64) {
        self.n += 1;
        let a = (1.0 / self.n as f64).max(ALPHA);
        let d = x - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
        self.max = self.max.max(x);
    }

    /// The standard deviation.
    pub fn sd(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// Hours in a week.
pub const HOURS_OF_WEEK: usize = 168;

/// How many values of each kind a profile keeps.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Actions.
    pub actions: usize,
    /// Resource patterns.
    pub resources: usize,
    /// Principals.
    pub principals: usize,
    /// Source addresses.
    pub ips: usize,
    /// Action-to-action transitions.
    pub transitions: usize,
}

/// Caps for one agent (keeps its state within about 4 KiB).
pub const AGENT_CAPS: Caps = Caps {
    actions: 20,
    resources: 24,
    principals: 12,
    ips: 8,
    transitions: 24,
};

/// Caps for a role, which sees the values of all its agents.
pub const ROLE_CAPS: Caps = Caps {
    actions: 96,
    resources: 128,
    principals: 256,
    ips: 128,
    transitions: 256,
};

/// The values of one event a profile learns.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Lesson {
    /// Fingerprint of the action.
    pub action: u64,
    /// Fingerprint of the resource pattern, if any.
    pub resource: Option<u64>,
    /// Fingerprint of the principal, if any.
    pub principal: Option<u64>,
    /// Fingerprint of the source address, if any.
    pub ip: Option<u64>,
    /// Fingerprint of (previous action, action), if there was one.
    pub transition: Option<u64>,
    /// Hour of the week (0 = Monday 00:00 UTC).
    pub hour: u16,
    /// Events in the trailing minute.
    pub rate: f64,
    /// Distinct resources in the trailing ten minutes.
    pub sweep: f64,
    /// High or critical events in the trailing ten minutes (of a
    /// sensitive event; 0 otherwise).
    #[serde(default)]
    pub sensitive: f64,
    /// ln(1 + bytes + records), when the event gave either.
    pub volume: Option<f64>,
    /// Delegation depth.
    pub depth: u8,
}

/// What an agent or a role normally does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// Events learnt from.
    pub events: u64,
    /// Actions taken.
    pub actions: ValueSet,
    /// Resource patterns acted on (ids replaced by `*`).
    pub resources: ValueSet,
    /// Principals acted for.
    pub principals: ValueSet,
    /// Source addresses.
    pub ips: ValueSet,
    /// Action-to-action transitions.
    pub transitions: ValueSet,
    /// Events per hour of the week.
    pub hours: Vec<u16>,
    /// Events in the trailing minute, seen at each event.
    pub rate: Stat,
    /// Distinct resources in the trailing ten minutes, seen at each event.
    pub sweep: Stat,
    /// High or critical events in the trailing ten minutes, seen at each
    /// sensitive event.
    #[serde(default)]
    pub sensitive: Stat,
    /// ln(1 + bytes + records) of events that gave a volume.
    pub volume: Stat,
    /// The deepest delegation seen.
    pub max_depth: u8,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            events: 0,
            actions: ValueSet::default(),
            resources: ValueSet::default(),
            principals: ValueSet::default(),
            ips: ValueSet::default(),
            transitions: ValueSet::default(),
            hours: vec![0; HOURS_OF_WEEK],
            rate: Stat::default(),
            sweep: Stat::default(),
            sensitive: Stat::default(),
            volume: Stat::default(),
            max_depth: 0,
        }
    }
}

impl Profile {
    /// Learns one event's values, each counted `times`.
    pub fn learn(&mut self, l: &Lesson, times: u32, caps: Caps) {
        self.events += u64::from(times);
        self.actions.learn(l.action, times, caps.actions);
        let sets = [
            (&mut self.resources, l.resource, caps.resources),
            (&mut self.principals, l.principal, caps.principals),
            (&mut self.ips, l.ip, caps.ips),
            (&mut self.transitions, l.transition, caps.transitions),
        ];
        for (set, fp, cap) in sets {
            if let Some(fp) = fp {
                set.learn(fp, times, cap);
            }
        }
        if let Some(h) = self.hours.get_mut(usize::from(l.hour)) {
            *h = h.saturating_add(times.min(u32::from(u16::MAX)) as u16);
        }
        for _ in 0..times {
            self.rate.learn(l.rate);
            self.sweep.learn(l.sweep);
            if l.sensitive > 0.0 {
                self.sensitive.learn(l.sensitive);
            }
            if let Some(v) = l.volume {
                self.volume.learn(v);
            }
        }
        self.max_depth = self.max_depth.max(l.depth);
    }

    /// Share of this profile's events at `hour`'s hour of the day, over
    /// every day of the week.
    pub fn hour_of_day_share(&self, hour: u16) -> f64 {
        let hod = usize::from(hour) % 24;
        let at: u64 = (0..7).map(|d| u64::from(self.hours[d * 24 + hod])).sum();
        if self.events == 0 {
            return 0.0;
        }
        at as f64 / self.events as f64
    }

    /// Bytes this profile holds in memory (its fixed part and its sets).
    pub fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, u32)>();
        std::mem::size_of::<Profile>()
            + self.hours.capacity() * 2
            + entry
                * (self.actions.0.capacity()
                    + self.resources.0.capacity()
                    + self.principals.0.capacity()
                    + self.ips.0.capacity()
                    + self.transitions.0.capacity())
    }
}

/// A resource with its ids replaced by `*`: `hris://employees/E1234`
/// becomes `hris://employees/*`, so that a pattern is learnt, not each id.
pub fn resource_pattern(resource: &str) -> String {
    let mut out = String::with_capacity(resource.len());
    for (i, part) in resource.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if part.bytes().any(|b| b.is_ascii_digit()) && !part.contains(':') {
            out.push('*');
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_a_resource_become_a_pattern() {
        assert_eq!(
            resource_pattern("hris://employees/E1234"),
            "hris://employees/*"
        );
        assert_eq!(
            resource_pattern("db://prod/orders/42/lines"),
            "db://prod/orders/*/lines"
        );
        assert_eq!(
            resource_pattern("s3://bucket/reports"),
            "s3://bucket/reports"
        );
    }

    #[test]
    fn a_full_set_forgets_its_rarest_value() {
        let mut s = ValueSet::default();
        s.learn(1, 5, 2);
        s.learn(2, 1, 2);
        s.learn(3, 1, 2);
        assert_eq!((s.count(1), s.count(2), s.count(3)), (5, 0, 1));
    }

    #[test]
    fn a_stat_follows_its_values() {
        let mut s = Stat::default();
        for x in [2.0, 4.0, 2.0, 4.0] {
            s.learn(x);
        }
        assert!((s.mean - 3.0).abs() < 1e-9);
        assert!(s.sd() > 0.9 && s.sd() < 1.1, "{}", s.sd());
        assert_eq!(s.max, 4.0);
    }
}
