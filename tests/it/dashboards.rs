//! The Grafana dashboard against the real exporter: every metric it names
//! is in `/metrics`, and a real Prometheus (Debian's package) scrapes the
//! server and evaluates every query of the dashboard.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as J};

use crate::services::free_port;
use crate::util::*;

/// The dashboard's queries, with Grafana's interval variables replaced.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/vigil.json");
    let d: J = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            out.push(
                expr.replace("$__rate_interval", "1m")
                    .replace("$__range", "5m"),
            );
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

/// The `vigil_*` metric names an expression reads (histogram series named
/// by their family).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("vigil_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.push(family.to_string());
        i = end;
    }
    names
}

fn prometheus_bin() -> PathBuf {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("prometheus is not installed: run ./scripts/test.sh, which installs Debian's prometheus package");
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn scraping(dir: &Path, target: SocketAddr) -> Prometheus {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, addr };
        wait_until(
            Duration::from_secs(60),
            || {
                std::net::TcpStream::connect(addr).ok()?;
                Some(()).filter(|_| http(addr, "GET", "/-/ready", &[], b"").status == 200)
            },
            || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default(),
        );
        p
    }

    fn query(&self, expr: &str) -> J {
        let r = http(
            self.addr,
            "GET",
            &format!("/api/v1/query?query={}", encode(expr)),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{expr}: {}", r.text());
        r.json()
    }
}

#[test]
fn every_dashboard_query_reads_exported_metrics_through_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nmetrics_listen = \"{metrics_addr}\"\n[detection]\nenabled = false\n"),
    )
    .unwrap();
    let (signers, jwks) = fleet(dir.path(), "dash", 70, 2);
    let server = Server::start_configured(&dir.path().join("data"), &jwks, &cfg);
    let send = |from: usize| {
        let mut lines: Vec<Vec<u8>> = (from..from + 20)
            .map(|i| {
                let s = &signers[i % 2];
                s.sign(&s.event(&format!("d-{i}"), json!({})))
            })
            .collect();
        let forged = String::from_utf8(lines[0].clone())
            .unwrap()
            .replace("db.query", "db.drop");
        lines.push(forged.into_bytes());
        lines.push(b"{not json".to_vec());
        server.post_ndjson(&lines);
    };
    send(0);
    let r = server.req(
        "POST",
        "/v1/query",
        None,
        br#"{"sql":"SELECT count(*) FROM events"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Every name the dashboard reads is exported (by the metrics listener,
    // without a token).
    let exported = http(metrics_addr, "GET", "/metrics", &[], b"").text();
    for expr in dashboard_queries() {
        for name in metric_names(&expr) {
            assert!(
                exported.contains(&format!("# TYPE {name} ")),
                "the dashboard reads {name} ({expr}), which /metrics does not export"
            );
        }
    }

    // A real Prometheus scrapes it and evaluates every query.
    let prom = Prometheus::scraping(dir.path(), metrics_addr);
    wait_until(
        Duration::from_secs(30),
        || {
            let r = prom.query("up{job=\"vigil\"} == 1");
            Some(()).filter(|_| !r["data"]["result"].as_array().unwrap().is_empty())
        },
        || {
            format!(
                "Prometheus never scraped {metrics_addr}: {}",
                prom.query("up")
            )
        },
    );
    // Traffic across several scrapes, so that rates have two samples.
    for round in 1..4 {
        std::thread::sleep(Duration::from_millis(1200));
        send(round * 100);
    }
    std::thread::sleep(Duration::from_millis(1500));
    for expr in dashboard_queries() {
        let r = prom.query(&expr);
        assert_eq!(r["status"], "success", "{expr}: {r}");
    }
    let rate = prom.query(
        "sum by (source, outcome) (rate(vigil_ingest_source_events_total{source=\"http\"}[1m]))",
    );
    let series = r_series(&rate);
    for outcome in ["accepted", "rejected", "quarantined"] {
        let v = series
            .iter()
            .find(|(labels, _)| labels["outcome"] == outcome)
            .map(|(_, v)| *v)
            .unwrap_or(0.0);
        assert!(v > 0.0, "http {outcome} has a rate: {rate}");
    }
    let size = r_series(&prom.query("vigil_log_size_records"));
    assert!(size[0].1 >= 60.0, "{size:?}");
    drop(server);
}

/// The (labels, value) of each series of an instant query's answer.
fn r_series(answer: &J) -> Vec<(J, f64)> {
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            (s["metric"].clone(), v)
        })
        .collect()
}
