//! What the agent is doing, told to its operator two ways:
//!
//! - one log line at each change, `state: <name>` with the details as fields (the next retry
//!   delay when it waits);
//! - `status.json` in the state directory, rewritten atomically at each change, when the
//!   verifier's verdict changes, and at least once a minute while verdicts arrive, which
//!   `trustchain-agent status` prints and which a fleet's monitoring can read without talking to
//!   the agent (a `last_verdict.at_unix` older than a few intervals means trouble).
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> starting
//!     starting --> tpm_unavailable: TPM does not answer
//!     tpm_unavailable --> starting: TPM answers again
//!     starting --> enrolling: no saved enrollment
//!     starting --> attesting: enrolled
//!     enrolling --> backing_off: verifier unreachable or refusal
//!     enrolling --> tpm_unavailable: TPM error
//!     enrolling --> attesting: certificates saved
//!     attesting --> backing_off: stream lost or verifier gone
//!     attesting --> tpm_unavailable: quote failed
//!     backing_off --> enrolling: not enrolled yet
//!     backing_off --> attesting: stream open again
//! ```
//!
//! Under systemd each change is also sent as `STATUS=` (and the first past the TPM and the first
//! connection attempt as `READY=1`, see [`crate::service_manager`]).
//!
//! The status file is advisory: it is written without fsync (a gateway's flash should not pay
//! for it at every reconnect), and a missing or stale file never changes what the agent does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The status file's name inside the agent's state directory.
pub const STATUS_FILE: &str = "status.json";

/// The agent's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentState {
    /// Opening the TPM.
    Starting,
    /// Presenting the TPM's identity and activating the verifier's credential.
    Enrolling,
    /// The attestation stream is open; the verifier drives it with challenges.
    Attesting,
    /// Waiting before the next attempt to reach the verifier.
    BackingOff {
        reason: String,
        retry_in_ms: u64,
        consecutive_failures: u32,
    },
    /// The TPM does not answer (device gone, resource manager down, swtpm killed); the agent
    /// keeps probing it and does not talk to the verifier meanwhile.
    TpmUnavailable {
        reason: String,
        retry_in_ms: u64,
        consecutive_failures: u32,
    },
}

impl AgentState {
    /// The state's name as the log and the status file spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Enrolling => "enrolling",
            Self::Attesting => "attesting",
            Self::BackingOff { .. } => "backing_off",
            Self::TpmUnavailable { .. } => "tpm_unavailable",
        }
    }
}

/// The last verdict the verifier sent on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastVerdict {
    /// `trustchain.v1.TrustState` as the verifier named it (e.g. `TRUST_STATE_TRUSTED`).
    pub state: String,
    pub at_unix: i64,
}

/// The content of `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(flatten)]
    pub state: AgentState,
    /// When the agent entered this state.
    pub since_unix: i64,
    pub pid: u32,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub last_verdict: Option<LastVerdict>,
    /// Challenges answered since the process started.
    pub challenges_answered: u64,
    /// Attestation streams opened since the process started (1 plus every reconnection).
    pub streams_opened: u64,
    /// The verifier replica (its configured URL) of the current or, while the agent waits, the
    /// last attestation stream.
    #[serde(default)]
    pub verifier: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a status file: {detail}")]
    Parse { path: PathBuf, detail: String },
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

/// How often an unchanged status is rewritten anyway (fresh `last_verdict`, counters).
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Keeps the status and reports every change.
#[derive(Debug)]
pub struct Reporter {
    path: PathBuf,
    status: Status,
    /// When the file was last written (Unix seconds).
    written_unix: i64,
}

