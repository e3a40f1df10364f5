//! Kafka ingestion against a real Kafka-protocol broker (`tansu`, started
//! here on a loopback port with memory storage). Events are produced with
//! rdkafka directly (not through Vigil), the real `vigil serve` consumes
//! them, and receipts are checked over HTTP and with `vigil verify`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use sha2::Digest;

use crate::services::free_port;
use crate::util::*;

/// The tansu binary: $TANSU_BIN, then PATH, then ~/.cargo/bin.
fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain([concat!(env!("HOME"), "/.cargo/bin")])
    {
        let p = Path::new(dir).join("tansu");
        if p.is_file() {
            return p;
        }
    }
    panic!("tansu is not installed: run ./scripts/test.sh, which runs `cargo install tansu --features dynostore`");
}

/// A tansu broker, killed on drop.
struct Broker {
    child: Child,
    brokers: String,
}

impl Broker {
    fn start() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let brokers = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(&brokers).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, brokers }
    }

    fn create_topics(&self, topics: &[(&str, i32)]) {
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
            .collect();
        let res = rt
            .block_on(admin.create_topics(&new, &AdminOptions::new()))
            .unwrap();
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
        }
    }

    fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("acks", "all")
            // One record per batch: tansu 0.6's fetch skips the rest of a
            // batch when a consumer starts inside it (from an offset its
            // group committed mid-batch), so a record batched with others
            // could never reach any consumer after a rebalance or restart.
            // Fixed upstream after 0.6 (tansu commit 87db6ea, "return the
            // batch containing a mid-batch fetch offset").
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .create()
            .unwrap()
    }

    /// Reads a topic from its start until at least `expect_at_least`
    /// messages (or 30 s).
    fn read_all(&self, topic: &str, expect_at_least: usize) -> Vec<Copied> {
        self.read_until(topic, |got| got.len() >= expect_at_least)
    }

    /// Reads a topic from its start until `done` says so (or 30 s).
    fn read_until(&self, topic: &str, done: impl Fn(&[Copied]) -> bool) -> Vec<Copied> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        c.subscribe(&[topic]).unwrap();
        let mut out = Vec::new();
        let start = Instant::now();
        while !done(&out) && start.elapsed() < Duration::from_secs(30) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                                (h.key.to_string(), v.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Copied {
                    at: (m.partition(), m.offset()),
                    key: m.key().unwrap_or(b"").to_vec(),
                    value: m.payload().unwrap_or(b"").to_vec(),
                    headers,
                });
            }
        }
        out
    }

    /// The offset group `group` committed for partition `p` of `topic`.
    fn committed(&self, group: &str, topic: &str, p: i32) -> Option<i64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(topic, p);
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
        match got.find_partition(topic, p)?.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => None,
        }
    }
}

/// One message read back from a topic.
struct Copied {
    /// Partition and offset.
    at: (i32, i64),
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, String)>,
}

