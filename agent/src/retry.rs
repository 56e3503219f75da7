//! Retrying, agent side: the reconnection backoff (exponential, full jitter) that attestation,
//! enrollment and the command share, the wait before the next verifier replica, the wait for a
//! TPM that stopped answering, and the one way TPM work leaves the async reactor. Below `attest`
//! and `enroll`, which both use it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::replicas::{NextAttempt, Replica, Replicas};
use crate::status::Reporter;
use crate::tpm::{Tpm, TpmError};

/// First reconnection delay (before jitter).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Cap on the reconnection delay (before jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Ceiling of the wait before trying the next verifier replica within a round
/// ([`crate::replicas::Rotation`]): short, but jittered, so a fleet whose replica died does not
/// land on the next one in the same millisecond.
pub const QUICK_RETRY: Duration = Duration::from_millis(250);

/// The wait before trying the next replica: uniform in [0, [`QUICK_RETRY`]].
pub fn quick_retry_delay() -> Duration {
    QUICK_RETRY.mul_f64(rand::random::<f64>())
}

/// Exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Self {
            next: INITIAL_BACKOFF,
        }
    }

    pub fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }

    /// The next delay: uniform in [next/2, next], then next doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(rand::random::<f64>())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// After `failed` did not serve the agent (for `reason`), waits before the attempt `next` and
/// reports the wait: the backoff when a whole round of replicas has failed, otherwise a quick
/// jittered pause before the next replica.
pub async fn wait_for_replica(
    replicas: &Replicas,
    failed: &Replica,
    next: NextAttempt,
    backoff: &mut Backoff,
    failures: u32,
    reason: String,
    status: &mut Reporter,
) {
    let delay = if next.back_off {
        backoff.next_delay()
    } else {
        quick_retry_delay()
    };
    // With one replica the reason reads as it always did; with several it says whose it is.
    let reason = if replicas.count() > 1 {
        let to = replicas.at(next.replica);
        tracing::info!(
            from = failed.url(),
            to = to.url(),
            replica = next.replica + 1,
            of = replicas.count(),
            back_off = next.back_off,
            "moving to the next verifier replica"
        );
        format!("{}: {reason}", failed.url())
    } else {
        reason
    };
    status.backing_off(reason, delay, failures);
    tokio::time::sleep(delay).await;
}

/// Runs `work` on the TPM off the async reactor. The Mutex serialises TPM use within the agent:
/// one TPM, one command stream.
pub async fn with_tpm<T, R>(
    tpm: &Arc<Mutex<T>>,
    work: impl FnOnce(&mut T) -> Result<R, TpmError> + Send + 'static,
) -> Result<R, TpmError>
where
    T: Tpm + 'static,
    R: Send + 'static,
{
    let tpm = tpm.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = tpm.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut guard)
    })
    .await
    .map_err(|_| TpmError::Invalid("TPM task panicked".into()))?
}

/// Probes the TPM with backoff until it answers.
pub async fn wait_for_tpm<T: Tpm + 'static>(
    tpm: &Arc<Mutex<T>>,
    backoff: &mut Backoff,
    failures: &mut u32,
    status: &mut Reporter,
    mut reason: String,
) {
    loop {
        let delay = backoff.next_delay();
        status.tpm_unavailable(reason.clone(), delay, *failures);
        tokio::time::sleep(delay).await;
        // A read-only capability query: it proves the TPM answers without creating anything.
        match with_tpm(tpm, |t| t.is_software()).await {
            Ok(_) => {
                tracing::info!("the TPM answers again");
                return;
            }
            Err(error) => {
                reason = error.to_string();
                *failures = failures.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut backoff = Backoff::new();
        let mut previous_ceiling = Duration::ZERO;
        for _ in 0..20 {
            let ceiling = backoff.next;
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} within [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            assert!(ceiling >= previous_ceiling);
            previous_ceiling = ceiling;
        }
        assert_eq!(backoff.next, MAX_BACKOFF);
        backoff.reset();
        assert_eq!(backoff.next, INITIAL_BACKOFF);
    }

    #[test]
    fn the_quick_retry_stays_under_its_ceiling() {
        for _ in 0..100 {
            assert!(quick_retry_delay() <= QUICK_RETRY);
        }
    }
}