impl Reporter {
    /// A reporter writing `status.json` into `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        let mut reporter = Self {
            path: state_dir.join(STATUS_FILE),
            status: Status {
                state: AgentState::Starting,
                since_unix: now_unix(),
                pid: std::process::id(),
                device_id: None,
                last_verdict: None,
                challenges_answered: 0,
                streams_opened: 0,
                verifier: None,
            },
            written_unix: 0,
        };
        reporter.announce();
        reporter
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Moves to `state`; logs and writes the file when it differs from the current one.
    pub fn set(&mut self, state: AgentState) {
        if self.status.state == state {
            return;
        }
        if self.status.state.name() != state.name() {
            self.status.since_unix = now_unix();
        }
        self.status.state = state;
        self.announce();
    }

    pub fn backing_off(&mut self, reason: String, retry_in: Duration, consecutive_failures: u32) {
        self.set(AgentState::BackingOff {
            reason,
            retry_in_ms: millis(retry_in),
            consecutive_failures,
        });
    }

    pub fn tpm_unavailable(
        &mut self,
        reason: String,
        retry_in: Duration,
        consecutive_failures: u32,
    ) {
        self.set(AgentState::TpmUnavailable {
            reason,
            retry_in_ms: millis(retry_in),
            consecutive_failures,
        });
    }

    pub fn set_device(&mut self, device_id: &str) {
        if self.status.device_id.as_deref() != Some(device_id) {
            self.status.device_id = Some(device_id.to_string());
            self.write();
        }
    }

    /// A new attestation stream is open, to the replica at `verifier`.
    pub fn stream_opened(&mut self, verifier: &str) {
        self.status.streams_opened += 1;
        if self.status.verifier.as_deref() != Some(verifier) {
            self.status.verifier = Some(verifier.to_string());
        }
        self.set(AgentState::Attesting);
        // `set` does not write when the state stays `attesting`; the counter should still show.
        self.write();
    }

    pub fn challenge_answered(&mut self) {
        self.status.challenges_answered += 1;
    }

    /// Records the verifier's verdict. The file is rewritten when the verdict's state changes,
    /// and otherwise at most every [`REFRESH_EVERY`], so a healthy agent shows it is alive
    /// without writing to a gateway's flash at every interval.
    pub fn verdict(&mut self, state: String) {
        let now = now_unix();
        let changed = self
            .status
            .last_verdict
            .as_ref()
            .is_none_or(|last| last.state != state);
        let due = now.saturating_sub(self.written_unix) >= REFRESH_EVERY.as_secs() as i64;
        self.status.last_verdict = Some(LastVerdict {
            state,
            at_unix: now,
        });
        if changed || due {
            self.write();
        }
    }

    fn announce(&mut self) {
        match &self.status.state {
            AgentState::BackingOff {
                reason,
                retry_in_ms,
                consecutive_failures,
            } => tracing::warn!(
                state = "backing_off",
                retry_in_ms,
                consecutive_failures,
                %reason,
                "state: backing off"
            ),
            AgentState::TpmUnavailable {
                reason,
                retry_in_ms,
                consecutive_failures,
            } => tracing::warn!(
                state = "tpm_unavailable",
                retry_in_ms,
                consecutive_failures,
                %reason,
                "state: TPM unavailable"
            ),
            other => tracing::info!(
                state = other.name(),
                device = self.status.device_id.as_deref().unwrap_or(""),
                "state: {}",
                other.name()
            ),
        }
        let line = match &self.status.state {
            AgentState::BackingOff { reason, .. } => format!("backing off: {reason}"),
            AgentState::TpmUnavailable { reason, .. } => format!("TPM unavailable: {reason}"),
            other => other.name().to_string(),
        };
        // Attesting or backing off: the TPM answered and the first attempt to reach the
        // verifier has an outcome (enrolling has not finished one yet).
        let reached = matches!(
            self.status.state,
            AgentState::Attesting | AgentState::BackingOff { .. }
        );
        crate::service_manager::state_changed(&line, reached);
        self.write();
    }

    /// Writes the file atomically (temporary file, then rename). Failure is logged, never fatal:
    /// the status file must not be a way to stop attestation.
    fn write(&mut self) {
        self.written_unix = now_unix();
        let Ok(text) = serde_json::to_vec_pretty(&self.status) else {
            return;
        };
        let tmp = self.path.with_extension("json.tmp");
        let outcome = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(error) = outcome {
            tracing::debug!(%error, path = %self.path.display(), "status file not written");
        }
    }
}

/// Reads a status file (for `trustchain-agent status` and tests).
pub fn read(state_dir: &Path) -> Result<Status, StatusError> {
    let path = state_dir.join(STATUS_FILE);
    // The file is the agent's own, a few hundred bytes; a larger one is not ours.
    let text = std::fs::read(&path).map_err(|source| StatusError::Read {
        path: path.clone(),
        source,
    })?;
    if text.len() > 64 * 1024 {
        return Err(StatusError::Parse {
            path,
            detail: "larger than 64 KiB".into(),
        });
    }
    serde_json::from_slice(&text).map_err(|e| StatusError::Parse {
        path,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut reporter = Reporter::new(dir.path());
        assert_eq!(read(dir.path()).unwrap().state, AgentState::Starting);
        reporter.backing_off("verifier unreachable".into(), Duration::from_millis(750), 2);
        let status = read(dir.path()).unwrap();
        assert_eq!(status.state.name(), "backing_off");
        assert_eq!(
            status.state,
            AgentState::BackingOff {
                reason: "verifier unreachable".into(),
                retry_in_ms: 750,
                consecutive_failures: 2
            }
        );
        reporter.stream_opened("https://verifier-b:8443");
        reporter.verdict("TRUST_STATE_TRUSTED".into());
        let status = read(dir.path()).unwrap();
        assert_eq!(status.state, AgentState::Attesting);
        assert_eq!(status.streams_opened, 1);
        assert_eq!(status.verifier.as_deref(), Some("https://verifier-b:8443"));
        assert_eq!(
            status.last_verdict.map(|v| v.state).as_deref(),
            Some("TRUST_STATE_TRUSTED")
        );
        let json = std::fs::read_to_string(dir.path().join(STATUS_FILE)).unwrap();
        assert!(json.contains("\"state\": \"attesting\""), "{json}");
    }
}
