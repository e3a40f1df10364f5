//! The detectors on hand-made event streams (no I/O).

use super::*;

const MIN: i64 = 60_000;
/// Monday 2026-11-30 09:00 UTC.
const MONDAY_9: i64 = 1_796_029_200_000;

fn event(agent: &str, n: u64, t: i64, action: &str, resource: &str) -> Observation {
    Observation {
        index: n,
        agent_id: agent.into(),
        event_id: format!("{agent}-e{n}"),
        correlation_id: format!("c{}", n / 5),
        received_ms: t,
        role: Some("hr".into()),
        judged: Judged::Accepted(Fields {
            occurred_ms: t,
            action: action.into(),
            resource: Some(resource.into()),
            principal: Some("alice@example.com".into()),
            source_ip: Some("10.0.0.7".into()),
            ..Fields::default()
        }),
    }
}

/// An agent that reads one employee record every ten minutes during work
/// hours, for `days` weekdays.
fn routine(d: &mut Detector, agent: &str, days: i64) -> (u64, i64) {
    let mut n = 0;
    let mut t = MONDAY_9;
    for day in 0..days {
        for slot in 0..48 {
            t = MONDAY_9 + day * 24 * 60 * MIN + slot * 10 * MIN;
            let e = event(
                agent,
                n,
                t,
                "hr.read_employee",
                &format!("hris://employees/E{}", n % 7),
            );
            assert_eq!(d.observe(&e, "now"), None, "routine event {n} alarmed");
            n += 1;
        }
    }
    (n, t)
}

#[test]
fn a_routine_agent_raises_nothing_and_stays_within_4_kib() {
    let mut d = Detector::default();
    routine(&mut d, "hr-bot", 5);
    let (max, _) = d.agent_memory();
    eprintln!("a full agent state: {max} bytes");
    assert!(max <= 4096, "{max} bytes");
}

/// Agent `agent`'s event `n`: offboarding `employee` at `t`, under
/// `correlation`.
fn offboarding(agent: &str, n: u64, t: i64, employee: &str, correlation: &str) -> Observation {
    let mut e = event(
        agent,
        n,
        t,
        "hr.offboard_employee",
        &format!("hris://employees/{employee}"),
    );
    e.correlation_id = correlation.into();
    e
}

/// Forty offboardings by hr-bot, two seconds apart from a minute after
/// `t0` (employees `{prefix}0`, `{prefix}1`, ...; the first numbered `n`):
/// what detection emitted, with the offboarding's index.
fn offboarding_sweep(
    d: &mut Detector,
    n: u64,
    t0: i64,
    prefix: &str,
    correlation: &str,
) -> Vec<(i64, Emitted)> {
    (0..40)
        .filter_map(|i| {
            let t = t0 + MIN + i * 2000;
            let e = offboarding(
                "hr-bot",
                n + i as u64,
                t,
                &format!("{prefix}{i}"),
                correlation,
            );
            d.observe(&e, "now").map(|em| (i, em))
        })
        .collect()
}

#[test]
fn an_offboarding_sweep_alerts_within_three_events_and_merges() {
    let mut d = Detector::default();
    let (n, t0) = routine(&mut d, "hr-bot", 5);
    let mut first = None;
    let mut ids = Vec::new();
    for (i, em) in offboarding_sweep(&mut d, n, t0, "X", "inject-1") {
        first.get_or_insert(i);
        ids.push(em.anomaly.anomaly_id.clone());
    }
    assert_eq!(first, Some(0), "the first never-seen action alerts");
    ids.dedup();
    assert_eq!(ids.len(), 1, "one anomaly, merged: {ids:?}");
    let open = d.agents["hr-bot"].open.clone().unwrap();
    let open = *open;
    assert!(open.score >= 70, "{open:?}");
    assert!(
        open.kinds
            .iter()
            .any(|k| k == "rate_spike" || k == "resource_sweep"),
        "{open:?}"
    );
    assert_eq!(open.event_ids[0], "hr-bot-e240");
}

