//! Group commit: concurrent writers that need their writes durable share one flush.

use std::sync::Mutex;

use crate::storage::error::StorageError;

/// Leader-based group commit. A caller that needs its writes durable takes a ticket; if no
/// flush is running it leads one that covers every ticket taken so far, otherwise it waits for
/// the running flush and then, if that flush began before its ticket, for the next. Under load
/// one fsync serves many appraisals instead of each paying for its own.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    /// (tickets taken, highest ticket made durable, a flush is running)
    state: Mutex<(u64, u64, bool)>,
    done: std::sync::Condvar,
}

impl GroupCommit {
    pub(super) fn run(
        &self,
        flush: impl Fn() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        let ticket = state.0;
        loop {
            if state.1 >= ticket {
                return Ok(());
            }
            if state.2 {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.2 = true;
            let covers = state.0;
            drop(state);
            let result = flush();
            state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.2 = false;
            if result.is_ok() {
                state.1 = state.1.max(covers);
            }
            self.done.notify_all();
            // A failed flush fails its leader (and closes the store); waiters then lead their
            // own attempt, which fails on the closed store.
            result?;
        }
    }
}
