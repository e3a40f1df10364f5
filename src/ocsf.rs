//! OCSF 1.3.0 renderings for SIEMs: an anomaly as a Detection Finding
//! (class 2004) and an agent action as an API Activity (class 6003).
//! What OCSF has no place for goes in `unmapped`. Validated against
//! `schemas/ocsf/*.schema.json` (made from the OCSF 1.3.0 schema) by the
//! tests.

use serde_json::{json, Map, Value as J};

use crate::detect::anomaly::Anomaly;
use crate::log::receipt::ReceiptBody;
use crate::time::Timestamp;

/// The OCSF version rendered.
pub const OCSF_VERSION: &str = "1.3.0";

fn millis(text: &str) -> Option<i64> {
    Timestamp::parse_event_time(text).map(|t| (t.0 / 1_000_000) as i64)
}

fn product() -> J {
    json!({ "name": "Vigil", "vendor_name": "Vigil", "version": env!("CARGO_PKG_VERSION") })
}

/// Drops null members (OCSF wants optional attributes absent, not null).
fn compact(mut v: J) -> J {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, m| !m.is_null());
        for m in o.values_mut() {
            *m = compact(std::mem::take(m));
        }
    }
    v
}

/// OCSF severity of Vigil's.
fn severity(s: &str) -> (u8, &'static str) {
    match s {
        "low" => (2, "Low"),
        "medium" => (3, "Medium"),
        "high" => (4, "High"),
        "critical" => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

/// An anomaly (one version of it) as a Detection Finding: activity
/// Create for its first version, Update after; status New, In Progress
/// once confirmed, Suppressed once marked a false positive.
pub fn detection_finding(a: &Anomaly) -> J {
    let (activity, activity_name) = if a.revision == 0 {
        (1, "Create")
    } else {
        (2, "Update")
    };
    let (severity_id, severity_name) = severity(&a.severity);
    let (status_id, status) = match a.feedback.as_ref().map(|f| f.verdict.as_str()) {
        Some("false_positive") => (3, "Suppressed"),
        Some("confirmed") => (2, "In Progress"),
        _ => (1, "New"),
    };
    let detected = millis(&a.detected_at).unwrap_or(0);
    let related: Vec<J> = a.event_ids.iter().map(|id| json!({ "uid": id })).collect();
    compact(json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": 200400 + activity,
        "type_name": format!("Detection Finding: {activity_name}"),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status,
        "time": detected,
        "message": a.summary,
        "risk_score": a.score,
        "finding_info": {
            "uid": a.anomaly_id,
            "title": format!("{} by agent {}", a.kinds.join(", "), a.agent_id),
            "desc": a.summary,
            "types": a.kinds,
            "created_time": detected,
            "first_seen_time": millis(&a.event_time),
            "related_events": related,
        },
        "metadata": {
            "product": product(),
            "version": OCSF_VERSION,
            "uid": format!("{}.r{}", a.anomaly_id, a.revision),
            "correlation_uid": a.correlation_id,
        },
        "unmapped": {
            "agent_id": a.agent_id,
            "principal": a.principal,
            "explanation": a.explanation,
            "response": a.response,
            "from_rejected": a.from_rejected,
        },
    }))
}

/// The OCSF activity of an action name: the first verb it contains.
fn activity_of(action: &str) -> (u8, &'static str) {
    let a = action.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| a.contains(w));
    if has(&["delete", "remove", "offboard", "drop", "revoke"]) {
        (4, "Delete")
    } else if has(&["create", "insert", "add", "write", "send", "post"]) {
        (1, "Create")
    } else if has(&["update", "modify", "set", "change", "patch", "put"]) {
        (3, "Update")
    } else if has(&[
        "read", "get", "query", "list", "search", "fetch", "chat", "view",
    ]) {
        (2, "Read")
    } else {
        (99, "Other")
    }
}

