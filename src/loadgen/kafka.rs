//! `vigil bench kafka`: Vigil's consume-verify-receipt rate end to end.
//!
//! It starts the Kafka-protocol broker `tansu` on a loopback port (memory
//! storage), creates a 3-partition topic, signs a corpus and produces it
//! before timing starts, measures Vigil's HTTP ingest rate on an equal
//! corpus in the same run, then starts `vigil serve --kafka-brokers` and
//! times how fast it makes the whole topic durable, sampling consumer lag
//! every 100 ms, and reports the CPU used by Vigil and by the broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{batches, cpu_seconds, signed_corpus, start_server, throughput};
use crate::client::Client;

/// `vigil bench kafka` options.
#[derive(Args, Debug, Clone)]
pub struct KafkaBenchArgs {
    /// Events produced to the topic (and sent over HTTP for comparison).
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Distinct simulated agents (the message key is the agent id).
    #[arg(long, default_value_t = 64)]
    pub agents: usize,
    /// The tansu binary (default: tansu on PATH, then ~/.cargo/bin/tansu).
    #[arg(long)]
    pub tansu: Option<PathBuf>,
}

fn find_tansu(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path
        .split(':')
        .map(String::from)
        .chain([format!("{home}/.cargo/bin")])
    {
        let p = Path::new(&dir).join("tansu");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("tansu is not installed: cargo install tansu --features dynostore (or pass --tansu PATH)")
}

/// The broker, killed when dropped.
struct Broker {
    child: Child,
    /// `host:port` to bootstrap from.
    address: String,
}

impl Broker {
    /// Starts tansu on a free loopback port with memory storage and waits
    /// until it listens.
    fn start(tansu: &Path) -> anyhow::Result<Broker> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu)
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
            .context("cannot start tansu")?;
        let broker = Broker {
            child,
            address: format!("127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(&broker.address).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("tansu did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }

    /// The topics Vigil reads and writes: events in 3 partitions.
    fn create_topics(&self, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .create()?;
        let topics = [
            NewTopic::new("agent-events", 3, TopicReplication::Fixed(1)),
            NewTopic::new("agent-events.rejected", 1, TopicReplication::Fixed(1)),
            NewTopic::new(
                crate::detect::stage::ANOMALY_TOPIC,
                1,
                TopicReplication::Fixed(1),
            ),
        ];
        for r in rt.block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
            r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
        }
        Ok(())
    }

    /// Produces `events` keyed by agent, and waits until all are acknowledged.
    fn produce(&self, events: &[Vec<u8>], agents: usize) -> anyhow::Result<()> {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "1000000")
            // Record batches of up to 8 MB: with librdkafka's default 1 MB
            // (~1,700 events a batch), consuming from tansu stayed near 39k
            // events/s whatever Vigil did (6 batches in flight, 8 MiB
            // partition fetches); with 8 MB it followed HTTP (README).
            .set("batch.size", "8000000")
            .set("batch.num.messages", "100000")
            .set("message.max.bytes", "9000000")
            .create()?;
        for (i, event) in events.iter().enumerate() {
            let key = format!("bench-agent-{}", i % agents);
            let mut record = BaseRecord::to("agent-events").key(&key).payload(event);
            while let Err((_, r)) = producer.send(record) {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
        }
        producer.flush(Duration::from_secs(120))?;
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How Vigil consumed the topic, from its start.
struct Consumption {
    /// Until the first receipt (the group join).
    first: Duration,
    /// Until the last.
    done: Duration,
    /// (seconds, messages not yet durable), every 100 ms.
    lags: Vec<(f64, u64)>,
}

/// Polls `/readyz` every 100 ms until the log holds `events` records more
/// than at the first poll (the server logs its keys in force at start).
async fn watch_consumption(
    addr: std::net::SocketAddr,
    token: &str,
    events: u64,
) -> anyhow::Result<Consumption> {
    let started = Instant::now();
    let mut client = Client::connect(addr, token).await?;
    let mut first = None;
    let mut lags = Vec::new();
    let mut at_start = None;
    loop {
        let (_, body) = client
            .send("GET", "/readyz", None, bytes::Bytes::new())
            .await?;
        let log_size = serde_json::from_slice::<serde_json::Value>(&body)?["log_size"]
            .as_u64()
            .unwrap_or(0);
        let size = log_size - *at_start.get_or_insert(log_size);
        if size > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        lags.push((started.elapsed().as_secs_f64(), events - size.min(events)));
        if size >= events {
            return Ok(Consumption {
                first: first.unwrap_or_default(),
                done: started.elapsed(),
                lags,
            });
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("Vigil did not consume the topic within 600 s (log size {size})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the benchmark and prints its report.
pub fn run(args: KafkaBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("vigil-bench-kafka-")
        .tempdir()?;
    let broker = Broker::start(&find_tansu(args.tansu.as_deref())?)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    broker.create_topics(&rt)?;
    let (jwks, corpus) = signed_corpus(tmp.path(), args.agents, args.events * 2)?;
    let (for_kafka, for_http) = corpus.split_at(args.events);
    let produce_start = Instant::now();
    broker.produce(for_kafka, args.agents)?;
    println!(
        "produced {} events to a 3-partition topic in {:.1} s, before any timing",
        args.events,
        produce_start.elapsed().as_secs_f64()
    );

    // Vigil's HTTP ingest rate, in the same run, on an equal corpus.
    let http = start_server(&tmp.path().join("http"), &jwks, &[])?;
    let (http_elapsed, _) = rt.block_on(throughput(
        http.addr,
        &http.token,
        batches(for_http, 500),
        8,
        500,
    ))?;
    drop(http);
    let http_rate = args.events as f64 / http_elapsed;
    println!("HTTP ingest (same run): {http_rate:.0} events/s");

    let broker_pid = broker.child.id().to_string();
    let broker_cpu0 = cpu_seconds(&broker_pid);
    let kafka_dir = tmp.path().join("kafka");
    let vigil = start_server(&kafka_dir, &jwks, &["--kafka-brokers", &broker.address])?;
    let vigil_pid = vigil.child.id().to_string();
    let vigil_cpu0 = cpu_seconds(&vigil_pid);
    let c = rt.block_on(watch_consumption(
        vigil.addr,
        &vigil.token,
        args.events as u64,
    ))?;
    let vigil_cpu = cpu_seconds(&vigil_pid) - vigil_cpu0;
    let broker_cpu = cpu_seconds(&broker_pid) - broker_cpu0;
    drop(vigil);
    let kafka_rate = args.events as f64 / (c.done - c.first).as_secs_f64().max(1e-9);
    println!();
    println!(
        "## kafka: {} events, 3 partitions, one Vigil instance",
        args.events
    );
    println!(
        "consume-verify-receipt: {kafka_rate:.0} events/s from the first receipt to the last ({:.2} of the HTTP rate); \
         group join took {:.1} s",
        kafka_rate / http_rate,
        c.first.as_secs_f64()
    );
    let samples: Vec<String> = c
        .lags
        .iter()
        .step_by((c.lags.len() / 10).max(1))
        .map(|(t, l)| format!("{t:.1}s:{l}"))
        .collect();
    println!(
        "consumer lag (messages not yet durable) over time: {}",
        samples.join(" ")
    );
    println!(
        "CPU: vigil {vigil_cpu:.1} s, broker {broker_cpu:.1} s, over {:.1} s",
        c.done.as_secs_f64()
    );
    Ok(())
}