impl Copied {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn reason(&self) -> &str {
        self.header("vigil-reason")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn produce(p: &BaseProducer, topic: &str, key: &str, value: &[u8]) {
    loop {
        match p.send(BaseRecord::to(topic).key(key).payload(value)) {
            Ok(()) => return,
            Err((_, _)) => {
                p.poll(Duration::from_millis(10));
            }
        }
    }
}

/// A config for one instance against `broker`.
/// Produces `n` events signed in turn by `signers` (key = agent id), ids
/// `<prefix>-<number>` from `from`; returns (agent, event id) of each.
fn produce_signed(
    producer: &BaseProducer,
    signers: &[Signer],
    prefix: &str,
    from: usize,
    n: usize,
) -> Vec<(String, String)> {
    let mut sent = Vec::with_capacity(n);
    for i in from..from + n {
        let s = &signers[i % signers.len()];
        let id = format!("{prefix}-{i:06}");
        produce(
            producer,
            "agent-events",
            &s.agent,
            &s.sign(&s.event(&id, serde_json::json!({}))),
        );
        sent.push((s.agent.clone(), id));
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    sent
}

/// Detection is off unless `name` starts with `detect`: these tests count
/// receipts exactly, and anomaly events would add to them.
fn config(dir: &Path, name: &str, broker: &Broker) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let detection = name.starts_with("detect");
    let text = format!(
        "[detection]\nenabled = {}\n[kafka]\nbrokers = \"{}\"\ntopic = \"agent-events\"\ngroup = \"vigil-test\"\n[kafka.librdkafka]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\"topic.metadata.refresh.interval.ms\" = \"1000\"\n\"max.poll.interval.ms\" = \"10000\"\n",
        detection,
        broker.brokers
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// Receipts in a server's log beyond the `base` it started with (the log
/// first records its keys, contract section 6a).
fn receipts(server: &Server, base: u64) -> u64 {
    let r = http(server.addr, "GET", "/readyz", &[], b"");
    r.json()["log_size"].as_u64().unwrap_or(0) - base
}

fn signed(signer: &Signer, id: &str, bad: bool) -> Vec<u8> {
    let mut e = signer.sign(&signer.event(
        id,
        serde_json::json!({ "resource": format!("db://t/{id}") }),
    ));
    if bad {
        // Change content after signing: a forgery, receipted as bad_signature.
        let text = String::from_utf8(e).unwrap().replace("db://t/", "db://x/");
        e = text.into_bytes();
    }
    e
}

/// `vigil serve` on `data` with the keys in `jwks` and the config `cfg`.
fn serve(data: &Path, jwks: &Path, cfg: &Path) -> Server {
    Server::start_configured(data, jwks, cfg)
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    wait_until(
        deadline,
        || f().then_some(()),
        || format!("timed out waiting for {what}"),
    );
}

#[test]
fn consumes_rejects_and_survives_kill9_with_one_receipt_each() {
    let broker = Broker::start();
    broker.create_topics(&[("agent-events", 3), ("agent-events.rejected", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let jwks = vector_jwks(dir.path());
    let cfg = config(dir.path(), "a", &broker);
    let data = dir.path().join("a");
    let args = [
        "--keys",
        jwks.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ];
    let hr = Signer::hr();
    let producer = broker.producer();
    let total_good = 3000;
    let mut ids = Vec::new();
    let mut server = Server::start(&data, &args);
    let base = server.log_size();
    let mut kills = 0;
    for i in 0..total_good {
        let id = format!("k-{i:05}");
        let bad = i % 100 == 7;
        produce(&producer, "agent-events", &hr.agent, &signed(&hr, &id, bad));
        ids.push((id, bad));
        if i % 100 == 50 {
            produce(&producer, "agent-events", "garbage", b"{not json at all");
        }
        if i % 1000 == 999 {
            producer.flush(Duration::from_secs(10)).unwrap();
            // Let it consume a bit, then kill -9 mid-stream and restart.
            std::thread::sleep(Duration::from_millis(300 + 200 * kills));
            server.kill9();
            kills += 1;
            server = Server::start(&data, &args);
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let expected = total_good as u64; // every event is receipted once (good or bad_signature)
    wait_for(
        "every message to be receipted",
        Duration::from_secs(90),
        || receipts(&server, base) >= expected,
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        receipts(&server, base),
        expected,
        "exactly one receipt per message: redeliveries must be duplicates"
    );
    for (id, bad) in ids.iter().step_by(37) {
        let r = server.receipt(&hr.agent, id);
        assert_eq!(r.status, 200, "{id}");
        let verdict = &r.json()["receipt"]["verdict"];
        assert_eq!(
            verdict,
            if *bad {
                "rejected:bad_signature"
            } else {
                "accepted"
            },
            "{id}"
        );
    }
    let q = server.req("GET", "/v1/quarantine?limit=1000", None, b"");
    let entries = q.json()["entries"].as_array().unwrap().len();
    assert!(
        entries >= 30,
        "the 30 garbage messages are quarantined ({entries})"
    );
    assert!(
        q.text().contains("kafka:agent-events/"),
        "quarantine names the Kafka source"
    );
    // Copies are at least once (a kill -9 between a copy and its commit
    // copies again): read until 30 of each reason, not 60 in all.
    let count = |got: &[Copied], reason: &str| got.iter().filter(|c| c.reason() == reason).count();
    let rejected = broker.read_until("agent-events.rejected", |got| {
        count(got, "bad_signature") >= 30 && count(got, "unparseable") >= 30
    });
    let bad_sig = rejected
        .iter()
        .filter(|c| c.reason() == "bad_signature")
        .count();
    let unparseable = rejected
        .iter()
        .filter(|c| c.reason() == "unparseable")
        .count();
    assert!(
        bad_sig >= 30 && unparseable >= 30,
        "rejected copies with vigil-reason: {bad_sig} bad_signature, {unparseable} unparseable"
    );
    assert!(
        rejected.iter().any(|c| c.value == b"{not json at all"),
        "the raw value is published"
    );
    let metrics = server.req("GET", "/metrics", None, b"").text();
    assert!(
        metrics.contains("vigil_kafka_consumer_lag_messages"),
        "lag is exported"
    );
    assert_eq!(server.stop(), Some(0));
    assert_log_verifies(&data);
}

#[test]
fn two_instances_share_partitions_and_receipt_each_event_once() {
    let broker = Broker::start();
    broker.create_topics(&[("agent-events", 3), ("agent-events.rejected", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "shared", &broker);
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    // Several agents so that every partition gets traffic (key = agent_id).
    let (signers, jwks_many) = fleet(dir.path(), "agent", 50, 6);
    let args_many = [
        "--keys",
        jwks_many.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ];
    let producer = broker.producer();
    let mut sent: Vec<(String, String)> = Vec::new();
    let mut send =
        |n: usize, from: usize| sent.extend(produce_signed(&producer, &signers, "e", from, n));
    // The consumer's offsets are logged, to explain a failure.
    let debug = || {
        let mut cmd = vigil();
        cmd.env("RUST_LOG", "info,vigil::ingest::kafka=debug");
        cmd
    };
    let a = Server::start_with(debug(), &data_a, &args_many);
    let base_a = a.log_size();
    send(1500, 0);
    let mut b = Server::start_with(debug(), &data_b, &args_many);
    let base_b = b.log_size();
    send(1500, 1500);
    // Keep traffic coming until B has partitions and receipts some of it
    // (A may have consumed everything sent before the rebalance ended).
    let mut next = 3000;
    let started = Instant::now();
    while receipts(&b, base_b) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for both instances to take partitions"
        );
        send(60, next);
        next += 60;
        std::thread::sleep(Duration::from_millis(500));
    }
    send(1500, next);
    // Graceful: B leaves the group after committing what is durable.
    assert_eq!(b.stop(), Some(0));
    send(1500, next + 1500);
    let total = sent.len() as u64;
    // B's log, read by a server on its files without Kafka (and without
    // detection, whose anomaly events would add to it).
    let quiet = dir.path().join("reader.toml");
    std::fs::write(&quiet, "[detection]\nenabled = false\n").unwrap();
    let reader = Server::start(
        &data_b,
        &[
            "--keys",
            jwks_many.to_str().unwrap(),
            "--config",
            quiet.to_str().unwrap(),
        ],
    );
    let b_size = receipts(&reader, base_b);
    let waited = Instant::now();
    while receipts(&a, base_a) + b_size < total {
        if waited.elapsed() > Duration::from_secs(60) {
            panic!(
                "A did not receipt the rest ({} + {b_size} of {total}): {}\nA: {}\nB: {}",
                receipts(&a, base_a),
                diagnose(&broker, &sent, [&a, &reader]),
                a.log_text(),
                b.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(reader);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        receipts(&a, base_a) + b_size,
        total,
        "across a graceful rebalance every event has exactly one receipt\nA: {}\nB: {}",
        a.log_text(),
        b.log_text()
    );
    drop(a);
    let out = run_vigil(&[
        "verify",
        "--data",
        data_a.to_str().unwrap(),
        "--data",
        data_b.to_str().unwrap(),
        "--quiet",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("cross-log duplicates: 0"), "{text}");
}

/// Which sent events are in neither log and which are in both, with where
/// they are in the topic, and the group's committed offsets.
fn diagnose(broker: &Broker, sent: &[(String, String)], logs: [&Server; 2]) -> String {
    let found = |s: &Server, (agent, id): &(String, String)| s.receipt(agent, id).status == 200;
    let lost: Vec<&(String, String)> = sent
        .iter()
        .filter(|e| !found(logs[0], e) && !found(logs[1], e))
        .collect();
    let both = sent
        .iter()
        .filter(|e| found(logs[0], e) && found(logs[1], e))
        .count();
    let topic = broker.read_all("agent-events", sent.len());
    let at: Vec<String> = lost
        .iter()
        .map(|(agent, id)| {
            let needle = format!("\"event_id\":\"{id}\"");
            let where_ = topic
                .iter()
                .find(|c| c.key == agent.as_bytes() && memfind(&c.value, needle.as_bytes()))
                .map(|c| format!("{}@{}", c.at.0, c.at.1));
            format!("{agent}/{id} at {}", where_.as_deref().unwrap_or("?"))
        })
        .collect();
    let committed: Vec<_> = (0..3)
        .map(|p| broker.committed("vigil-test", "agent-events", p))
        .collect();
    let mut spans = std::collections::BTreeMap::<i32, (i64, i64, usize)>::new();
    for c in &topic {
        let e = spans.entry(c.at.0).or_insert((c.at.1, c.at.1, 0));
        e.0 = e.0.min(c.at.1);
        e.1 = e.1.max(c.at.1);
        e.2 += 1;
    }
    format!(
        "in neither log: {} {at:?}; in both: {both}; topic has {} (partition: first, last, count {spans:?}); committed {committed:?}",
        lost.len(),
        topic.len()
    )
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The crash failover runs against librdkafka's mock cluster (real Kafka
/// protocol over loopback TCP, hosted by this test process): tansu 0.6
/// keeps a killed member in its group forever, so no survivor would ever
/// be given the dead instance's partitions there.
#[test]
fn crash_failover_loses_nothing_and_verify_reports_double_receipts() {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("librdkafka's mock cluster starts");
    mock.create_topic("agent-events", 3, 1).unwrap();
    mock.create_topic("agent-events.rejected", 1, 1).unwrap();
    let broker_addr = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let (signers, jwks) = fleet(dir.path(), "bot", 80, 6);
    let cfg = dir.path().join("mock.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"{broker_addr}\"\ntopic = \"agent-events\"\ngroup = \"vigil-failover\"\n[kafka.librdkafka]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n"
        ),
    )
    .unwrap();
    let args = [
        "--keys",
        jwks.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ];
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker_addr)
        .create()
        .unwrap();
    let mut sent = Vec::new();
    let mut send =
        |n: usize, from: usize| sent.extend(produce_signed(&producer, &signers, "f", from, n));
    let mut a = Server::start(&data_a, &args);
    let b = Server::start(&data_b, &args);
    let (base_a, base_b) = (a.log_size(), b.log_size());
    send(2000, 0);
    wait_for("both instances to consume", Duration::from_secs(40), || {
        receipts(&a, base_a) > 0 && receipts(&b, base_b) > 0
    });
    send(1000, 2000);
    // Crash A mid-stream: B must take over its partitions once A's session expires.
    a.kill9();
    send(1000, 3000);
    let sent: Vec<(String, String)> = sent.clone();
    let a_reader = Server::start(&data_a, &["--keys", jwks.to_str().unwrap()]);
    let has_receipt = |agent: &str, id: &str| {
        a_reader.receipt(agent, id).status == 200 || b.receipt(agent, id).status == 200
    };
    let start = Instant::now();
    loop {
        let missing = sent
            .iter()
            .filter(|(agent, id)| !has_receipt(agent, id))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{missing} events have no receipt in either log; B: {}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(a_reader);
    let out = run_vigil(&[
        "verify",
        "--data",
        data_a.to_str().unwrap(),
        "--data",
        data_b.to_str().unwrap(),
        "--quiet",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("cross-log duplicates: "))
        .expect("verify reports cross-log duplicates");
    let reported: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
    let listed = text
        .lines()
        .filter(|l| l.starts_with("cross-log duplicate: "))
        .count();
    assert_eq!(reported, listed, "{text}");
    assert!(
        !text.contains("cross-log conflict"),
        "a redelivered message has the same bytes: {text}"
    );
}

/// Issue 7, finding 4: a rejected message too large for the producer's
/// `message.max.bytes` is copied truncated (with headers saying so) instead
/// of being retried forever; its offset and the ones after it are
/// committed, and SIGTERM stops the server promptly.
#[test]
fn an_oversized_rejected_message_is_copied_truncated_and_never_stalls() {
    let broker = Broker::start();
    broker.create_topics(&[("agent-events", 1), ("agent-events.rejected", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let jwks = vector_jwks(dir.path());
    let cfg = config(dir.path(), "small", &broker);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\"message.max.bytes\" = \"20000\"\n");
    std::fs::write(&cfg, text).unwrap();
    let data = dir.path().join("data");
    let mut server = serve(&data, &jwks, &cfg);
    let hr = Signer::hr();
    let producer = broker.producer();
    let big = vec![b'x'; 30_000];
    produce(
        &producer,
        "agent-events",
        &hr.agent,
        &signed(&hr, "big-0", false),
    );
    produce(&producer, "agent-events", "garbage", &big);
    produce(
        &producer,
        "agent-events",
        &hr.agent,
        &signed(&hr, "big-2", false),
    );
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_for("both events receipted", Duration::from_secs(60), || {
        server.receipt(&hr.agent, "big-2").status == 200
    });
    let copies = broker.read_all("agent-events.rejected", 1);
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    assert_eq!(copy.reason(), "unparseable");
    assert_eq!(copy.key, b"garbage");
    assert_eq!(copy.header("vigil-truncated"), "30000");
    assert_eq!(
        copy.header("vigil-sha256"),
        hex::encode(sha2::Sha256::digest(&big))
    );
    assert!(!copy.value.is_empty() && big.starts_with(&copy.value));
    wait_for("every offset committed", Duration::from_secs(30), || {
        broker.committed("vigil-test", "agent-events", 0) == Some(3)
    });
    let metrics = server.req("GET", "/metrics", None, b"").text();
    assert!(
        metrics.contains("vigil_kafka_rejected_truncated_total 1"),
        "{metrics}"
    );
    let asked = Instant::now();
    assert_eq!(server.stop(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "SIGTERM took {:?}",
        asked.elapsed()
    );
}

/// Produces a burst of 8 forged events of `hr` to `agent-events` (one
/// anomaly); returns the producer.
fn produce_forgeries(broker: &Broker, hr: &Signer) -> BaseProducer {
    let producer = broker.producer();
    for i in 0..8 {
        produce(
            &producer,
            "agent-events",
            &hr.agent,
            &signed(hr, &format!("f-{i}"), true),
        );
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    producer
}

/// Publishing anomalies to Kafka is best effort beside the log: with no
/// `vigil.anomalies` topic (the producer waits 30 s for it, three times),
/// anomalies are still receipted and listed, and SIGTERM is not held up
/// by the publications that cannot finish.
#[test]
fn a_missing_anomaly_topic_holds_up_neither_detection_nor_the_stop() {
    let broker = Broker::start();
    broker.create_topics(&[("agent-events", 1), ("agent-events.rejected", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let jwks = vector_jwks(dir.path());
    let cfg = config(dir.path(), "detect", &broker);
    let mut server = serve(&dir.path().join("a"), &jwks, &cfg);
    let hr = Signer::hr();
    produce_forgeries(&broker, &hr);
    wait_for("the anomaly is listed", Duration::from_secs(30), || {
        let listed = server.req("GET", "/v1/anomalies", None, b"").json();
        listed["anomalies"][0]["kinds"] == serde_json::json!(["forged_events"])
    });
    let asked = Instant::now();
    assert_eq!(server.stop(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "SIGTERM took {:?} (the stop waited for Kafka)",
        asked.elapsed()
    );
}

/// Issue 10: anomalies are published to `vigil.anomalies` (key: the agent)
/// as well as receipted, whatever the source of the events. Issue 11: the
/// forgeries change no posture; an accepted event using an expired lease
/// suspends the agent (the default policy), published to
/// `vigil.enforcement`.
#[test]
fn a_burst_of_forgeries_from_kafka_is_an_anomaly_published_to_vigil_anomalies() {
    let broker = Broker::start();
    broker.create_topics(&[
        ("agent-events", 1),
        ("agent-events.rejected", 1),
        ("vigil.anomalies", 1),
        ("vigil.enforcement", 1),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let jwks = vector_jwks(dir.path());
    let cfg = config(dir.path(), "detect", &broker);
    let data = dir.path().join("a");
    let mut server = serve(&data, &jwks, &cfg);
    let hr = Signer::hr();
    let producer = produce_forgeries(&broker, &hr);
    let published = broker.read_all("vigil.anomalies", 1);
    assert!(!published.is_empty(), "an anomaly is published");
    let a: serde_json::Value = serde_json::from_slice(&published[0].value).unwrap();
    assert_eq!(a["kinds"], serde_json::json!(["forged_events"]), "{a}");
    assert_eq!(a["from_rejected"], true);
    assert_eq!(published[0].key, hr.agent.as_bytes());
    let id = a["anomaly_id"].as_str().unwrap();
    assert_eq!(server.receipt("vigil", id).status, 200, "and receipted");
    let listed = server.req("GET", "/v1/anomalies", None, b"").json();
    assert_eq!(listed["anomalies"][0]["anomaly_id"], id);
    let posture = server.req(
        "GET",
        &format!("/v1/agents/{}/posture", hr.agent),
        None,
        b"",
    );
    assert_eq!(
        posture.json()["state"],
        "active",
        "forgeries changed the posture"
    );

    let expired = hr.event(
        "lease-late",
        serde_json::json!({"lease_id": "aws/creds/hr-assistant/abc",
                           "lease_expires_at": "2026-01-01T00:00:00Z"}),
    );
    produce(&producer, "agent-events", &hr.agent, &hr.sign(&expired));
    producer.flush(Duration::from_secs(10)).unwrap();
    let enforced = broker.read_all("vigil.enforcement", 1);
    assert_eq!(enforced.len(), 1, "one posture change");
    assert_eq!(enforced[0].key, hr.agent.as_bytes());
    let p: serde_json::Value = serde_json::from_slice(&enforced[0].value).unwrap();
    assert_eq!(p["state"], "suspended", "{p}");
    assert!(
        p.get("revocations").is_none(),
        "gateways get the short form: {p}"
    );
    crate::schemas::assert_valid("posture", &[p]);
    assert_eq!(server.stop(), Some(0));
    assert_log_verifies(&data);
}
