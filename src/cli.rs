//! The command line (contract section 8): `serve`, `demo`, `keygen`,
//! `sign`, `verify`, `verify-proof`, `quarantine`, `bench ingest`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::event::signature::{b64url, sign};
use crate::event::EVENT_SPEC;
use crate::json::{self, Value};
use crate::keys::private::PrivateJwk;
use crate::log::note::NoteVerifier;
use crate::log::proof::verify_proof;
use crate::time::Timestamp;
use crate::verify::{verify_log, LogReport, VerifyError, VerifyOptions, VerifyReport};

/// Vigil: signed-event ingest, hash-chained receipts, offline verification.
#[derive(Parser, Debug)]
#[command(name = "vigil", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: HTTP and Splunk HEC ingest, receipts, checkpoints.
    Serve(ServeArgs),
    /// Check that a server answers (a container health check without
    /// curl): exit 0 when `--url` answers 2xx within 5 s, else 1.
    Health {
        /// The URL to ask.
        #[arg(long, default_value = "http://127.0.0.1:7070/readyz")]
        url: String,
    },
    /// Run the pipeline on a local data directory with simulated agents.
    Demo(crate::demo::DemoArgs),
    /// Make an agent key: writes the private JWK (0600), prints the public JWK.
    Keygen {
        /// The agent the key signs for.
        #[arg(long)]
        agent: String,
        /// The key id (default `<agent>#<YYYY-MM>`).
        #[arg(long)]
        kid: Option<String>,
        /// Where to write the private key (default `<agent>.key.jwk`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign an event read on stdin; prints the signed event.
    Sign {
        /// The agent's private key (JWK with d).
        #[arg(long)]
        key: PathBuf,
    },
    /// Re-check logs offline; exit 0 valid, 1 invalid, 2 error. Given several
    /// logs (instances of one consumer group), also reports events that more
    /// than one of them receipted.
    Verify {
        /// A data directory (repeatable).
        #[arg(long, required_unless_present = "bundle")]
        data: Vec<PathBuf>,
        /// An export bundle (from `vigil export`) to check instead of a log.
        #[arg(long, conflicts_with = "data")]
        bundle: Option<PathBuf>,
        /// Agent keys you trust (JWKS, or JSON lines of JWKs), holding from
        /// the start of the log, beside the key history the log records.
        #[arg(long)]
        keys: Vec<PathBuf>,
        /// A checkpoint you trust: the log must be at least this long.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Pin the log's verifier key, or a file holding it (repeatable,
        /// for a log whose key was rotated; else the keys in the directory).
        #[arg(long)]
        vkey: Vec<String>,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
        /// Also print the key history the log records, one key event a
        /// line.
        #[arg(long)]
        key_history: bool,
    },
    /// Check one receipt proof (c2sp.org/tlog-proof@v1) with a verifier key.
    VerifyProof {
        /// The proof file.
        file: PathBuf,
        /// The verifier key, or a file holding it.
        #[arg(long)]
        vkey: String,
        /// The event's bytes: its hash must be the receipt's event_hash.
        #[arg(long)]
        event: Option<PathBuf>,
    },
    /// List quarantined input (newest first) as JSON lines.
    Quarantine {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Write a time range of the log as a bundle auditors check offline
    /// with `vigil verify --bundle` (events and receipts as NDJSON and
    /// Parquet, the checkpoint, the proof, the keys, a manifest).
    Export {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Records received at or after this time (`YYYY-MM-DDTHH:MM:SSZ`;
        /// default: the log's start).
        #[arg(long)]
        from: Option<String>,
        /// Records received before this time (default: up to the latest
        /// checkpoint).
        #[arg(long)]
        to: Option<String>,
        /// The bundle's directory (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Also write the records as OCSF 1.3.0 (API Activity and Detection
        /// Finding, NDJSON).
        #[arg(long)]
        ocsf: bool,
    },
    /// Read-only SQL over a data directory's audit store (tables events,
    /// receipts, anomalies, responses, quarantine); exit 0 answered, 1 the
    /// log is damaged, 2 a bad query or an error.
    Query(QueryArgs),
    /// Reports for auditors and owners.
    Report {
        /// Which report.
        #[command(subcommand)]
        what: ReportCommand,
    },
    /// Administer agents and keys on a running server (admin token):
    /// list, register, add-key, revoke, decommission, suspend, restore,
    /// attest.
    Agents(crate::agents::AgentsArgs),
    /// Write a signed simulated fleet over days, with labelled attacks.
    Simulate(crate::simulate::SimulateArgs),
    /// Replay simulations through a real server and score detection
    /// against the labels, beside a simple baseline.
    Eval(crate::simulate::eval::EvalArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

/// How `vigil query` prints its answer.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum QueryFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Drive POST /v1/events with signed NDJSON batches and report rates.
    Ingest(crate::loadgen::LoadArgs),
    /// Produce a signed corpus to a local tansu broker, then time Vigil consuming it.
    Kafka(crate::loadgen::kafka::KafkaBenchArgs),
    /// Grow a log to 1M and 10M receipts; measure start-up, memory, proofs and verify.
    Log(crate::loadgen::log::LogBenchArgs),
    /// Time anomaly -> posture change and -> CIBA request under background load.
    Response(crate::loadgen::response::ResponseBenchArgs),
    /// Build a Parquet audit store of N receipts and time typical SQL questions.
    Query(crate::loadgen::query::QueryBenchArgs),
}

/// `vigil serve` flags (they override the configuration file).
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (default ./vigil-data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:7070; port 0 picks one, written to DIR/listen.addr).
    #[arg(long)]
    pub listen: Option<String>,
    /// Agent keys: a JWKS file (repeatable).
    #[arg(long)]
    pub keys: Vec<String>,
    /// The log's origin (fixed at creation).
    #[arg(long)]
    pub origin: Option<String>,
    /// The log key as a private JWK file (a mounted secret, say). Without
    /// it: `$VIGIL_LOG_KEY` (the JWK itself), else `[server] log_key_file`,
    /// else `DIR/log.key`, made on first start.
    #[arg(long, env = "VIGIL_LOG_KEY_FILE")]
    pub log_key: Option<PathBuf>,
    /// During a log key rotation: the previous log key (private JWK file),
    /// which co-signs every checkpoint until it is removed (repeatable).
    #[arg(long)]
    pub log_key_previous: Vec<PathBuf>,
    /// Kafka brokers.
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// Kafka topic.
    #[arg(long)]
    pub kafka_topic: Option<String>,
    /// Kafka consumer group.
    #[arg(long)]
    pub kafka_group: Option<String>,
}

/// An error with the exit status it maps to.
#[derive(Debug)]
pub struct Exit {
    /// 1 = not valid, 2 = usage or operating-system error.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl From<anyhow::Error> for Exit {
    fn from(e: anyhow::Error) -> Exit {
        Exit {
            code: 2,
            message: format!("{e:#}"),
        }
    }
}

/// Parses arguments, runs the command, returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vigil: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Exit> {
    match cli.command {
        Command::Serve(args) => serve_command(args),
        Command::Demo(args) => crate::demo::run(args).map_err(Exit::from),
        Command::Keygen { agent, kid, out } => keygen(&agent, kid, out).map_err(Exit::from),
        Command::Sign { key } => sign_command(&key).map_err(Exit::from),
        Command::Verify {
            bundle: Some(dir),
            vkey,
            ..
        } => verify_bundle_command(&dir, &vkey),
        Command::Verify {
            data,
            keys,
            checkpoint,
            vkey,
            quiet,
            key_history,
            bundle: None,
        } => verify_command(data, keys, checkpoint, vkey, quiet, key_history),
        Command::Export {
            data,
            from,
            to,
            out,
            ocsf,
        } => export_command(data, from.as_deref(), to.as_deref(), out, ocsf),
        Command::VerifyProof { file, vkey, event } => {
            verify_proof_command(&file, &vkey, event.as_deref())
        }
        Command::Query(args) => query_command(&args),
        Command::Agents(args) => crate::agents::run(args),
        Command::Report { what } => report_command(what),
        Command::Health { url } => health_command(&url),
        Command::Quarantine { data, limit } => {
            let (entries, dropped) =
                crate::store::quarantine::list(&data.join("quarantine"), limit)
                    .with_context(|| format!("cannot read the quarantine in {}", data.display()))?;
            for e in entries {
                println!(
                    "{}",
                    serde_json::to_string(&e).expect("an entry serialises")
                );
            }
            eprintln!("vigil: {dropped} older entries were dropped to keep the quarantine's bound");
            Ok(())
        }
        Command::Simulate(args) => crate::simulate::run(args).map_err(Exit::from),
        Command::Eval(args) => crate::simulate::eval::run(args).map_err(Exit::from),
        Command::Bench {
            what: BenchCommand::Ingest(args),
        } => crate::loadgen::run(args).map_err(Exit::from),
        Command::Bench {
            what: BenchCommand::Kafka(args),
        } => crate::loadgen::kafka::run(args).map_err(Exit::from),
        Command::Bench {
            what: BenchCommand::Log(args),
        } => crate::loadgen::log::run(args).map_err(Exit::from),
        Command::Bench {
            what: BenchCommand::Response(args),
        } => crate::loadgen::response::run(args).map_err(Exit::from),
        Command::Bench {
            what: BenchCommand::Query(args),
        } => crate::loadgen::query::run_bench(args).map_err(Exit::from),
    }
}

fn verify_command(
    data: Vec<PathBuf>,
    keys: Vec<PathBuf>,
    checkpoint: Option<PathBuf>,
    vkey: Vec<String>,
    quiet: bool,
    key_history: bool,
) -> Result<(), Exit> {
    if data.len() > 1 && (checkpoint.is_some() || !vkey.is_empty()) {
        return Err(Exit {
            code: 2,
            message:
                "--checkpoint and --vkey apply to one log; verify logs one at a time to use them"
                    .into(),
        });
    }
    let vkeys = vkey
        .iter()
        .map(|v| read_vkey(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut reports = Vec::new();
    for dir in &data {
        let opts = VerifyOptions {
            data: dir.clone(),
            keys: keys.clone(),
            checkpoint: checkpoint.clone(),
            vkeys: vkeys.clone(),
            progress: !quiet,
            collect_accepted: data.len() > 1,
        };
        let report = verify_log(&opts).map_err(|e| match e {
            e @ VerifyError::Invalid { .. } => Exit {
                code: 1,
                message: format!("{}: {e}", dir.display()),
            },
            VerifyError::Usage(message) => Exit { code: 2, message },
        })?;
        print_report(&dir.display().to_string(), &report);
        if key_history {
            for line in &report.key_history {
                println!("key history: {line}");
            }
        }
        reports.push(LogReport {
            log: dir.display().to_string(),
            report,
        });
    }
    if reports.len() > 1 {
        print_cross_log_duplicates(&reports);
    }
    Ok(())
}

fn export_command(
    data: PathBuf,
    from: Option<&str>,
    to: Option<&str>,
    out: PathBuf,
    ocsf: bool,
) -> Result<(), Exit> {
    let time = |name: &str, t: Option<&str>| -> Result<Option<Timestamp>, Exit> {
        t.map(|t| {
            Timestamp::parse_event_time(t).ok_or_else(|| Exit {
                code: 2,
                message: format!("--{name} {t:?} is not a time like 2026-11-30T10:00:00Z"),
            })
        })
        .transpose()
    };
    let opts = crate::audit::export::ExportOptions {
        data,
        from: time("from", from)?,
        to: time("to", to)?,
        out,
        ocsf,
    };
    let done = crate::audit::export::export(&opts).map_err(|e| Exit {
        code: 2,
        message: e.to_string(),
    })?;
    println!(
        "exported records {}..{} (of a log checkpointed at {}) to {}; check it with: vigil verify --bundle {}",
        done.first,
        done.end,
        done.tree_size,
        opts.out.display(),
        opts.out.display()
    );
    Ok(())
}

fn verify_bundle_command(dir: &Path, vkey: &[String]) -> Result<(), Exit> {
    let vkeys = vkey
        .iter()
        .map(|v| read_vkey(v))
        .collect::<Result<Vec<_>, _>>()?;
    let r = crate::verify::bundle::verify_bundle(dir, &vkeys).map_err(|e| match e {
        e @ VerifyError::Invalid { .. } => Exit {
            code: 1,
            message: format!("{}: {e}", dir.display()),
        },
        VerifyError::Usage(message) => Exit { code: 2, message },
    })?;
    println!(
        "bundle valid: records {}..{} of {} ({} signatures checked), proven against its checkpoint of size {} signed with {}",
        r.first,
        r.end,
        r.origin,
        r.signatures,
        r.tree_size,
        if r.pinned { "the key you pinned" } else { "the bundle's own key (pin the operator's with --vkey)" }
    );
    Ok(())
}

/// `vigil report` reports.
#[derive(clap::Subcommand, Debug)]
enum ReportCommand {
    /// Access certification: per owner, each agent with its role, keys
    /// and their ages, actions taken, principals served, leases used,
    /// anomalies and findings; written as access-report.json, .csv and
    /// .html in `--out`.
    Access {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Where its sealed Parquet files are, if not in `DIR/parquet`.
        #[arg(long)]
        store: Option<String>,
        /// Actions that occurred at or after this time (YYYY-MM-DDTHH:MM:SSZ).
        #[arg(long)]
        from: String,
        /// Actions that occurred before this time.
        #[arg(long)]
        to: String,
        /// Only this owner's agents.
        #[arg(long)]
        owner: Option<String>,
        /// The directory to write the report to (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

fn report_command(what: ReportCommand) -> Result<(), Exit> {
    let ReportCommand::Access {
        data,
        store,
        from,
        to,
        owner,
        out,
    } = what;
    let usage = |message: String| Exit { code: 2, message };
    let scope =
        crate::audit::report::Scope::new(&from, &to, owner).map_err(|e| usage(e.to_string()))?;
    let (limits, rt) = offline_queries(usize::MAX)?;
    let answers = rt
        .block_on(crate::audit::query_dir_many(
            &data,
            store.as_deref(),
            &scope.questions(),
            limits,
        ))
        .map_err(|e| usage(e.to_string()))?;
    let report = crate::audit::report::assemble(&scope, &answers, crate::time::Timestamp::now());
    std::fs::create_dir_all(&out)
        .map_err(|e| usage(format!("cannot create {}: {e}", out.display())))?;
    let files = [
        (
            "access-report.json",
            serde_json::to_string_pretty(&report).expect("JSON serialises"),
        ),
        ("access-report.csv", crate::audit::report::csv(&report)),
        ("access-report.html", crate::audit::report::html(&report)),
    ];
    for (name, text) in files {
        let path = out.join(name);
        crate::store::fsutil::write_file_durably(&path, text.as_bytes(), 0o644)
            .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
    }
    println!(
        "access report for {} to {}: {}",
        scope.from,
        scope.to,
        out.display()
    );
    Ok(())
}

/// `vigil query` options.
#[derive(clap::Args, Debug)]
struct QueryArgs {
    /// The data directory.
    #[arg(long)]
    data: PathBuf,
    /// Where its sealed segments' Parquet files are, if not in its
    /// `parquet/` folder: `s3://bucket/prefix` (endpoint and credentials
    /// from the `AWS_*` environment variables), as the server's
    /// `[query] store`.
    #[arg(long)]
    store: Option<String>,
    /// `table` (aligned text) or `json` (`{"columns","rows"}`).
    #[arg(long, default_value = "table")]
    format: QueryFormat,
    /// Most rows in the answer.
    #[arg(long, default_value_t = 1_000_000)]
    max_rows: usize,
    /// The SQL query.
    sql: String,
}

/// The limits and the runtime of offline queries (`vigil query`,
/// `vigil report`): an hour, 2 GiB, two threads.
fn offline_queries(
    max_rows: usize,
) -> Result<(crate::audit::query::Limits, tokio::runtime::Runtime), Exit> {
    let limits = crate::audit::query::Limits {
        max_rows,
        timeout: std::time::Duration::from_secs(3600),
        memory_bytes: 2 << 30,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the query runtime: {e}"))?;
    Ok((limits, rt))
}

fn query_command(args: &QueryArgs) -> Result<(), Exit> {
    use crate::audit::{query::QueryError, AuditError};
    let (limits, rt) = offline_queries(args.max_rows)?;
    let answer = rt
        .block_on(crate::audit::query_dir(
            &args.data,
            args.store.as_deref(),
            &args.sql,
            limits,
        ))
        .map_err(|e| Exit {
            code: if matches!(e, QueryError::Store(AuditError::Record { .. })) {
                1
            } else {
                2
            },
            message: e.to_string(),
        })?;
    let text = match args.format {
        QueryFormat::Json => serde_json::to_string(&answer).expect("an answer serialises"),
        QueryFormat::Table => crate::audit::query::table_text(&answer),
    };
    println!("{text}");
    Ok(())
}

fn print_report(dir: &str, r: &VerifyReport) {
    for w in &r.warnings {
        eprintln!("vigil verify: note: {dir}: {w}");
    }
    println!(
        "OK: {dir}: {} receipts ({} accepted, {} rejected), hash chain intact, {} checkpoints verified (latest size {}), \
         {} key events, {} tiles and {} index entries checked, root {}",
        r.records,
        r.accepted,
        r.rejected,
        r.checkpoints,
        r.latest_size,
        r.key_events,
        r.tiles_checked,
        r.index_checked,
        crate::hexenc::encode(r.root)
    );
    if !r.anchored {
        println!(
            "NOTE: internal consistency only: no trusted checkpoint (--checkpoint) and no pinned log key (--vkey) \
             were given, so this checked the log against the keys in its own directory; whoever holds {dir}/log.key \
             could have rewritten it whole. Pass a checkpoint you saved earlier, or the verifier key you got from the operator."
        );
    }
}

fn print_cross_log_duplicates(reports: &[LogReport]) {
    let dups = crate::verify::cross_log_duplicates(reports);
    for d in &dups {
        let places: Vec<String> = d
            .places
            .iter()
            .map(|p| {
                format!(
                    "{} index {} (event_hash {})",
                    p.log, p.accepted.index, p.accepted.event_hash
                )
            })
            .collect();
        let kind = if d.same_event() {
            "cross-log duplicate"
        } else {
            "cross-log conflict (different content)"
        };
        println!(
            "{kind}: agent {:?} event {:?} accepted in {}",
            d.agent_id,
            d.event_id,
            places.join(" and ")
        );
    }
    println!("cross-log duplicates: {}", dups.len());
}

/// A verifier key given on the command line, or read from the file named.
fn read_vkey(vkey: &str) -> Result<String, Exit> {
    if Path::new(vkey).is_file() {
        let text = std::fs::read_to_string(vkey).map_err(|e| Exit {
            code: 2,
            message: format!("cannot read {vkey}: {e}"),
        })?;
        Ok(text.lines().next().unwrap_or("").trim().to_string())
    } else {
        Ok(vkey.to_string())
    }
}

fn verify_proof_command(file: &Path, vkey: &str, event: Option<&Path>) -> Result<(), Exit> {
    let usage = |m: String| Exit {
        code: 2,
        message: m,
    };
    let vkey_text = read_vkey(vkey)?;
    let verifier =
        NoteVerifier::parse(&vkey_text).map_err(|e| usage(format!("bad --vkey: {e}")))?;
    let text =
        std::fs::read(file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let event_bytes = match event {
        Some(p) => {
            Some(std::fs::read(p).map_err(|e| usage(format!("cannot read {}: {e}", p.display())))?)
        }
        None => None,
    };
    let text = String::from_utf8(text).map_err(|_| Exit {
        code: 1,
        message: "INVALID: the proof is not UTF-8 text".into(),
    })?;
    match verify_proof(&text, &verifier, event_bytes.as_deref()) {
        Ok(v) => {
            println!(
                "OK: receipt {} of log {} ({} for event {:?} of agent {:?}) is in the checkpoint of size {}",
                v.body.index, v.body.log, v.body.verdict, v.body.event_id, v.body.agent_id, v.checkpoint.size
            );
            Ok(())
        }
        Err(e) => Err(Exit {
            code: 1,
            message: format!("INVALID: {e}"),
        }),
    }
}

fn keygen(agent: &str, kid: Option<String>, out: Option<PathBuf>) -> anyhow::Result<()> {
    if agent.is_empty() || agent == crate::event::PIPELINE_AGENT {
        bail!("--agent must name an agent other than \"vigil\" (reserved for the pipeline)");
    }
    let kid =
        kid.unwrap_or_else(|| format!("{agent}#{}", &Timestamp::now().to_rfc3339_millis()[..7]));
    let out = out.unwrap_or_else(|| PathBuf::from(format!("{agent}.key.jwk")));
    let key = crate::event::signature::generate_key().context("cannot generate a key")?;
    let jwk = PrivateJwk {
        kid,
        agent_id: Some(agent.to_string()),
        key,
    };
    crate::store::fsutil::create_new_durably(&out, jwk.to_json().as_bytes(), 0o600)
        .with_context(|| format!("cannot write {} (it must not exist yet)", out.display()))?;
    eprintln!(
        "vigil: wrote the private key to {} (mode 0600; keep it secret)",
        out.display()
    );
    println!("{}", serde_json::to_string(&jwk.public_jwk())?);
    Ok(())
}

fn sign_command(key_path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read(key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
    let key = PrivateJwk::parse(&text)
        .map_err(|e| anyhow!("{} is not a private key: {e}", key_path.display()))?;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let value = json::parse(&input).map_err(|e| anyhow!("stdin is not an I-JSON event: {e}"))?;
    let Some(mut members) = value.into_members() else {
        bail!("stdin must hold one JSON object (the event)")
    };
    if members.iter().any(|(k, _)| k == "signature") {
        bail!("the event already has a signature; remove it to sign again");
    }
    let has = |members: &[(String, Value)], k: &str| members.iter().any(|(m, _)| m == k);
    if let Some(agent) = &key.agent_id {
        match members.iter().find(|(k, _)| k == "agent_id") {
            Some((_, Value::String(a))) if a != agent => {
                bail!("the event's agent_id {a:?} is not the key's agent {agent:?}")
            }
            Some(_) => {}
            None => members.push(("agent_id".into(), Value::String(agent.clone()))),
        }
    }
    let defaults = [
        ("spec", EVENT_SPEC.to_string()),
        ("event_id", uuid::Uuid::now_v7().to_string()),
        ("occurred_at", Timestamp::now().to_rfc3339_millis()),
        ("key_id", key.kid.clone()),
    ];
    for (k, v) in defaults {
        if !has(&members, k) {
            members.push((k.into(), Value::String(v)));
        }
    }
    let canonical = json::Canonical::of_object(&members, "signature");
    members.push((
        "signature".into(),
        Value::String(b64url(&sign(&key.key, &canonical.without))),
    ));
    let mut out = Vec::new();
    json::write_jcs(&Value::Object(members), &mut out);
    out.push(b'\n');
    std::io::stdout().write_all(&out)?;
    Ok(())
}

fn health_command(url: &str) -> Result<(), Exit> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = crate::respond::http::HttpClient::new(std::time::Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let message = match rt.block_on(client.send("GET", url, &[], Vec::new())) {
        Ok(r) if (200..300).contains(&r.status) => return Ok(()),
        Ok(r) => format!(
            "{url} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        ),
        Err(e) => format!("{url}: {e}"),
    };
    Err(Exit { code: 1, message })
}

fn serve_command(args: ServeArgs) -> Result<(), Exit> {
    crate::telemetry::init_logging("info");
    let settings = crate::server::serve_settings(&args)?;
    crate::server::raise_file_limit(settings.config.server.max_connections);
    settings
        .config
        .telemetry
        .start()
        .map_err(|e| anyhow::anyhow!("[telemetry] {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = rt.block_on(async move {
        let server = crate::server::Server::start(settings).await?;
        server.run_until_signal().await
    });
    crate::telemetry::trace::shutdown();
    served?;
    Ok(())
}
