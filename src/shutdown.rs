//! The stop signal every background task obeys, and the tasks it stops.
//!
//! The server makes one [`Shutdown`]; each background task takes a
//! [`Stop`] and returns when it fires; [`Shutdown::stop_and_join`] fires it
//! and waits for every registered task (bounded), so that nothing keeps
//! running, retrying or holding the log after `vigil serve` says it
//! stopped.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A receiver of the stop signal.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Returns once the stop signal has fired (at once if it already has).
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Whether the stop signal has fired (for loops on blocking threads).
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// A signal that never fires (for tools that run until done).
    pub fn never() -> Stop {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Stop(rx)
    }
}

/// The sender of the stop signal and the tasks that obey it.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }
}

impl Shutdown {
    /// A receiver for a task.
    pub fn stop(&self) -> Stop {
        Stop(self.tx.subscribe())
    }

    /// Spawns a named task that must return once its [`Stop`] fires.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Fires the stop signal.
    pub fn signal(&self) {
        let _ = self.tx.send(true);
    }

    /// Fires the stop signal and waits for every task, at most `limit` in
    /// all; a task still running then is aborted and named in the log.
    pub async fn stop_and_join(self, limit: Duration) {
        self.signal();
        let deadline = tokio::time::Instant::now() + limit;
        for (name, mut task) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(
                    task = name,
                    "A background task did not stop in time; aborting it"
                );
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_task_stops_on_the_signal() {
        let mut s = Shutdown::default();
        for _ in 0..3 {
            let mut stop = s.stop();
            s.spawn("test", async move { stop.stopped().await });
        }
        tokio::time::timeout(
            Duration::from_secs(5),
            s.stop_and_join(Duration::from_secs(5)),
        )
        .await
        .expect("joined");
    }
}
