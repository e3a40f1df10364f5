//! Traces (issue 14): with `[telemetry] otlp_endpoint`, each event's
//! stages (receive, judge, append, fsync, detect) reach an OTLP/HTTP
//! receiver as spans of one trace, carrying its correlation id: the
//! event's own W3C trace when it has one, with the request's
//! `traceparent` linked.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as J};

use crate::util::*;

struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every span received: (name, trace id, span id, parent span id, attributes, links).
fn spans(out: &std::path::Path) -> Vec<J> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut all = Vec::new();
    for line in text.lines() {
        let j: J = serde_json::from_str(line).expect("the exporter posts JSON");
        for rs in j["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].clone());
            assert_eq!(service, Some(json!("vigil")), "{rs}");
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                all.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    all
}

fn attr<'a>(span: &'a J, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

/// Starts the OTLP receiver writing to `dir/spans.ndjson`; returns (the
/// file, the running receiver) and its port.
fn receiver(dir: &std::path::Path) -> ((std::path::PathBuf, Receiver), String) {
    let (out, port_file) = (dir.join("spans.ndjson"), dir.join("port"));
    let running = Receiver(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/py/otlp_receiver.py"
            ))
            .args([&out, &port_file])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the OTLP receiver"),
    );
    let port = wait_until(
        Duration::from_secs(20),
        || std::fs::read_to_string(&port_file).ok(),
        || "the OTLP receiver did not start".into(),
    );
    ((out, running), port)
}

#[test]
fn each_events_stages_reach_an_otlp_receiver_as_one_trace() {
    let dir = tempfile::tempdir().unwrap();
    let ((out, _receiver), port) = receiver(dir.path());
    let signer = Signer::new(101, "traced", "traced#1");
    let jwks = dir.path().join("agents.jwks.json");
    write_jwks(&jwks, &[signer.jwk(json!({}))]);
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let mut s = Server::start_configured(&dir.path().join("data"), &jwks, &cfg);

    let (own_trace, own_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let request_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let with_own = signer.sign(&signer.event(
        "tr-own",
        json!({"correlation_id": "corr-own", "trace_id": own_trace, "span_id": own_span}),
    ));
    let without = signer.sign(&signer.event("tr-plain", json!({"correlation_id": "corr-plain"})));
    let body = [with_own, b"\n".to_vec(), without, b"\n".to_vec()].concat();
    let auth = format!("Bearer {}", s.token);
    let traceparent = format!("00-{request_trace}-00f067aa0ba902b7-01");
    let r = http(
        s.addr,
        "POST",
        "/v1/events",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-ndjson"),
            ("traceparent", &traceparent),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2, "{}", r.text());
    // Detection reads both; SIGTERM flushes the exporter.
    wait_until(
        Duration::from_secs(30),
        || {
            let m = s.req("GET", "/metrics", None, b"").text();
            m.lines()
                .any(|l| {
                    l.starts_with("vigil_detection_position_records ")
                        && !l.ends_with(" 0")
                        && !l.ends_with(" 1")
                })
                .then_some(())
        },
        || "detection did not read the events".into(),
    );
    assert_eq!(s.stop(), Some(0), "{}", s.log_text());
    let all = spans(&out);

    let of = |corr: &str| -> Vec<&J> {
        all.iter()
            .filter(|sp| attr(sp, "vigil.correlation_id") == Some(corr))
            .collect()
    };
    let named = |set: &[&J], name: &str| -> J {
        set.iter()
            .find(|sp| sp["name"] == name)
            .map(|sp| (*sp).clone())
            .unwrap_or_else(|| panic!("no {name} span among {set:?}"))
    };
    // The event with its own trace: the stages are in the agent's trace,
    // under its span; the request's traceparent is linked.
    let own = of("corr-own");
    let receive = named(&own, "receive");
    assert_eq!(receive["traceId"], own_trace, "{receive}");
    assert_eq!(receive["parentSpanId"], own_span, "{receive}");
    assert_eq!(receive["links"][0]["traceId"], request_trace, "{receive}");
    for stage in ["judge", "append", "fsync"] {
        let sp = named(&own, stage);
        assert_eq!(sp["traceId"], own_trace);
        assert_eq!(
            sp["parentSpanId"], receive["spanId"],
            "{stage} is under receive: {sp}"
        );
        assert_eq!(attr(&sp, "vigil.event_id"), Some("tr-own"));
    }
    let detect = named(&own, "detect");
    assert_eq!(detect["traceId"], own_trace, "{detect}");
    assert_eq!(attr(&detect, "vigil.agent_id"), Some("traced"));
    // The event without one: a trace of its own, the same for every stage.
    let plain = of("corr-plain");
    let receive = named(&plain, "receive");
    assert_ne!(receive["traceId"], own_trace);
    assert_eq!(named(&plain, "detect")["traceId"], receive["traceId"]);
    assert_eq!(attr(&receive, "vigil.status"), Some("accepted"));
}

/// An anomaly that the policy answers with a revocation: its `respond`
/// span is in the trace of the event whose `detect` span raised it.
#[test]
fn a_response_is_traced_in_the_trace_of_the_event_that_raised_it() {
    use crate::detection::{offboarding, post_all, routine_with_leases, settle};
    let dir = tempfile::tempdir().unwrap();
    let ((out, _receiver), port) = receiver(dir.path());
    let signer = Signer::new(44, "db-0", "db-0#1");
    let jwks = dir.path().join("fleet.jwks.json");
    write_jwks(
        &jwks,
        &[signer.jwk(json!({"role": "db-agent", "owner": "data-ops"}))],
    );
    let cfg = dir.path().join("vigil.toml");
    // Vault at port 1 refuses connections: the decision is still made,
    // logged and traced; the revocation is retried.
    std::fs::write(
        &cfg,
        format!(
            r#"
[telemetry]
otlp_endpoint = "http://127.0.0.1:{port}"
[vault]
address = "http://127.0.0.1:1"
token = "root"
lease_prefixes = {{ "db-agent" = ["database/creds/db-agent/"] }}
[[response.rules]]
roles = ["db-agent"]
min_score = 50
then = "revoke"
"#
        ),
    )
    .unwrap();
    let server = Server::start_configured(&dir.path().join("data"), &jwks, &cfg);
    let leases = vec![vec!["database/creds/db-agent/L1".to_string()]];
    post_all(
        &server,
        &routine_with_leases(std::slice::from_ref(&signer), &leases),
    );
    settle(&server);
    post_all(&server, &offboarding(&signer));
    let (respond, detect) = wait_until(
        Duration::from_secs(90),
        || {
            let all = spans(&out);
            all.iter().filter(|s| s["name"] == "respond").find_map(|r| {
                let anomaly = attr(r, "vigil.anomaly_id")?;
                let d = all.iter().find(|d| {
                    d["name"] == "detect"
                        && attr(d, "vigil.anomaly_id") == Some(anomaly)
                        && d["traceId"] == r["traceId"]
                })?;
                Some((r.clone(), d.clone()))
            })
        },
        || {
            format!(
                "no respond span in the trace of the detect span that raised its anomaly: {}",
                server.log_text()
            )
        },
    );
    assert!(
        attr(&respond, "vigil.action").is_some_and(|a| a.starts_with("vigil.")),
        "{respond}"
    );
    assert!(
        attr(&respond, "vigil.correlation_id").is_some(),
        "{respond}"
    );
    assert_eq!(attr(&respond, "vigil.agent_id"), Some("db-0"));
    assert_eq!(attr(&detect, "vigil.agent_id"), Some("db-0"));
}
