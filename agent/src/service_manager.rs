//! The agent under systemd (`agent/systemd/trustchain-agent.service`, `Type=notify`):
//!
//! - `READY=1` once the TPM has answered and the first attempt to reach the verifier has an
//!   outcome (the stream is open, or the agent is backing off). A gateway whose TPM never
//!   answers stays "activating", with `STATUS=` saying why: it proves nothing yet.
//! - `STATUS=<state>` at each state change (what `systemctl status` shows).
//! - `WATCHDOG=1` at half of `WATCHDOG_USEC` from a task on the agent's own runtime, so a
//!   wedged reactor stops the pings and systemd restarts the agent.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset (the agent run by hand or by tests);
//! a failed notification is logged at debug level and never stops attestation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

static READY: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "service manager notification not sent");
    }
}

/// Tells systemd the agent's state, `status` as one line; `reached` is true once the TPM has
/// answered and an attempt to reach the verifier has an outcome, and the first such call also
/// carries `READY=1`. (The caller, [`crate::status::Reporter`], names the states; this module
/// imports nothing of the agent's, so it stays below `status`.)
pub fn state_changed(status: &str, reached: bool) {
    // systemd keeps one line; a reason is the agent's own text but may quote a peer's error.
    let status: String = status
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if reached && !READY.swap(true, Ordering::SeqCst) {
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    } else {
        send(&[NotifyState::Status(&status)]);
    }
}

/// The ping period systemd asked for (half of `WATCHDOG_USEC`), if it asked.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Pings systemd's watchdog at half its timeout, forever, when it asked for pings.
pub fn spawn_watchdog() {
    if let Some(period) = watchdog_period().filter(|p| !p.is_zero()) {
        tracing::info!(?period, "systemd watchdog enabled");
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                send(&[NotifyState::Watchdog]);
            }
        });
    }
}
