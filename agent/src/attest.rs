//! Continuous attestation, agent side: one long-lived stream to the verifier, which drives it with
//! challenges; the agent answers each with a fresh quote, its boot log when asked (and always after
//! a TPM reset), and only the IMA entries after the offset the verifier asks from.
//!
//! The agent keeps no state a restart would lose: the verifier tracks offsets and history. When the
//! verifier is away it tries the next configured replica, and reconnects with exponential backoff
//! and jitter once all have failed; when the TPM is away it says so and waits for it (see
//! [`run_reporting`]).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trustchain_proto::evidence_messages;
use trustchain_proto::v1::attestation_client::AttestationClient;
use trustchain_proto::v1::{
    AgentMessage, Challenge, Evidence, Hello, PcrValue, TrustState, agent_message, verifier_message,
};

use crate::bound_channel::ChannelBinding;
use crate::client::{ClientError, connect_bound};
use crate::config::AgentConfig;
use crate::identity::Enrollment;
use crate::replicas::{Replica, Rotation};
use crate::retry::{Backoff, wait_for_replica, wait_for_tpm, with_tpm};
use crate::status::Reporter;
use crate::tpm::{Quote, Tpm, TpmError};

/// Largest boot log the agent sends (real logs are 10-200 KiB).
pub const MAX_BOOT_LOG: u64 = 4 * 1024 * 1024;
/// Largest IMA batch the agent sends in one answer.
pub const MAX_IMA_BATCH: usize = 2 * 1024 * 1024;
/// Read buffer for the IMA log (the kernel serves it a page at a time).
const IMA_READ_BUFFER: usize = 8 * 1024;
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the verifier closed the stream")]
    Closed,
    #[error("{0}")]
    Invalid(String),
}

/// Attests until the process ends, reconnecting as needed; reports its state in the state
/// directory (see [`crate::status`]).
pub async fn run<T: Tpm + 'static>(
    config: &AgentConfig,
    tpm: Arc<Mutex<T>>,
    enrollment: Enrollment,
) -> Result<(), AttestError> {
    let mut status = Reporter::new(&config.state_dir);
    run_reporting(config, tpm, enrollment, &mut status).await
}

