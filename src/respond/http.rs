//! A small HTTP/1.1 client for the identity services a response talks
//! to (the OpenID provider, Vault): one connection per request, TLS by
//! OpenSSL with the system's roots and host-name checks for `https`, and
//! a time limit on the whole exchange.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslMethod};

/// Largest answer read, in bytes.
const MAX_ANSWER: usize = 1 << 20;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not one this client can use.
    #[error("{0:?} is not an http:// or https:// URL with a host")]
    BadUrl(String),
    /// No connection.
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate, host name, protocol).
    #[error("TLS with {host} failed: {why}")]
    Tls {
        /// The host.
        host: String,
        /// What OpenSSL said.
        why: String,
    },
    /// The exchange took too long.
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    /// The HTTP exchange failed.
    #[error("HTTP exchange with {0} failed: {1}")]
    Exchange(String, String),
    /// The answer is larger than this client reads.
    #[error("the answer from {0} is larger than {MAX_ANSWER} bytes")]
    TooLarge(String),
}

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`?
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, from `/`.
    pub path: String,
}

impl Url {
    /// Parses a URL.
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::BadUrl(s.to_string());
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        Ok(Url {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port` as a Host header says it.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The client.
#[derive(Clone)]
pub struct HttpClient {
    timeout: Duration,
    tls: SslConnector,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpClient {
    /// A client whose exchanges take at most `timeout`.
    pub fn new(timeout: Duration) -> Result<HttpClient, HttpError> {
        HttpClient::trusting(timeout, None)
    }

    /// A client that also trusts the CA certificates in `ca_file` (PEM).
    pub fn trusting(
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<HttpClient, HttpError> {
        let setup = |why: String| HttpError::Tls {
            host: "(setup)".into(),
            why,
        };
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(|e| setup(e.to_string()))?;
        if let Some(ca) = ca_file {
            builder
                .set_ca_file(ca)
                .map_err(|e| setup(format!("cannot load CA file {}: {e}", ca.display())))?;
        }
        Ok(HttpClient {
            timeout,
            tls: builder.build(),
        })
    }

    /// Sends one request and reads the answer.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, HttpError> {
        let parsed = Url::parse(url)?;
        let exchange = self.exchange(&parsed, method, headers, body);
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout(url.to_string(), self.timeout))?
    }

    async fn exchange(
        &self,
        url: &Url,
        method: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, HttpError> {
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|source| HttpError::Connect {
                host: url.host.clone(),
                port: url.port,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::builder()
            .method(method)
            .uri(url.path.as_str())
            .header("host", url.authority())
            .header("user-agent", concat!("vigil/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let shown = url.authority();
        let exchange_error =
            |e: &dyn std::fmt::Display| HttpError::Exchange(shown.clone(), e.to_string());
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| exchange_error(&e))?;
        if url.tls {
            let stream = self.tls_stream(url, tcp).await?;
            round_trip(TokioIo::new(stream), req, &shown).await
        } else {
            round_trip(TokioIo::new(tcp), req, &shown).await
        }
    }

    async fn tls_stream(
        &self,
        url: &Url,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_openssl::SslStream<tokio::net::TcpStream>, HttpError> {
        let tls_error = |why: String| HttpError::Tls {
            host: url.host.clone(),
            why,
        };
        let ssl = self
            .tls
            .configure()
            .and_then(|c| c.into_ssl(&url.host))
            .map_err(|e| tls_error(e.to_string()))?;
        let mut stream =
            tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| tls_error(e.to_string()))?;
        std::pin::Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|e| tls_error(e.to_string()))?;
        Ok(stream)
    }
}

async fn round_trip<S>(
    io: TokioIo<S>,
    req: Request<Full<Bytes>>,
    shown: &str,
) -> Result<Reply, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fail = |e: &dyn std::fmt::Display| HttpError::Exchange(shown.to_string(), e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
    let body = limited
        .collect()
        .await
        .map_err(|_| HttpError::TooLarge(shown.to_string()))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// One value encoded as `application/x-www-form-urlencoded` says.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `application/x-www-form-urlencoded` for these pairs.
pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports() {
        let u = Url::parse("https://idp.example/oauth/token?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "idp.example", 443, "/oauth/token?x=1")
        );
        let u = Url::parse("http://127.0.0.1:8200").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 8200, "/"));
        let u = Url::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        for bad in ["ftp://x", "http://", "http://user@host/", "http://h:99999/"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            form(&[("login_hint", "alice@example.com"), ("m", "a b/c")]),
            b"login_hint=alice%40example.com&m=a+b%2Fc".to_vec()
        );
    }
}
