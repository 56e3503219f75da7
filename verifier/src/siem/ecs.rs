//! State changes as JSON lines in the Elastic Common Schema shape, appended to a file.
//!
//! Each line is one object: `@timestamp`, `message`, `event.*` (kind `alert` for a change that
//! needs a human, else `event`; category `host`; type `change`; action `device-state-changed`;
//! outcome `success` for trusted, `failure` for untrusted, quarantined or timed out, `unknown`
//! otherwise; the reason; the audit sequence), `host.id` (the device), `observer.*` (this
//! verifier) and `trustchain.*` (device id, previous and current state, sequence). Device text
//! is escaped by [`crate::untrusted_text`] before JSON encoding: one change is one line.
//!
//! Each line is written whole and fsync'd before the export moves past it. On start a torn last
//! line (a crash mid-write) is cut off, and the last whole line's sequence counts as delivered,
//! so a crash between the write and the cursor's write repeats nothing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::cursor::Sink;
use super::syslog::timestamp;
use crate::device::DeviceState;
use crate::service::StateChange;
use crate::untrusted_text::escape;
use crate::webhooks::is_alert;

/// The ECS version the lines follow.
pub const ECS_VERSION: &str = "8.11.0";
/// How much of the file's end is read on start to find its last line.
const TAIL: u64 = 64 * 1024;

fn outcome(state: DeviceState) -> &'static str {
    match state {
        DeviceState::Trusted => "success",
        DeviceState::Untrusted | DeviceState::Quarantined | DeviceState::TimedOut => "failure",
        DeviceState::Enrolled | DeviceState::Decommissioned => "unknown",
    }
}

/// One change as one ECS JSON line (with its newline).
pub fn line(change: &StateChange, observer: &str) -> String {
    let device = escape(&change.device_id);
    let reason = escape(&change.reason);
    let value = json!({
        "@timestamp": timestamp(change.at_unix_millis),
        "ecs": { "version": ECS_VERSION },
        "message": format!(
            "device {device} {} -> {}: {reason}",
            change.previous.name(),
            change.current.name()
        ),
        "event": {
            "kind": if is_alert(change) { "alert" } else { "event" },
            "category": ["host"],
            "type": ["change"],
            "action": "device-state-changed",
            "outcome": outcome(change.current),
            "reason": reason,
            "sequence": change.sequence,
            "dataset": "trustchain.state",
            "module": "trustchain",
        },
        "host": { "id": device },
        "observer": {
            "hostname": observer,
            "type": "attestation-verifier",
            "vendor": "TrustChain",
            "product": "trustchain-verifier",
        },
        "trustchain": {
            "device_id": device,
            "previous_state": change.previous.name(),
            "current_state": change.current.name(),
            "sequence": change.sequence,
        },
    });
    let mut text = value.to_string();
    text.push('\n');
    text
}

#[derive(Debug, thiserror::Error)]
#[error("siem.ecs.path {path}: {detail}")]
pub struct EcsSetupError {
    path: PathBuf,
    detail: String,
}

/// The ECS file sink.
#[derive(Debug)]
pub struct EcsSink {
    file: File,
    observer: String,
    delivered: u64,
}

/// Cuts a torn last line off and returns the sequence of the last whole one (0 if none).
fn recover_tail(file: &mut File) -> std::io::Result<u64> {
    let length = file.metadata()?.len();
    let start = length.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    Read::by_ref(file).take(TAIL).read_to_end(&mut tail)?;
    let whole = match tail.iter().rposition(|&b| b == b'\n') {
        Some(end) => end + 1,
        None if start == 0 => 0,
        // A last line longer than the tail read: nothing to cut that can be told apart.
        None => return Ok(0),
    };
    if whole < tail.len() {
        file.set_len(start + whole as u64)?;
        file.sync_data()?;
        tracing::warn!("cut a torn last line off the ECS file");
    }
    let complete = tail.get(..whole).unwrap_or_default();
    let last = complete
        .strip_suffix(b"\n")
        .unwrap_or(complete)
        .rsplit(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    Ok(serde_json::from_slice::<serde_json::Value>(last)
        .ok()
        .and_then(|v| v.get("trustchain")?.get("sequence")?.as_u64())
        .unwrap_or(0))
}

impl EcsSink {
    pub fn open(path: &Path, observer: &str) -> Result<Self, EcsSetupError> {
        let failed = |e: std::io::Error| EcsSetupError {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(failed)?;
        let delivered = recover_tail(&mut file).map_err(failed)?;
        Ok(Self {
            file,
            observer: observer.into(),
            delivered,
        })
    }
}

impl Sink for EcsSink {
    fn name(&self) -> &'static str {
        "ecs"
    }

    fn delivered_up_to(&self) -> u64 {
        self.delivered
    }

    async fn deliver(&mut self, change: &StateChange) -> Result<(), String> {
        // State changes are rare and a line is small: the write and fsync run inline.
        let text = line(change, &self.observer);
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("writing the ECS file: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn change(sequence: u64, device_id: &str) -> StateChange {
        StateChange {
            sequence,
            device_id: device_id.into(),
            previous: DeviceState::Trusted,
            current: DeviceState::Untrusted,
            reason: "boot_log_replay: PCR 4\n{\"forged\":1}".into(),
            result_jwt: String::new(),
            at_unix_millis: 1_764_873_022_123,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_the_ecs_fields() {
        let text = line(&change(7, "gw\"}\n{\"x\":\"1"), "soc-1");
        assert_eq!(text.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["@timestamp"], "2025-12-04T18:30:22.123Z");
        assert_eq!(value["event"]["kind"], "alert");
        assert_eq!(value["event"]["outcome"], "failure");
        assert_eq!(value["event"]["sequence"], 7);
        assert_eq!(value["trustchain"]["device_id"], "gw\"}\\n{\"x\":\"1");
        assert_eq!(value["trustchain"]["previous_state"], "trusted");
        assert_eq!(value["observer"]["hostname"], "soc-1");
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_and_the_last_whole_line_counts_as_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ecs.jsonl");
        let mut sink = EcsSink::open(&path, "soc").unwrap();
        assert_eq!(sink.delivered_up_to(), 0);
        sink.deliver(&change(3, "a")).await.unwrap();
        sink.deliver(&change(9, "b")).await.unwrap();
        drop(sink);
        let mut torn = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        torn.write_all(b"{\"@timestamp\":\"20").unwrap();
        let sink = EcsSink::open(&path, "soc").unwrap();
        assert_eq!(sink.delivered_up_to(), 9);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
    }
}