#[test]
fn the_same_stream_gives_the_same_anomalies_and_rejected_events_teach_nothing() {
    let run = || {
        let mut d = Detector::default();
        let (n, t) = routine(&mut d, "a1", 3);
        let before = d.agents["a1"].profile.clone();
        let mut out = Vec::new();
        for i in 0..8 {
            let forged = Observation {
                judged: Judged::Rejected("bad_signature".into()),
                ..event("a1", n + i, t + i as i64 * 1000, "hr.delete_all", "x")
            };
            out.extend(d.observe(&forged, "now"));
        }
        assert_eq!(
            d.agents["a1"].profile, before,
            "forgeries changed the baseline"
        );
        (out, d)
    };
    let (a, _) = run();
    let (b, _) = run();
    assert_eq!(a, b);
    let last = a.last().unwrap();
    assert!(
        last.anomaly.from_rejected && last.anomaly.kinds == ["forged_events"],
        "{last:?}"
    );
    assert!(last.anomaly.score >= 50);
}

#[test]
fn a_new_agent_is_judged_by_its_role_from_its_first_event() {
    let mut d = Detector::default();
    let (n, t) = routine(&mut d, "hr-1", 3);
    let e = event(
        "hr-2",
        n,
        t + MIN,
        "hr.read_employee",
        "hris://employees/E1",
    );
    assert_eq!(d.observe(&e, "now"), None, "the role's usual action");
    let e = event(
        "hr-2",
        n + 1,
        t + 2 * MIN,
        "db.export_table",
        "db://prod/payroll",
    );
    let em = d.observe(&e, "now").expect("new to the role");
    assert!(
        em.anomaly.kinds.contains(&"rare_action".to_string()),
        "{em:?}"
    );
}

#[test]
fn an_expired_or_foreign_lease_is_misuse() {
    let mut d = Detector::default();
    let mut e = event("a", 0, MONDAY_9, "db.query", "db://x");
    if let Judged::Accepted(f) = &mut e.judged {
        f.lease_id = Some("lease-1".into());
        f.lease_expires_ms = Some(MONDAY_9 - 1000);
    }
    let em = d.observe(&e, "now").unwrap();
    assert!(em.anomaly.kinds.contains(&"expired_lease".to_string()));
    let mut e2 = event("b", 1, MONDAY_9 + 1000, "db.query", "db://x");
    if let Judged::Accepted(f) = &mut e2.judged {
        f.lease_id = Some("lease-1".into());
    }
    let em = d.observe(&e2, "now").unwrap();
    assert!(
        em.anomaly.kinds.contains(&"foreign_lease".to_string()),
        "{em:?}"
    );
    assert!(em.anomaly.score >= 85);
}

#[test]
fn activity_at_three_in_the_morning_is_off_hours_and_feedback_teaches_it() {
    let mut d = Detector::default();
    let (n, t) = routine(&mut d, "a", 5);
    // Next day, 03:00.
    let night = t - (t - MONDAY_9) % (24 * 60 * MIN) + 24 * 60 * MIN - 6 * 60 * MIN;
    let e = event("a", n, night, "hr.read_employee", "hris://employees/E1");
    let em = d.observe(&e, "now").expect("off hours");
    assert!(
        em.anomaly.kinds.contains(&"off_hours".to_string()),
        "{em:?}"
    );
    d.feedback(&em.anomaly.anomaly_id, "false_positive");
    let e = event(
        "a",
        n + 1,
        night + 7 * 24 * 60 * MIN,
        "hr.read_employee",
        "hris://employees/E1",
    );
    assert_eq!(d.observe(&e, "now"), None, "taught by feedback");
}

#[test]
fn a_late_event_is_not_counted_in_windows_and_teaches_nothing() {
    let mut d = Detector::default();
    let (n, t) = routine(&mut d, "a", 2);
    let before = d.agents["a"].profile.clone();
    let e = event(
        "a",
        n,
        t - 3 * 60 * MIN,
        "hr.read_employee",
        "hris://employees/E1",
    );
    assert_eq!(d.observe(&e, "now"), None);
    assert_eq!(d.agents["a"].profile, before);
}

#[test]
fn an_agent_state_with_every_set_full_stays_within_4_kib() {
    let mut d = Detector::default();
    for n in 0..2000u64 {
        let t = MONDAY_9 + n as i64 * 7 * MIN;
        let mut e = event(
            "busy",
            n,
            t,
            &format!("act.{}", n % 50),
            &format!("r{}://x/{n}", n % 60),
        );
        if let Judged::Accepted(f) = &mut e.judged {
            f.principal = Some(format!("p{}", n % 40));
            f.source_ip = Some(format!("10.0.{}.1", n % 30));
            f.volume = Some(n as f64);
        }
        d.observe(&e, "now");
        if n % 3 == 0 {
            d.feedback(&anomaly::anomaly_id("busy", &e.event_id), "false_positive");
        }
    }
    let s = &d.agents["busy"];
    assert_eq!(s.profile.actions.len(), AGENT_CAPS.actions);
    assert_eq!(s.profile.principals.len(), AGENT_CAPS.principals);
    let (max, _) = d.agent_memory();
    eprintln!("a full agent state: {max} bytes");
    assert!(max <= 4096, "{max} bytes");
}

