//! Whether the pipeline can still take events: set once, for good, when
//! the log cannot be written (an fdatasync failed) or a pipeline thread
//! panicked. Everything that answers reads it (`/readyz`, ingest), and the
//! server waits on it to stop the process with a non-zero status: a failed
//! pipeline is not repaired in place, it is restarted and recovers from
//! what is durable.

use std::sync::Arc;

use tokio::sync::watch;

/// The pipeline's health, shared by its threads and the server.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<watch::Sender<Option<String>>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Arc::new(watch::channel(None).0),
        }
    }
}

impl Health {
    /// Marks the pipeline failed (the first reason wins), logs it, and
    /// returns the reason in force.
    pub fn fail(&self, why: String) -> String {
        let mut first = false;
        self.state.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(why.clone());
                first = true;
            }
            first
        });
        if first {
            tracing::error!("{why}");
        }
        self.failure().unwrap_or(why)
    }

    /// Why the pipeline failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.state.borrow().clone()
    }

    /// Waits until the pipeline fails; returns why.
    pub async fn failed(&self) -> String {
        let mut rx = self.state.subscribe();
        if rx.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
        self.failure().unwrap_or_default()
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_waiters_wake() {
        let h = Health::default();
        assert!(h.failure().is_none());
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.failed().await }
        });
        assert_eq!(h.fail("disk".into()), "disk");
        assert_eq!(h.fail("later".into()), "disk");
        assert_eq!(waiter.await.unwrap(), "disk");
    }
}
