//! Group commit for async callers: appraisals ask for their writes to be durable and await the
//! answer; one thread makes them durable, one flush for every request that arrived before it
//! started.
//!
//! Why a thread of its own: a flush blocks. Called on the async workers it stalls every stream
//! the worker serves (2 workers on a 2-core machine); called through `spawn_blocking` it parks
//! one pool thread per waiting appraisal (hundreds under load, each with its own allocator
//! arena: the verifier's memory grew 5x in the load generator's run). Here waiting costs a
//! watch-channel receiver, and flushing one thread.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::Storage;

/// What the committer has resolved. Each flush attempt covers the tickets after the previous
/// attempt's up to its own target, so a ticket succeeded unless a failed attempt's range holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Progress {
    /// Every ticket at or below this has been attempted.
    resolved: u64,
    /// The ranges (after, up to] of recent failed attempts (rare: a full disk).
    failures: Arc<Vec<(u64, u64)>>,
}

/// Failed ranges kept: a waiter older than this many failures was answered long before.
const FAILURES_KEPT: usize = 64;

/// How long the committer lets requests gather before a flush. A flush has a fixed cost
/// (sled hands the write to its I/O thread and back: three thread switches and the syscalls),
/// and with appraisals spread evenly over their interval most flushes covered one or two; this
/// wait makes each cover every appraisal of the last 2 ms, for 2 ms of latency.
const GATHER: Duration = Duration::from_millis(2);

/// A batch this large is flushed at once instead of waiting out [`GATHER`]: at thousands of
/// appraisals a second it fills in well under 2 ms, and the rest of the wait was only latency
/// (the load generator at 5,000 appraisals/s: the gather was most of the median round trip).
const ENOUGH: u64 = 8;

#[derive(Debug)]
struct Inner {
    /// Tickets handed out.
    requested: Mutex<u64>,
    wake: Condvar,
    progress: tokio::sync::watch::Sender<Progress>,
}

/// Hands out durability to async callers (see the module comment).
#[derive(Debug, Clone)]
pub struct Committer {
    inner: Arc<Inner>,
}

/// The commit failed: the state database refused the flush (it closes itself; see `sled_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the state database could not make the writes durable")]
pub struct CommitFailed;

impl Committer {
    /// Starts the committing thread; it ends when the last `Committer` is dropped. It holds the
    /// storage weakly: a verifier that shuts down releases its database at once (a restart on
    /// the same directory must not find it still locked).
    pub fn start(storage: &Arc<dyn Storage>) -> std::io::Result<Self> {
        let storage = Arc::downgrade(storage);
        let (progress, _) = tokio::sync::watch::channel(Progress::default());
        let inner = Arc::new(Inner {
            requested: Mutex::new(0),
            wake: Condvar::new(),
            progress,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("trustchain-commit".into())
            .spawn(move || run(weak, storage))?;
        Ok(Self { inner })
    }

    /// Waits until every write this task made before the call is durable.
    pub async fn durable(&self) -> Result<(), CommitFailed> {
        let ticket = {
            let mut requested = self
                .inner
                .requested
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *requested += 1;
            *requested
        };
        // The committer waits for a first request, then for a batch of `ENOUGH` (or `GATHER`):
        // those two wake it; waking it for every request would cost a thread switch each.
        // A wake-up missed through a stale `resolved` only lets `GATHER` run out.
        let pending = ticket.saturating_sub(self.inner.progress.borrow().resolved);
        if pending == 1 || pending == ENOUGH {
            self.inner.wake.notify_one();
        }
        let mut progress = self.inner.progress.subscribe();
        let seen = progress
            .wait_for(|p| p.resolved >= ticket)
            .await
            .map_err(|_| CommitFailed)?;
        if seen
            .failures
            .iter()
            .any(|(after, upto)| ticket > *after && ticket <= *upto)
        {
            Err(CommitFailed)
        } else {
            Ok(())
        }
    }
}

fn run(inner: Weak<Inner>, storage: Weak<dyn Storage>) {
    let mut resolved = 0u64;
    let mut failures: Vec<(u64, u64)> = Vec::new();
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let target = {
            let requested = inner.requested.lock().unwrap_or_else(|p| p.into_inner());
            // Wake at least every second to notice that the service is gone.
            let (requested, _) = inner
                .wake
                .wait_timeout_while(requested, Duration::from_secs(1), |r| *r <= resolved)
                .unwrap_or_else(|p| p.into_inner());
            *requested
        };
        if target <= resolved {
            continue;
        }
        let target = {
            let requested = inner.requested.lock().unwrap_or_else(|p| p.into_inner());
            let (requested, _) = inner
                .wake
                .wait_timeout_while(requested, GATHER, |r| *r - resolved < ENOUGH)
                .unwrap_or_else(|p| p.into_inner());
            *requested
        };
        let Some(storage) = storage.upgrade() else {
            return;
        };
        let committed = storage.commit();
        drop(storage);
        if let Err(error) = committed {
            tracing::error!(%error, "commit failed; the verdicts waiting on it are withheld");
            failures.push((resolved, target));
            if failures.len() > FAILURES_KEPT {
                failures.remove(0);
            }
        }
        resolved = target;
        inner.progress.send_replace(Progress {
            resolved,
            failures: Arc::new(failures.clone()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_flushes_and_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> =
            Arc::new(crate::storage::SledStorage::open(dir.path()).unwrap());
        let committer = Committer::start(&storage).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let committer = committer.clone();
            tasks.push(tokio::spawn(async move { committer.durable().await }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()));
        }
    }
}
