use super::*;
use crate::respond::policy::Policy;

fn anomaly(id: &str, agent: &str, severity: &str, kinds: &[&str]) -> Anomaly {
    let score = match severity {
        "critical" => 90,
        "high" => 70,
        _ => 55,
    };
    Anomaly {
        anomaly_id: id.into(),
        agent_id: agent.into(),
        principal: Some("alice@example.com".into()),
        correlation_id: Some("sess-1".into()),
        detected_at: "2026-11-30T09:00:00.000Z".into(),
        event_time: "2026-11-30T09:00:00.000Z".into(),
        score,
        severity: severity.into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        event_ids: vec![format!("{agent}-e1")],
        explanation: Vec::new(),
        summary: format!("{agent} did something new"),
        response: Response {
            action: "none".into(),
            status: "not_configured".into(),
        },
        from_rejected: false,
        feedback: None,
        revision: 0,
    }
}

fn logged_anomaly(a: &Anomaly) -> Logged {
    Logged {
        action: crate::detect::stage::ANOMALY_ACTION.into(),
        correlation_id: "sess-1".into(),
        attributes: json!({ "anomaly": a }),
    }
}

fn result(anomaly_id: &str, outcome: &str) -> Logged {
    Logged {
        action: evidence::STEP_UP_RESULT.into(),
        correlation_id: "sess-1".into(),
        attributes: json!({"anomaly_id": anomaly_id, "outcome": outcome}),
    }
}

struct World {
    policy: Policy,
    prefixes: BTreeMap<String, Vec<String>>,
}

impl World {
    fn new() -> World {
        let mut prefixes = BTreeMap::new();
        prefixes.insert("hr-assistant".into(), vec!["pki/issue/hr/".into()]);
        World {
            policy: Policy::default_for(true),
            prefixes,
        }
    }

    fn fold(&self, r: &mut Responder, e: &Logged) -> Vec<Effect> {
        let role_of = |_: &str| Some("hr-assistant".to_string());
        let trigger_of = |_: &str, _: &str| {
            Some(Trigger {
                action: "hr.read_employee".into(),
                resource: Some("hris://employees/E1".into()),
            })
        };
        let ctx = Context {
            policy: &self.policy,
            prefixes: Some(&self.prefixes),
            details_type: "vigil_agent_action",
            role_of: &role_of,
            trigger_of: &trigger_of,
        };
        r.logged(e, "2026-11-30T09:00:01.000Z", &ctx)
    }
}

fn with_leases(agent: &str) -> Responder {
    let mut r = Responder::default();
    for (i, lease) in ["pki/issue/hr/a", "pki/issue/hr/b", "aws/creds/other/c"]
        .iter()
        .enumerate()
    {
        r.lease_seen(agent, lease, 10 + i as u64);
    }
    r
}

fn posture_of(effects: &[Effect]) -> Option<&Posture> {
    effects.iter().rev().find_map(|e| match e {
        Effect::Posture(p) => Some(p),
        _ => None,
    })
}

#[test]
fn a_high_anomaly_asks_the_principal_and_approval_restores_the_agent() {
    let w = World::new();
    let mut r = with_leases("hr-1");
    let a = anomaly("anom-1", "hr-1", "high", &["rare_action"]);
    let out = w.fold(&mut r, &logged_anomaly(&a));
    let ask = out
        .iter()
        .find_map(|e| match e {
            Effect::AskStepUp(s) => Some(s),
            _ => None,
        })
        .expect("a step-up is asked");
    assert_eq!(ask.principal, "alice@example.com");
    assert!(
        ask.binding_message.contains("hr-1") && ask.binding_message.contains("hr.read_employee")
    );
    assert_eq!(
        ask.authorization_details[0]["identifier"],
        "hris://employees/E1"
    );
    assert!(matches!(&out[0], Effect::Record(e) if e.event_id == "anom-1.step_up"));
    assert_eq!(posture_of(&out).unwrap().state, State::StepUpRequired);
    // A second anomaly for the same agent and principal joins the first.
    let b = anomaly("anom-2", "hr-1", "high", &["rate_spike"]);
    let out = w.fold(&mut r, &logged_anomaly(&b));
    assert!(!out.iter().any(|e| matches!(e, Effect::AskStepUp(_))));
    // Approval: active again, both anomalies legitimate.
    let out = w.fold(&mut r, &result("anom-1", "approved"));
    assert_eq!(posture_of(&out).unwrap().state, State::Active);
    assert!(out
        .iter()
        .any(|e| matches!(e, Effect::Legitimate { anomaly_ids, .. } if anomaly_ids.len() == 2)));
    assert!(r.resume().is_empty());
}