/// [`run`] with the caller's status reporter.
///
/// A TPM failure and a verifier failure are handled apart: when the TPM does not answer, the
/// agent drops the stream (it cannot answer challenges, and the verifier will count the device
/// as timed out, which is the truth), probes the TPM with backoff, and reconnects to the same
/// replica only once the TPM answers. When the verifier or the network fails (no connection,
/// the stream ended or broke, or the replica answered `UNAVAILABLE` because another one holds
/// the device), the agent moves to the next configured replica ([`crate::replicas::Rotation`]):
/// at once within a round of the list, and after a whole round with exponential backoff and full
/// jitter, capped at [`crate::retry::MAX_BACKOFF`], so a fleet that lost its verifiers does not
/// return in lockstep. With one replica every failure backs off, as before. The backoff and the
/// round restart once a challenge has been answered.
pub async fn run_reporting<T: Tpm + 'static>(
    config: &AgentConfig,
    tpm: Arc<Mutex<T>>,
    enrollment: Enrollment,
    status: &mut Reporter,
) -> Result<(), AttestError> {
    status.set_device(&enrollment.device_id);
    let replicas = &config.verifiers;
    let mut rotation = Rotation::new(replicas.count());
    let mut backoff = Backoff::new();
    let mut failures: u32 = 0;
    let mut last_reset_count = None;
    loop {
        let replica = replicas.at(rotation.current());
        let answered_before = status.status().challenges_answered;
        let outcome = session(
            config,
            replica,
            &tpm,
            &enrollment,
            &mut last_reset_count,
            status,
        )
        .await;
        if status.status().challenges_answered > answered_before {
            backoff.reset();
            rotation.progressed();
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let reason = match outcome {
            Err(AttestError::Tpm(error)) => {
                wait_for_tpm(&tpm, &mut backoff, &mut failures, status, error.to_string()).await;
                // The TPM is back: reconnect now, the verifier has been waiting.
                backoff.reset();
                failures = 0;
                continue;
            }
            Ok(()) => "the verifier closed the stream".to_string(),
            Err(AttestError::Stream(answer)) if answer.code() == tonic::Code::Unavailable => {
                format!(
                    "unavailable here (another replica may hold this device): {}",
                    answer.message()
                )
            }
            Err(error) => error.to_string(),
        };
        let next = rotation.failed();
        wait_for_replica(
            replicas,
            replica,
            next,
            &mut backoff,
            failures,
            reason,
            status,
        )
        .await;
    }
}

async fn session<T: Tpm + 'static>(
    config: &AgentConfig,
    replica: &Replica,
    tpm: &Arc<Mutex<T>>,
    enrollment: &Enrollment,
    last_reset_count: &mut Option<u32>,
    status: &mut Reporter,
) -> Result<(), AttestError> {
    let bound = connect_bound(config, replica, enrollment).await?;
    let binding = bound.binding;
    let mut client = AttestationClient::new(bound.channel).max_decoding_message_size(64 * 1024);
    let (outbound, rx) = mpsc::channel::<AgentMessage>(4);
    let hello = AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            device_id: enrollment.device_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        })),
    };
    outbound
        .send(hello)
        .await
        .map_err(|_| AttestError::Closed)?;
    let mut inbound = client.attest(ReceiverStream::new(rx)).await?.into_inner();
    tracing::info!(
        verifier = replica.url(),
        server_name = replica.server_name(),
        "attached to a verifier replica"
    );
    status.stream_opened(replica.url());
    while let Some(message) = inbound.message().await? {
        match message.body {
            Some(verifier_message::Body::Challenge(challenge)) => {
                let evidence = answer(config, tpm, challenge, &binding, last_reset_count).await?;
                // What travelled: after a reconnection only the entries past the verifier's
                // offset (tests/tests/offline_buffering.rs reads this line).
                tracing::debug!(
                    challenge = evidence.challenge_id,
                    ima_offset = evidence.ima_offset,
                    ima_entries = evidence.ima_entries.iter().filter(|b| **b == b'\n').count(),
                    ima_bytes = evidence.ima_entries.len(),
                    boot_log = evidence.boot_log_included,
                    "answering the challenge"
                );
                // Large evidence (a boot log, the IMA log after a reboot) goes in parts of a few
                // KiB: the verifier keeps one stream per device, and a stream's receive buffer
                // stays as large as the largest message it carried.
                for message in evidence_messages(evidence) {
                    outbound
                        .send(message)
                        .await
                        .map_err(|_| AttestError::Closed)?;
                }
                status.challenge_answered();
            }
            Some(verifier_message::Body::Verdict(verdict)) => {
                let state = TrustState::try_from(verdict.state)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| verdict.state.to_string());
                tracing::info!(challenge = verdict.challenge_id, %state, "verdict");
                status.verdict(state);
            }
            None => {}
        }
    }
    Ok(())
}

