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

thread_local! {
    /// The health a panic on this thread fails, with the thread's role.
    static ON_PANIC: std::cell::RefCell<Option<(Health, &'static str)>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes a panic on the calling thread fail `health` before anything is
/// unwound (so that a request whose answer is lost in the unwinding is
/// answered with the reason, not with "shutting down"). `role` names the
/// thread in the reason.
pub fn fail_on_panic(health: &Health, role: &'static str) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            ON_PANIC.with(|h| {
                if let Some((health, role)) = h.borrow().as_ref() {
                    health.fail(format!(
                        "the {role} panicked ({}); vigil stops taking events. This is a bug: \
                         restart vigil (it recovers from what is durable) and report the log",
                        panic_message(info.payload())
                    ));
                }
            });
            previous(info);
        }));
    });
    ON_PANIC.with(|h| *h.borrow_mut() = Some((health.clone(), role)));
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
