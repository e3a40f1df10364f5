//! The access certification report (`vigil report access`, `GET
//! /v1/reports/access`): per owner, each agent with its role, status and
//! keys (with their ages), the actions it actually took in the period
//! (counts), the principals it served, the leases it used, its anomalies,
//! and its hygiene findings now. Built from SQL over the audit store and
//! the inventory tables, so its counts are the ones an auditor can query.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value as J};

use super::query::Answer;
use crate::time::Timestamp;

/// Principals listed per agent (all are counted).
const PRINCIPALS_LISTED: usize = 50;

/// The period and the owner a report covers.
#[derive(Debug, Clone)]
pub struct Scope {
    /// First `occurred_at` included (RFC 3339, normalised).
    pub from: String,
    /// First `occurred_at` excluded.
    pub to: String,
    /// Only this owner's agents, if given.
    pub owner: Option<String>,
}

/// Why a report's period is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// `from` or `to` is not a time.
    #[error("{what} {value:?} is not a time: use YYYY-MM-DDTHH:MM:SSZ")]
    NotATime {
        /// "from" or "to".
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// A time the audit store cannot hold.
    #[error("{what} {time} is outside the times the audit store holds (1970-01-01 to 2262-04-10)")]
    OutOfRange {
        /// "from" or "to".
        what: &'static str,
        /// The time.
        time: String,
    },
    /// `from` is not before `to`.
    #[error("from {from} is not before to {to}")]
    Empty {
        /// The start.
        from: String,
        /// The end.
        to: String,
    },
}

impl Scope {
    /// Checks and normalises the period.
    pub fn new(from: &str, to: &str, owner: Option<String>) -> Result<Scope, ScopeError> {
        let parse = |what: &'static str, s: &str| {
            let t = Timestamp::parse_event_time(s).ok_or_else(|| ScopeError::NotATime {
                what,
                value: s.to_string(),
            })?;
            let t = t.to_rfc3339_millis();
            // The audit store's times are nanoseconds since 1970 (Arrow).
            if !("1970-01-01".."2262-04-11").contains(&&t[..10]) {
                return Err(ScopeError::OutOfRange { what, time: t });
            }
            Ok(t)
        };
        let (from, to) = (parse("from", from)?, parse("to", to)?);
        if from >= to {
            return Err(ScopeError::Empty { from, to });
        }
        Ok(Scope { from, to, owner })
    }

    fn text(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    /// The questions the report asks, in the order [`assemble`] reads
    /// their answers.
    pub fn questions(&self) -> Vec<String> {
        let period = format!(
            "occurred_at >= {} AND occurred_at < {}",
            Scope::text(&self.from),
            Scope::text(&self.to)
        );
        let accepted = format!("verdict = 'accepted' AND {period}");
        let owner = self.owner.as_deref().map_or(String::new(), |o| {
            format!("WHERE owner = {}", Scope::text(o))
        });
        vec![
            format!("SELECT agent_id, role, owner, status FROM agents {owner} ORDER BY owner, agent_id"),
            "SELECT agent_id, kid, nbf, exp, revoked, first_logged_at FROM keys ORDER BY agent_id, kid".into(),
            format!("SELECT agent_id, action, count(*) FROM events WHERE {accepted} GROUP BY 1, 2 ORDER BY 1, 2"),
            format!("SELECT agent_id, principal, count(*) FROM events WHERE {accepted} AND principal IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"),
            format!("SELECT agent_id, count(DISTINCT lease_id) FROM events WHERE {accepted} AND lease_id IS NOT NULL GROUP BY 1"),
            format!("SELECT agent_id, count(DISTINCT anomaly_id) FROM anomalies WHERE event_time >= {} AND event_time < {} GROUP BY 1", Scope::text(&self.from), Scope::text(&self.to)),
            "SELECT agent_id, kind FROM findings ORDER BY agent_id, kind".into(),
        ]
    }
}

fn s(v: &J) -> String {
    v.as_str().map(String::from).unwrap_or_default()
}

fn by_agent(answer: &Answer) -> BTreeMap<String, Vec<&Vec<J>>> {
    let mut m: BTreeMap<String, Vec<&Vec<J>>> = BTreeMap::new();
    for row in &answer.rows {
        m.entry(s(&row[0])).or_default().push(row);
    }
    m
}

fn age_days(since: &J, now: Timestamp) -> Option<i64> {
    let t = Timestamp::parse_event_time(since.as_str()?)?;
    Some((now.secs() - t.secs()) / 86_400)
}