/// Reads at most `limit` bytes of a file, failing if it is larger.
fn read_bounded(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, AttestError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| AttestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| AttestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(AttestError::Invalid(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The IMA lines from entry `offset` on, at most `MAX_IMA_BATCH` bytes (whole lines only).
///
/// Streams the file: the lines before `offset` (the entries the verifier has already seen)
/// are counted through one small reused buffer, never kept, so a gateway with a long IMA log
/// holds only the batch it sends (docs/field.md).
fn ima_after(path: &std::path::Path, offset: u64) -> Result<Vec<u8>, AttestError> {
    use std::io::BufRead;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        // No IMA on this machine: nothing to send.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AttestError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let read_error = |source| AttestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = std::io::BufReader::with_capacity(IMA_READ_BUFFER, file);
    let mut skipped: u64 = 0;
    while skipped < offset {
        let buffer = reader.fill_buf().map_err(read_error)?;
        if buffer.is_empty() {
            // The log is shorter than the offset (a new boot): nothing after it.
            return Ok(Vec::new());
        }
        let mut consumed = buffer.len();
        for (at, byte) in buffer.iter().enumerate() {
            if *byte == b'\n' {
                skipped += 1;
                if skipped == offset {
                    consumed = at + 1;
                    break;
                }
            }
        }
        reader.consume(consumed);
    }
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line longer than the batch is not an IMA entry: stop reading it there.
        let limit = (MAX_IMA_BATCH + 1) as u64;
        let read = std::io::Read::take(&mut reader, limit)
            .read_until(b'\n', &mut line)
            .map_err(read_error)?;
        // Whole lines only: a last line without its newline is still being written.
        if read == 0 || line.last() != Some(&b'\n') || out.len() + line.len() > MAX_IMA_BATCH {
            break;
        }
        out.extend_from_slice(&line);
    }
    Ok(out)
}

async fn answer<T: Tpm + 'static>(
    config: &AgentConfig,
    tpm: &Arc<Mutex<T>>,
    challenge: Challenge,
    binding: &ChannelBinding,
    last_reset_count: &mut Option<u32>,
) -> Result<Evidence, AttestError> {
    let selection: Vec<(u16, Vec<u32>)> = challenge
        .pcr_selection
        .iter()
        .map(|bank| {
            (
                u16::try_from(bank.hash_algorithm).unwrap_or(0),
                bank.pcrs.clone(),
            )
        })
        .collect();
    // The quote answers this challenge on this connection only (the relay defence).
    let qualifying = binding.qualifying_data(&challenge.nonce);
    let quote = with_tpm(tpm, move |t| t.quote(&qualifying, &selection)).await?;
    // IMA is read after the quote, so the list holds at least every entry the quoted PCR 10
    // covers; the verifier replays to the prefix that matches and asks for the rest next time.
    let ima_entries = ima_after(&config.ima_log, challenge.ima_offset)?;
    let reset = last_reset_count.is_some_and(|previous| previous != quote.reset_count);
    *last_reset_count = Some(quote.reset_count);
    let send_boot_log = challenge.want_boot_log || reset;
    let boot_log = if send_boot_log {
        read_bounded(&config.event_log, MAX_BOOT_LOG)?
    } else {
        Vec::new()
    };
    Ok(evidence(
        &challenge,
        quote,
        send_boot_log.then_some(boot_log),
        ima_entries,
    ))
}

/// The answer to `challenge`: the quote, its PCR values, the boot log when it is sent, and the
/// IMA entries from the challenge's offset.
pub fn evidence(
    challenge: &Challenge,
    quote: Quote,
    boot_log: Option<Vec<u8>>,
    ima_entries: Vec<u8>,
) -> Evidence {
    Evidence {
        challenge_id: challenge.challenge_id,
        quote: quote.attest,
        signature: quote.signature,
        pcr_values: quote
            .pcr_values
            .into_iter()
            .map(|(alg, index, digest)| PcrValue {
                hash_algorithm: u32::from(alg),
                index,
                digest,
            })
            .collect(),
        boot_log_included: boot_log.is_some(),
        boot_log: boot_log.unwrap_or_default(),
        ima_offset: challenge.ima_offset,
        ima_entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ima_batches_start_at_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ima");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(ima_after(&path, 1).unwrap(), b"b\nc\n");
        assert_eq!(ima_after(&path, 5).unwrap(), b"");
        assert_eq!(ima_after(&dir.path().join("none"), 0).unwrap(), b"");
        // A last line still being written is left for the next batch.
        std::fs::write(&path, "a\nb\nc").unwrap();
        assert_eq!(ima_after(&path, 0).unwrap(), b"a\nb\n");
        assert_eq!(ima_after(&path, 2).unwrap(), b"");
    }

    #[test]
    fn ima_skips_across_read_buffers_and_caps_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ima");
        // Lines of 100 bytes: the offset lands in the middle of later read buffers.
        let lines: Vec<String> = (0..50_000).map(|i| format!("{i:099}\n")).collect();
        std::fs::write(&path, lines.concat()).unwrap();
        for offset in [0usize, 1, 81, 82, 163, 49_999] {
            let batch = ima_after(&path, offset as u64).unwrap();
            assert!(
                batch.starts_with(lines[offset].as_bytes()),
                "offset {offset}"
            );
        }
        let batch = ima_after(&path, 0).unwrap();
        assert!(batch.len() <= MAX_IMA_BATCH && batch.len() > MAX_IMA_BATCH - 100);
        assert_eq!(batch.len() % 100, 0, "whole lines only");
        assert_eq!(ima_after(&path, 50_000).unwrap(), b"");
    }
}
