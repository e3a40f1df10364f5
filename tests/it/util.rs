//! The test harness: the real `vigil` binary in a temporary directory,
//! spoken to over real HTTP (raw HTTP/1.1 on a socket), files read as an
//! auditor would.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as J;

/// The `vigil` binary under test.
pub fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

/// Runs `vigil` with arguments; returns its output.
pub fn run_vigil(args: &[&str]) -> Output {
    vigil().args(args).output().expect("vigil runs")
}

/// Runs `vigil` with stdin.
pub fn run_vigil_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = vigil()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .expect("stdin takes the input");
    child.wait_with_output().expect("vigil finishes")
}

/// The known-answer vectors (the repository's copy of shared/vectors).
pub fn vectors() -> J {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = std::fs::read(here.join("tests/data/contract-v1.json"))
        .expect("tests/data/contract-v1.json exists");
    if let Ok(shared) = std::fs::read(here.join("../shared/vectors/contract-v1.json")) {
        assert_eq!(
            shared, copy,
            "tests/data/contract-v1.json must be a copy of ../shared/vectors/contract-v1.json"
        );
    }
    serde_json::from_slice(&copy).expect("the vectors are JSON")
}

/// Writes the vectors' JWKS into `dir` and returns its path. The keys'
/// `nbf`/`exp` are dropped: tests sign events dated now with these keys,
/// and must not start failing when the vectors' month is over (validity
/// bounds have their own tests, with keys made for them; no vector verdict
/// depends on them).
pub fn vector_jwks(dir: &Path) -> PathBuf {
    let p = dir.join("vector-keys.jwks.json");
    let mut jwks = vectors()["agent_keys"]["jwks"].clone();
    for k in jwks["keys"].as_array_mut().unwrap() {
        let k = k.as_object_mut().unwrap();
        k.remove("nbf");
        k.remove("exp");
    }
    std::fs::write(&p, serde_json::to_vec(&jwks).unwrap()).unwrap();
    p
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> J {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request (Connection: close) and reads the answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connects to vigil");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reads the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A running `vigil serve`, killed on drop.
pub struct Server {
    /// The process.
    pub child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its admin token (or the configured one).
    pub token: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Its stderr log file.
    pub log: PathBuf,
}

impl Server {
    /// `vigil serve` on `data` with the keys in `jwks` and the
    /// configuration file `cfg`.
    pub fn start_configured(data: &Path, jwks: &Path, cfg: &Path) -> Server {
        Server::start(
            data,
            &[
                "--keys",
                jwks.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ],
        )
    }

    /// Starts `vigil serve --data DATA --listen 127.0.0.1:0` plus `extra`.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_with(vigil(), data, extra)
    }

    /// Starts it from a prepared command (for example under strace).
    pub fn start_with(mut cmd: Command, data: &Path, extra: &[&str]) -> Server {
        std::fs::create_dir_all(data).unwrap();
        let addr_file = data.join("listen.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = data.with_extension(format!("log{}", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("vigil serve starts");
        let mut server = Server {
            child: Some(child),
            addr: "127.0.0.1:1".parse().unwrap(),
            token: String::new(),
            data: data.to_path_buf(),
            log,
        };
        let start = Instant::now();
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                if let Ok(addr) = a.trim().parse() {
                    server.addr = addr;
                    break;
                }
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("vigil serve exited with {status}: {}", server.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "vigil serve did not start: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server.token = std::fs::read_to_string(data.join("admin.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        server
    }

    /// Durable records in its log (from `/readyz`).
    pub fn log_size(&self) -> u64 {
        let r = http(self.addr, "GET", "/readyz", &[], b"");
        r.json()["log_size"]
            .as_u64()
            .expect("/readyz names the log size")
    }

    /// Its peak resident memory so far, in MiB (Linux `VmHWM`).
    pub fn peak_rss_mib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib / 1024
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request with the server's token.
    pub fn req(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Resp {
        let auth = format!("Bearer {}", self.token);
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(ct) = content_type {
            h.push(("Content-Type", ct));
        }
        http(self.addr, method, path, &h, body)
    }

    /// POSTs NDJSON to /v1/events; returns the JSON answer (asserting 200).
    pub fn post_ndjson(&self, lines: &[Vec<u8>]) -> J {
        let mut body = Vec::new();
        for l in lines {
            body.extend_from_slice(l);
            body.push(b'\n');
        }
        let r = self.req("POST", "/v1/events", Some("application/x-ndjson"), &body);
        assert_eq!(r.status, 200, "POST /v1/events: {}", r.text());
        r.json()
    }

    /// GET /v1/receipts/{id}?agent_id=.
    pub fn receipt(&self, agent: &str, event_id: &str) -> Resp {
        self.req(
            "GET",
            &format!(
                "/v1/receipts/{}?agent_id={}",
                encode(event_id),
                encode(agent)
            ),
            None,
            b"",
        )
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        status.code()
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Percent-encodes a path or query component.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Signs events for tests with known seeds (the library is only used to
/// make input; what is checked is what the server answers).
pub struct Signer {
    /// The key.
    pub key: ed25519_dalek::SigningKey,
    /// Its agent.
    pub agent: String,
    /// Its kid.
    pub kid: String,
}

impl Signer {
    /// The vectors' hr-assistant-1 key.
    pub fn hr() -> Signer {
        let seed = hex::decode("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .unwrap();
        Signer {
            key: ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap()),
            agent: "hr-assistant-1".into(),
            kid: "hr-assistant-1#2026-11".into(),
        }
    }

    /// A key from a one-byte seed.
    pub fn new(seed: u8, agent: &str, kid: &str) -> Signer {
        Signer {
            key: ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
            agent: agent.into(),
            kid: kid.into(),
        }
    }

    /// The public JWK with extra members.
    pub fn jwk(&self, extra: J) -> J {
        let mut j = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "kid": self.kid, "agent_id": self.agent,
            "x": vigil::event::signature::b64url(self.key.verifying_key().as_bytes()),
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            j[k] = v;
        }
        j
    }

    /// An event of this agent with `event_id`, now, plus `extra` members.
    pub fn event(&self, event_id: &str, extra: J) -> J {
        let mut e = serde_json::json!({
            "spec": "vigil.event/v1",
            "event_id": event_id,
            "occurred_at": vigil::time::Timestamp::now().to_rfc3339_millis(),
            "agent_id": self.agent,
            "key_id": self.kid,
            "correlation_id": "corr-test",
            "action": "db.query",
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            e[k] = v;
        }
        e
    }

    /// Signs `event` (JCS without signature) and returns its bytes.
    pub fn sign(&self, event: &J) -> Vec<u8> {
        let mut e = event.clone();
        e.as_object_mut().unwrap().remove("signature");
        let text = serde_json::to_vec(&e).unwrap();
        let v = vigil::json::parse(&text).unwrap();
        let mut jcs = Vec::new();
        vigil::json::write_jcs(&v, &mut jcs);
        let sig = vigil::event::signature::sign(&self.key, &jcs);
        e["signature"] = J::String(vigil::event::signature::b64url(&sig));
        serde_json::to_vec(&e).unwrap()
    }
}

/// Asserts that `vigil verify --data DATA` finds the log valid (exit 0).
pub fn assert_log_verifies(data: &Path) {
    let out = run_vigil(&["verify", "--data", data.to_str().unwrap(), "--quiet"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "vigil verify --data {}: {}{}",
        data.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` signers (seeds from `seed`), agents `<prefix>-<i>`, and a JWKS file
/// of their public keys written in `dir`.
pub fn fleet(dir: &Path, prefix: &str, seed: u8, n: u8) -> (Vec<Signer>, PathBuf) {
    let signers: Vec<Signer> = (0..n)
        .map(|i| {
            Signer::new(
                seed + i,
                &format!("{prefix}-{i}"),
                &format!("{prefix}-{i}#1"),
            )
        })
        .collect();
    let jwks = dir.join(format!("{prefix}.jwks.json"));
    write_jwks(
        &jwks,
        &signers
            .iter()
            .map(|s| s.jwk(serde_json::json!({})))
            .collect::<Vec<_>>(),
    );
    (signers, jwks)
}

/// Writes a JWKS file of the given keys.
pub fn write_jwks(path: &Path, keys: &[J]) {
    std::fs::write(
        path,
        serde_json::to_vec_pretty(&serde_json::json!({ "keys": keys })).unwrap(),
    )
    .unwrap();
}

/// Polls `f` every 100 ms until it gives a value; after `limit`, panics
/// with `why()`.
pub fn wait_until<T>(
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
    why: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{}", why());
        std::thread::sleep(Duration::from_millis(100));
    }
}