/// A receipted event as an API Activity: the agent is the actor (its
/// principal the user it acts for), the action the API operation.
pub fn api_activity(body: &ReceiptBody, event: &J) -> J {
    let text = |name: &str| event.get(name).and_then(J::as_str);
    let action = text("action").unwrap_or("unknown");
    let (activity, activity_name) = activity_of(action);
    let (status_id, status) = match text("outcome") {
        None | Some("success") => (1, "Success"),
        Some("failure") | Some("denied") => (2, "Failure"),
        Some(_) => (99, "Other"),
    };
    let ip = text("source_ip").filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
    let user = text("principal").map(|p| json!({ "uid": p, "name": p }));
    let mut unmapped = Map::new();
    for name in [
        "resource",
        "sensitivity",
        "lease_id",
        "session_id",
        "bytes",
        "records",
        "justification",
        "delegation",
        "attributes",
    ] {
        if let Some(v) = event.get(name) {
            unmapped.insert(name.into(), v.clone());
        }
    }
    unmapped.insert("verdict".into(), J::String(body.verdict.clone()));
    unmapped.insert("log_index".into(), J::from(body.index));
    unmapped.insert("event_hash".into(), J::String(body.event_hash.clone()));
    compact(json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": 600300 + activity as u32,
        "type_name": format!("API Activity: {activity_name}"),
        "severity_id": 1,
        "severity": "Informational",
        "status_id": status_id,
        "status": status,
        "time": text("occurred_at").and_then(millis).or_else(|| millis(&body.received_at)),
        "message": format!("agent {} {} {}", body.agent_id, action, text("resource").unwrap_or("")).trim_end().to_string(),
        "api": {
            "operation": action,
            "request": { "uid": body.event_id },
        },
        "actor": {
            "app_name": body.agent_id,
            "app_uid": body.agent_id,
            "user": user,
        },
        "src_endpoint": { "uid": body.agent_id, "ip": ip },
        "metadata": {
            "product": product(),
            "version": OCSF_VERSION,
            "uid": body.event_id,
            "correlation_uid": body.correlation_id,
            "logged_time": millis(&body.received_at),
        },
        "unmapped": J::Object(unmapped),
    }))
}

/// A bundle's OCSF files, derived from its receipts and events (NDJSON,
/// line for line): API Activity for every agent's event, Detection
/// Finding for every anomaly version Vigil recorded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BundleOcsf {
    /// `events.ocsf.ndjson`.
    pub activities: Vec<u8>,
    /// `findings.ocsf.ndjson`.
    pub findings: Vec<u8>,
}

/// The first line of a bundle that is not a receipt, an event or an
/// anomaly.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {what}: {source}")]
pub struct BundleLineError {
    /// The line, from 1.
    pub line: usize,
    /// What it is not.
    pub what: &'static str,
    /// The parser's reason.
    pub source: serde_json::Error,
}

/// Renders a bundle's records; an error names the first line that is not
/// a receipt, an event or an anomaly.
pub fn bundle_files(receipts: &[u8], events: &[u8]) -> Result<BundleOcsf, BundleLineError> {
    let mut out = BundleOcsf::default();
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        b.split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    for (n, (r, e)) in lines(receipts).iter().zip(lines(events)).enumerate() {
        let at = |what, source| BundleLineError {
            line: n + 1,
            what,
            source,
        };
        let mut served: Map<String, J> =
            serde_json::from_slice(r).map_err(|e| at("the receipt is not JSON", e))?;
        served.remove("chain");
        served.remove("leaf_hash");
        let body: ReceiptBody =
            serde_json::from_value(J::Object(served)).map_err(|e| at("not a receipt", e))?;
        let event: J = serde_json::from_slice(&e).map_err(|e| at("the event is not JSON", e))?;
        let (line, to) = if body.agent_id == crate::event::PIPELINE_AGENT {
            if event["action"] != crate::detect::stage::ANOMALY_ACTION {
                continue;
            }
            let a: Anomaly = serde_json::from_value(event["attributes"]["anomaly"].clone())
                .map_err(|e| at("not an anomaly", e))?;
            (detection_finding(&a), &mut out.findings)
        } else {
            (api_activity(&body, &event), &mut out.activities)
        };
        to.extend_from_slice(line.to_string().as_bytes());
        to.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_map_to_activities() {
        assert_eq!(activity_of("hr.offboard_employee").0, 4);
        assert_eq!(activity_of("db.query").0, 2);
        assert_eq!(activity_of("crm.update_contact").0, 3);
        assert_eq!(activity_of("mail.send").0, 1);
        assert_eq!(activity_of("weird.thing").0, 99);
    }
}