#[test]
fn a_denied_step_up_revokes_only_leases_within_the_roles_prefixes() {
    let w = World::new();
    let mut r = with_leases("hr-1");
    let a = anomaly("anom-1", "hr-1", "high", &["rare_action"]);
    w.fold(&mut r, &logged_anomaly(&a));
    let out = w.fold(&mut r, &result("anom-1", "denied"));
    let order = out
        .iter()
        .find_map(|e| match e {
            Effect::Revoke(o) => Some(o),
            _ => None,
        })
        .expect("leases are revoked");
    assert_eq!(order.leases, ["pki/issue/hr/a", "pki/issue/hr/b"]);
    let p = posture_of(&out).unwrap();
    assert_eq!(p.state, State::Suspended);
    let outside: Vec<_> = p
        .revocations
        .iter()
        .filter(|r| r.status == "outside_prefixes")
        .collect();
    assert_eq!(outside.len(), 1);
    // A restart resumes the revocation until each lease is answered.
    assert_eq!(r.resume().len(), 1);
    for lease in ["pki/issue/hr/a", "pki/issue/hr/b"] {
        let e = Logged {
            action: evidence::REVOCATION.into(),
            correlation_id: "sess-1".into(),
            attributes: json!({"anomaly_id": "anom-1", "lease_id": lease, "outcome": "revoked", "agent_id": "hr-1"}),
        };
        w.fold(&mut r, &e);
    }
    assert!(r.resume().is_empty());
    let p = r.postures().next().unwrap();
    assert!(p
        .revocations
        .iter()
        .filter(|r| r.lease_id.starts_with("pki/"))
        .all(|r| r.status == "revoked"));
}

#[test]
fn forged_events_never_lead_to_a_response_and_restore_ends_a_suspension() {
    let w = World::new();
    let mut r = with_leases("hr-1");
    let mut forged = anomaly("anom-f", "hr-1", "critical", &["forged_events"]);
    forged.from_rejected = true;
    assert!(w.fold(&mut r, &logged_anomaly(&forged)).is_empty());
    let a = anomaly("anom-c", "hr-1", "critical", &["expired_lease"]);
    let out = w.fold(&mut r, &logged_anomaly(&a));
    assert_eq!(posture_of(&out).unwrap().state, State::Suspended);
    // The same anomaly again (a revision) does not act twice.
    assert!(w.fold(&mut r, &logged_anomaly(&a)).is_empty());
    let restore = Logged {
        action: evidence::RESTORE.into(),
        correlation_id: "admin:hr-1".into(),
        attributes: json!({"agent_id": "hr-1", "by": "token ops"}),
    };
    let out = w.fold(&mut r, &restore);
    assert_eq!(posture_of(&out).unwrap().state, State::Active);
    assert!(r.resume().is_empty());
}

#[test]
fn a_lease_first_used_by_another_agent_is_never_revoked_for_this_one() {
    let w = World::new();
    let mut r = with_leases("hr-1");
    // hr-2, compromised, names hr-1's lease after hr-1 used it, and one of
    // its own.
    r.lease_seen("hr-2", "pki/issue/hr/a", 50);
    r.lease_seen("hr-2", "pki/issue/hr/own", 51);
    let a = anomaly("anom-x", "hr-2", "critical", &["foreign_lease"]);
    let out = w.fold(&mut r, &logged_anomaly(&a));
    let order = out
        .iter()
        .find_map(|e| match e {
            Effect::Revoke(o) => Some(o),
            _ => None,
        })
        .expect("its own lease is revoked");
    assert_eq!(order.leases, ["pki/issue/hr/own"]);
    let p = posture_of(&out).unwrap();
    let foreign = p
        .revocations
        .iter()
        .find(|r| r.lease_id == "pki/issue/hr/a")
        .unwrap();
    assert_eq!(foreign.status, "foreign_lease");
    // hr-1, the owner, still gets its lease revoked when it is the one
    // responded to.
    let b = anomaly("anom-y", "hr-1", "critical", &["rate_spike"]);
    let out = w.fold(&mut r, &logged_anomaly(&b));
    let order = out
        .iter()
        .find_map(|e| match e {
            Effect::Revoke(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert!(order.leases.contains(&"pki/issue/hr/a".to_string()));
}