/// The report from the answers to [`Scope::questions`], as of `now`.
pub fn assemble(scope: &Scope, answers: &[Answer], now: Timestamp) -> J {
    let [agents, keys, actions, principals, leases, anomalies, findings] = answers else {
        return json!({"error": "the report's questions were not all answered"});
    };
    let (keys, actions, principals) = (by_agent(keys), by_agent(actions), by_agent(principals));
    let (leases, anomalies, findings) = (by_agent(leases), by_agent(anomalies), by_agent(findings));
    let count = |m: &BTreeMap<String, Vec<&Vec<J>>>, id: &str| {
        m.get(id).and_then(|r| r[0][1].as_u64()).unwrap_or(0)
    };
    let mut owners: BTreeMap<String, Vec<J>> = BTreeMap::new();
    for row in &agents.rows {
        let id = s(&row[0]);
        let key_list: Vec<J> = keys
            .get(&id)
            .into_iter()
            .flatten()
            .map(|k| {
                json!({
                    "kid": k[1], "nbf": k[2], "exp": k[3], "revoked": k[4], "first_logged_at": k[5],
                    "age_days": age_days(if k[2].is_null() { &k[5] } else { &k[2] }, now),
                })
            })
            .collect();
        let acts: BTreeMap<String, u64> = actions
            .get(&id)
            .into_iter()
            .flatten()
            .map(|r| (s(&r[1]), r[2].as_u64().unwrap_or(0)))
            .collect();
        let served: Vec<&Vec<J>> = principals.get(&id).cloned().unwrap_or_default();
        let agent = json!({
            "agent_id": id, "role": row[1], "status": row[3], "keys": key_list,
            "actions": acts, "actions_total": acts.values().sum::<u64>(),
            "principals": served.iter().take(PRINCIPALS_LISTED).map(|r| r[1].clone()).collect::<Vec<_>>(),
            "principal_count": served.len(),
            "leases": count(&leases, &id), "anomalies": count(&anomalies, &id),
            "findings": findings.get(&id).into_iter().flatten().map(|r| r[1].clone()).collect::<Vec<_>>(),
        });
        let owner = row[2].as_str().unwrap_or("(no owner)").to_string();
        owners.entry(owner).or_default().push(agent);
    }
    json!({
        "report": "access", "from": scope.from, "to": scope.to, "owner": scope.owner,
        "generated_at": now.to_rfc3339_millis(),
        "owners": owners.into_iter().map(|(owner, agents)| json!({"owner": owner, "agents": agents})).collect::<Vec<_>>(),
    })
}

fn rows(report: &J) -> impl Iterator<Item = (&str, &J)> {
    report["owners"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| {
            let owner = o["owner"].as_str().unwrap_or("");
            o["agents"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |a| (owner, a))
        })
}

fn joined(v: &J) -> String {
    match v {
        J::Array(items) => items.iter().map(s).collect::<Vec<_>>().join(" "),
        J::Object(m) => m
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
        other => s(other),
    }
}

/// The report as CSV: one row per agent.
pub fn csv(report: &J) -> String {
    let field = |v: String| {
        if v.contains([',', '"', '\n']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v
        }
    };
    let mut out = String::from("owner,agent_id,role,status,keys,oldest_key_age_days,actions_total,actions,principal_count,leases,anomalies,findings\n");
    for (owner, a) in rows(report) {
        let ages = a["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["age_days"].as_i64());
        let cells = [
            owner.to_string(),
            s(&a["agent_id"]),
            s(&a["role"]),
            s(&a["status"]),
            a["keys"].as_array().map_or(0, Vec::len).to_string(),
            ages.max().map_or(String::new(), |d| d.to_string()),
            a["actions_total"].to_string(),
            joined(&a["actions"]),
            a["principal_count"].to_string(),
            a["leases"].to_string(),
            a["anomalies"].to_string(),
            joined(&a["findings"]),
        ];
        let line: Vec<String> = cells.into_iter().map(field).collect();
        let _ = writeln!(out, "{}", line.join(","));
    }
    out
}

fn esc(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as a printable HTML page, one table per owner.
pub fn html(report: &J) -> String {
    let mut out = format!(
        "<!doctype html><meta charset=utf-8><title>Access certification {from} to {to}</title>\
         <style>body{{font:13px sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%;margin-bottom:2em}}\
         td,th{{border:1px solid #999;padding:4px;text-align:left;vertical-align:top}}h2{{page-break-before:auto}}</style>\
         <h1>Access certification</h1><p>Actions from {from} to {to}; keys and findings as of {at}.</p>",
        from = esc(&s(&report["from"])), to = esc(&s(&report["to"])), at = esc(&s(&report["generated_at"])),
    );
    for o in report["owners"].as_array().into_iter().flatten() {
        let _ = write!(out, "<h2>Owner: {}</h2><table><tr><th>agent</th><th>role</th><th>status</th><th>keys (age, days)</th>\
            <th>actions taken</th><th>principals</th><th>leases</th><th>anomalies</th><th>findings</th><th>still needed?</th></tr>",
            esc(&s(&o["owner"])));
        for a in o["agents"].as_array().into_iter().flatten() {
            let keys: Vec<String> = a["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| format!("{} ({})", s(&k["kid"]), k["age_days"]))
                .collect();
            let _ = write!(out, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>&#9744; yes &#9744; no</td></tr>",
                esc(&s(&a["agent_id"])), esc(&s(&a["role"])), esc(&s(&a["status"])), esc(&keys.join(", ")),
                esc(&joined(&a["actions"])), a["actions_total"], esc(&joined(&a["principals"])), a["principal_count"],
                a["leases"], a["anomalies"], esc(&joined(&a["findings"])));
        }
        out.push_str("</table>");
    }
    out
}
