//! The API's accept loop: HTTP/1.1 connections with a bound on how many
//! are open, a deadline for each request head (idle keep-alive included),
//! and a bounded drain when the server stops.
//!
//! `axum::serve` has none of these bounds: ten thousand clients that
//! connect and send nothing would each hold a task and a socket forever,
//! and one open event stream would hold a graceful stop forever.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The bounds of the API listener (`[server]` settings).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, and may
    /// stay idle between requests.
    pub header_timeout: Duration,
    /// How long a stop waits for requests in flight before it closes
    /// the connections still open.
    pub drain_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// What a connection over the limit is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 121\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"the server has max_connections open; close idle connections or retry shortly\"}";

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting, lets requests in flight finish (at most
/// `limits.drain_timeout`) and closes what is still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: the process is out of descriptors.
                    // Back off instead of spinning; open connections finish.
                    tracing::warn!("cannot accept a connection: {e}; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let metrics = crate::telemetry::metrics();
        metrics.http_connections_open.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    metrics.http_header_timeouts_total.fetch_add(1, Relaxed);
                }
            }
            metrics.http_connections_open.fetch_sub(1, Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(
                open = crate::telemetry::metrics().http_connections_open.load(Relaxed),
                "Requests still in flight after drain_timeout_s ({} s); closing their connections",
                limits.drain_timeout.as_secs()
            );
        }
    }
    Ok(())
}

/// Answers a connection over the limit with 503 and closes it. The
/// answer fits the empty send buffer of a new socket, so the write does
/// not wait (tokio's `try_write` would: it knows no readiness yet).
fn refuse(stream: TcpStream) {
    use std::io::Write as _;
    crate::telemetry::metrics()
        .http_connections_refused_total
        .fetch_add(1, Relaxed);
    if let Ok(mut s) = stream.into_std() {
        let _ = s.write(TOO_MANY);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_says_its_length() {
        let text = std::str::from_utf8(super::TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let j: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(j["error"], "too_many_connections");
    }
}
