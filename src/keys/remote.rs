//! JWKS documents fetched over https (`[keys] jwks = ["https://..."]`).
//!
//! Each URL has a cache file in the data directory,
//! `DIR/jwks-cache/<hash of the URL>.json`, which the registry reads like
//! any JWKS file: a fetched document is checked as the contract says
//! (the whole document refused on any error) and only then written there,
//! durably. So a failed or refused fetch keeps the previous keys, a
//! restart while the source is down starts from the last good document,
//! and the key log records every change the usual way.
//!
//! Refreshes honour `ETag` (`If-None-Match`, a 304 changes nothing) and
//! `Cache-Control: max-age`, bounded to [`MIN_POLL`]..[`MAX_POLL`]; without
//! it, every `[keys] poll_s`. Failures are logged, counted
//! (`vigil_jwks_fetch_failures_total`) and retried at the next poll.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::jwks::JwksError;
use super::parse_jwks;
use crate::respond::http::{HttpClient, HttpError};
use crate::shutdown::Stop;
use crate::store::fsutil::{create_dir_durably, write_file_durably};

/// Why a fetch changed nothing (the previous keys stay in force).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not https.
    #[error("{0} is not https: agent keys are fetched over https only")]
    NotHttps(String),
    /// The request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The source answered another status than 200 or 304.
    #[error("{url} answered {status}")]
    Status {
        /// The source.
        url: String,
        /// Its status.
        status: u16,
    },
    /// The document breaks the contract's rules.
    #[error("{url} refused: {why}")]
    Refused {
        /// The source.
        url: String,
        /// What is wrong with it.
        why: JwksError,
    },
    /// The cache file (or its directory) cannot be written.
    #[error("cannot {what} {path}: {source}")]
    Cache {
        /// "create" or "write".
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Shortest time between two fetches of one source.
pub const MIN_POLL: Duration = Duration::from_secs(5);
/// Longest time between two fetches of one source.
pub const MAX_POLL: Duration = Duration::from_secs(3600);
/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One https source.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Its URL.
    pub url: String,
    /// Its cache file.
    pub cache: PathBuf,
    etag: Option<String>,
    every: Duration,
}

/// What a fetch did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A new document, written to the cache.
    Updated,
    /// The same document (304, or the same bytes).
    Unchanged,
}

/// Whether a source is a URL.
pub fn is_url(source: &str) -> bool {
    source.starts_with("https://") || source.starts_with("http://")
}

impl Remote {
    /// The source at `url`, cached under `data`.
    pub fn new(url: &str, data: &Path, poll: Duration) -> Remote {
        let hash = crate::hexenc::encode(&Sha256::digest(url.as_bytes())[..8]);
        Remote {
            url: url.to_string(),
            cache: data.join("jwks-cache").join(format!("{hash}.json")),
            etag: None,
            every: poll.clamp(MIN_POLL, MAX_POLL),
        }
    }

    /// How long until the next fetch.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Fetches the document; writes it to the cache when it is new and
    /// the contract's checks accept it.
    pub async fn fetch(
        &mut self,
        client: &HttpClient,
        poll: Duration,
    ) -> Result<Fetched, FetchError> {
        if !self.url.starts_with("https://") {
            return Err(FetchError::NotHttps(self.url.clone()));
        }
        let etag = self.etag.clone();
        let mut headers = vec![("accept", "application/json")];
        if let Some(e) = &etag {
            headers.push(("if-none-match", e.as_str()));
        }
        let reply = client.send("GET", &self.url, &headers, Vec::new()).await?;
        self.every = max_age(reply.header("cache-control"))
            .unwrap_or(poll)
            .clamp(MIN_POLL, MAX_POLL);
        if reply.status == 304 {
            return Ok(Fetched::Unchanged);
        }
        if reply.status != 200 {
            return Err(FetchError::Status {
                url: self.url.clone(),
                status: reply.status,
            });
        }
        parse_jwks(&reply.body).map_err(|why| FetchError::Refused {
            url: self.url.clone(),
            why,
        })?;
        self.etag = reply.header("etag").map(String::from);
        if std::fs::read(&self.cache).is_ok_and(|old| old == reply.body) {
            return Ok(Fetched::Unchanged);
        }
        let dir = self.cache.parent().expect("a cache file has a directory");
        create_dir_durably(dir).map_err(|source| FetchError::Cache {
            what: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        write_file_durably(&self.cache, &reply.body, 0o644).map_err(|source| {
            FetchError::Cache {
                what: "write",
                path: self.cache.clone(),
                source,
            }
        })?;
        Ok(Fetched::Updated)
    }
}

/// `max-age` of a Cache-Control header.
fn max_age(header: Option<&str>) -> Option<Duration> {
    header?.split(',').find_map(|d| {
        let v = d.trim().strip_prefix("max-age=")?;
        v.trim().parse().ok().map(Duration::from_secs)
    })
}

/// The client that fetches sources, trusting `ca_file` too if given.
pub fn client(ca_file: Option<&Path>) -> Result<HttpClient, HttpError> {
    HttpClient::trusting(FETCH_TIMEOUT, ca_file)
}

/// Fetches each source at its own pace until `stop`; the key watcher
/// picks up each new cache file.
pub async fn keep_fresh(
    mut remotes: Vec<Remote>,
    client: HttpClient,
    poll: Duration,
    mut stop: Stop,
) {
    let mut due: Vec<tokio::time::Instant> = remotes
        .iter()
        .map(|r| tokio::time::Instant::now() + r.every())
        .collect();
    loop {
        let next = due
            .iter()
            .min()
            .copied()
            .unwrap_or_else(|| tokio::time::Instant::now() + MAX_POLL);
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        for (r, at) in remotes.iter_mut().zip(due.iter_mut()) {
            if *at > tokio::time::Instant::now() {
                continue;
            }
            match r.fetch(&client, poll).await {
                Ok(Fetched::Updated) => tracing::info!(url = %r.url, "Fetched a new JWKS document"),
                Ok(Fetched::Unchanged) => {}
                Err(e) => {
                    crate::telemetry::metrics()
                        .jwks_fetch_failures_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(url = %r.url, "Cannot refresh agent keys: {e}; the previous keys stay in force");
                }
            }
            *at = tokio::time::Instant::now() + r.every();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_and_bounded() {
        assert_eq!(
            max_age(Some("public, max-age=120")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(max_age(Some("no-cache")), None);
        let r = Remote::new(
            "https://idp.example/jwks",
            Path::new("/d"),
            Duration::from_secs(1),
        );
        assert_eq!(r.every(), MIN_POLL);
        assert!(r.cache.starts_with("/d/jwks-cache"));
    }
}
