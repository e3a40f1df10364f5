//! Work that no acknowledgement waits for (saves of derived state, Parquet
//! sealing, building verification tables) runs at a lower CPU priority.
//!
//! On a busy machine the ingest path (HTTP, verification, the log writer)
//! then gets the cores first, and a burst of background work (serialising
//! the detection state of 10,000 agents takes ~100 ms of CPU) does not show
//! as a spike in acknowledgement latency. The work still runs whenever a
//! core has room, and since it gets about a tenth of a core's share when
//! it competes (nice 10), it keeps up under sustained load too.

use std::io;

/// The nice value of background threads (0 is normal, 19 the lowest).
pub const NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`NICE`] (never raises it). On Linux a nice
/// value belongs to the thread, so the rest of the process keeps its
/// priority. Failure only leaves the thread at normal priority.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let tid = Some(rustix::thread::gettid());
        // Never raise it: a process started at a lower priority stays there.
        let nice = rustix::process::getpriority_process(tid).map_or(NICE, |n| n.max(NICE));
        if let Err(e) = rustix::process::setpriority_process(tid, nice) {
            tracing::debug!("Cannot lower the priority of a background thread: {e}");
        }
    }
}

/// Runs `f` on a thread of its own at lower priority ([`lower_this_thread`])
/// and waits for its result without blocking the async runtime.
pub async fn run<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_this_thread();
            let _ = tx.send(f());
        })?;
    rx.await.map_err(|_| {
        io::Error::other(format!(
            "the background thread {name} ended without a result (it panicked; see the log above)"
        ))
    })
}

/// Runs `f`, a CPU-heavy step that an async task cannot put on another
/// thread (a consistent copy of state that keeps changing), without
/// holding up the runtime's other tasks: on a multi-thread runtime they
/// move to another thread meanwhile (`block_in_place`); on a
/// single-threaded one `f` simply runs.
pub fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        let tid = rustix::thread::gettid();
        rustix::process::getpriority_process(Some(tid)).unwrap()
    }

    #[tokio::test]
    async fn background_work_runs_at_lower_priority_and_returns_its_result() {
        let before = nice_of_this_thread();
        let (nice, sum) = run("vigil-test-bg", || (nice_of_this_thread(), 40 + 2))
            .await
            .unwrap();
        assert_eq!(sum, 42);
        assert_eq!(nice, NICE.max(before));
        assert_eq!(nice_of_this_thread(), before, "the caller is untouched");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_step_off_the_runtime_leaves_its_other_tasks_running() {
        let (tx, rx) = std::sync::mpsc::channel();
        let other = tokio::spawn(async move { tx.send(()).unwrap() });
        // The only worker is busy here until the other task has run.
        let waited = off_the_runtime(|| rx.recv_timeout(std::time::Duration::from_secs(5)));
        assert!(waited.is_ok(), "the other task ran meanwhile");
        other.await.unwrap();
        // And where it cannot move them, it still runs.
        assert_eq!(
            std::thread::spawn(|| off_the_runtime(|| 7)).join().unwrap(),
            7
        );
    }

    #[tokio::test]
    async fn a_panic_in_background_work_is_an_error() {
        let err = run("vigil-test-bg", || -> u32 { panic!("on purpose") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("vigil-test-bg"), "{err}");
    }
}