#[test]
fn reading_only_the_members_detection_needs_gives_the_same_fields() {
    let sim = crate::simulate::simulate(2, 8, 1);
    for raw in sim.events.iter().take(3000) {
        let whole = Fields::of(&crate::json::parse(raw).unwrap());
        assert!(whole.is_some());
        assert_eq!(Fields::of_bytes(raw), whole);
    }
    let escaped = br#"{"occurred_at":"2026-11-30T09:00:00Z","\u0061ction":"db.query","attributes":{"action":"x"},"delegation":["a","b"]}"#;
    let f = Fields::of_bytes(escaped).unwrap();
    assert_eq!((f.action.as_str(), f.depth), ("db.query", 2));
}

#[test]
fn a_dormant_agent_that_wakes_up_is_an_alert() {
    let mut d = Detector::default();
    let (n, t) = routine(&mut d, "a", 5);
    // Five weeks later, at its usual hour, its usual action.
    let later = t - (t - MONDAY_9) % (7 * 24 * 60 * MIN) + 5 * 7 * 24 * 60 * MIN + 30 * MIN;
    let e = event("a", n, later, "hr.read_employee", "hris://employees/E1");
    let em = d.observe(&e, "now").expect("a wake-up");
    assert_eq!(
        em.anomaly.kinds,
        vec!["dormant_agent".to_string()],
        "{em:?}"
    );
    assert!(em.anomaly.score >= 50, "{em:?}");
    assert!(
        em.anomaly
            .summary
            .contains("days without an accepted event"),
        "{em:?}"
    );
    // Its next events are routine again.
    let e = event(
        "a",
        n + 1,
        later + 30 * MIN,
        "hr.read_employee",
        "hris://employees/E2",
    );
    let again = d.observe(&e, "now");
    assert!(
        again
            .as_ref()
            .is_none_or(|a| !a.anomaly.kinds.contains(&"dormant_agent".to_string())),
        "{again:?}"
    );
}

#[test]
fn a_flood_under_an_open_anomaly_adds_versions_only_while_it_changes() {
    let mut d = Detector::default();
    let (mut n, t0) = routine(&mut d, "flooder", 5);
    let mut versions = 0;
    let mut last = None;
    for i in 0..400 {
        let e = offboarding("flooder", n, t0 + MIN + i * 50, &format!("F{i}"), "flood-1");
        n += 1;
        if let Some(em) = d.observe(&e, "now") {
            versions += 1;
            last = Some(em.anomaly);
        }
    }
    let last = last.expect("the flood alerts");
    assert_eq!(last.event_ids.len(), anomaly::MAX_EVENT_IDS);
    assert!(
        versions <= anomaly::MAX_EVENT_IDS + 10,
        "{versions} versions for 400 events"
    );
    let open = d.agents["flooder"].open.clone().unwrap();
    assert_eq!(
        *open, last,
        "the last version shown is the anomaly as it stands"
    );
}

#[test]
fn feedback_and_response_on_the_board_outlive_later_merges() {
    let mut d = Detector::default();
    let (n, t0) = routine(&mut d, "hr-bot", 5);
    let mut board = board::Board::default();
    let mut shown = 0;
    for (_, em) in offboarding_sweep(&mut d, n, t0, "Y", "inject-2") {
        let id = em.anomaly.anomaly_id.clone();
        board.show(em.anomaly);
        shown += 1;
        if shown == 1 {
            board.feedback(
                &id,
                anomaly::Feedback {
                    verdict: "confirmed".into(),
                    note: None,
                    index: 7,
                },
            );
            board.respond(
                &id,
                anomaly::Response {
                    action: "step_up".into(),
                    status: "pending".into(),
                },
            );
        }
    }
    assert!(shown > 1, "later merges were shown: {shown}");
    let a = board.list(&board::Filter::default()).remove(0);
    assert_eq!(a.feedback.map(|f| f.verdict).as_deref(), Some("confirmed"));
    assert_eq!(a.response.action, "step_up");
}
