//! One agent's attestation stream, driven by the verifier: challenge, wait, appraise, record,
//! repeat at the device's interval. A silent device times out; nothing here ever makes a device
//! trusted except a passing appraisal of fresh evidence.
//!
//! What a session uses of the [`Service`]: the device record and its appraisal state
//! (`storage`), the trust snapshot (`trust`), the schedule (`interval_for`, `note_passed`), the
//! commit path (`transition*`, then `durable` and `publish`/`abandon` through the notifier), the
//! results (`record_result`, `record_failure`, `record_reboot`), the counters (`metrics`,
//! `count_answer`) and the evidence size limit (`limits`). The wire encoding of a state comes
//! from the network edge ([`StateToWire`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use trustchain_proto::v1::{self, agent_message, verifier_message};

use super::appraisal::{self, AppraisalState, Challenge, Evidence, Policy};
use super::assembly::Assembly;
use super::binding::ChannelExporter;
use super::nonce::ChallengeNonce;
use super::state::{self, Input, Recovery};
use crate::device::{DeviceRecord, DeviceState};
use crate::enrollment::keys::ak_qualified_name;
use crate::evidence::digest::HashAlgorithm;
use crate::evidence::quote::{PcrValues, VerifyingKey};
use crate::evidence::tpm::{PcrSelection, Public, SignatureScheme};
use crate::reference::policy::{EvidenceRequired, FailureAction};
use crate::results::ResultContext;
use crate::service::Service;

/// How long the agent has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Re-challenges in a row (after resets) before the answer counts as a failure.
const MAX_RECHALLENGES: u32 = 2;

/// Why the verifier ends a stream, as the agent hears it (the network edge turns it into a
/// gRPC status: `server::attestation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The agent sent something other than what the protocol expects now.
    Malformed(&'static str),
    /// The device may not attest (quarantined or decommissioned).
    NotPermitted(&'static str),
    /// Another replica holds the device's lease: the agent should try the next replica.
    Elsewhere,
}

/// Messages to the agent, boxed: the channel allocates its slots 32 at a time, for each of
/// thousands of streams, and an unboxed slot (a message or a status) is ~90 bytes.
pub type Outbound = mpsc::Sender<Box<Result<v1::VerifierMessage, Refusal>>>;

/// The agent's messages as the network edge delivers them; `None` once the stream ended (closed
/// by the agent or broken).
pub trait Inbound: Send {
    fn next_message(&mut self) -> impl Future<Output = Option<v1::AgentMessage>> + Send;
}

/// Builds the AK verification key a device's quotes must verify with: its scheme pinned by the
/// key's own parameters (RSASSA/ECDSA with SHA-256 when it names none), its signer the AK's
/// Qualified Name under the EK.
pub fn verifying_key(device: &DeviceRecord) -> Result<VerifyingKey, String> {
    let public = Public::parse(&device.ak_public).map_err(|e| format!("stored AK: {e}"))?;
    let (scheme, hash) = VerifyingKey::key_scheme(&public).unwrap_or(match public.key {
        crate::evidence::tpm::PublicKey::Rsa { .. } => {
            (SignatureScheme::RsaSsa, HashAlgorithm::Sha256)
        }
        crate::evidence::tpm::PublicKey::Ecc { .. } => {
            (SignatureScheme::EcDsa, HashAlgorithm::Sha256)
        }
    });
    let signer =
        ak_qualified_name(&device.ek_public, &device.ak_public).map_err(|e| e.to_string())?;
    Ok(VerifyingKey::new(public, scheme, hash)
        .map_err(|e| e.to_string())?
        .with_signer(signer))
}

fn selection(policy: &Policy) -> PcrSelection {
    let boot_only = policy
        .governance
        .as_ref()
        .is_some_and(|g| g.tier.evidence == EvidenceRequired::Boot);
    let last = if boot_only { 9 } else { 10 };
    PcrSelection::new(vec![(policy.required_bank, (0..=last).collect())])
}

/// The device's appraisal settings from the trust snapshot in force now: one snapshot for the
/// whole appraisal.
fn policy_for(service: &Service, device: &DeviceRecord) -> Policy {
    let snapshot = service.trust().current();
    let now_unix = crate::clock::now_unix_millis() / 1000;
    let governance = snapshot.governance(device, now_unix);
    let required_bank = governance
        .as_ref()
        .and_then(|g| g.references.policy.boot.bank().ok())
        .unwrap_or(HashAlgorithm::Sha256);
    Policy {
        required_bank,
        trust_findings: snapshot.device_findings(device),
        governance,
        snapshot: Some(snapshot),
        ..Policy::default()
    }
}

/// The device's standing state once this appraisal's verdict is recorded, as the state machine
/// will take it (the transition below applies the same step to the same record; an operator's
/// action in between is a change of its own, with its own record).
fn standing_after(device: &DeviceRecord, passed: bool, quarantine: bool) -> DeviceState {
    let recovery = Recovery {
        may_recover: device.recoverable,
    };
    let input = if passed {
        Input::AppraisalPassed
    } else {
        Input::AppraisalFailed
    };
    let standing = state::step(device.state, input, recovery);
    if quarantine {
        state::step(standing, Input::Quarantine, recovery)
    } else {
        standing
    }
}

fn evidence_from_wire(message: v1::Evidence) -> Evidence {
    let mut pcr_values = PcrValues::default();
    for value in message.pcr_values {
        if let Some(alg) = u16::try_from(value.hash_algorithm)
            .ok()
            .and_then(HashAlgorithm::from_tpm_alg_id)
        {
            pcr_values.insert(alg, value.index, value.digest);
        }
    }
    Evidence {
        challenge_id: message.challenge_id,
        quote: message.quote,
        signature: message.signature,
        pcr_values,
        boot_log: message.boot_log_included.then_some(message.boot_log),
        ima_offset: message.ima_offset,
        ima_entries: message.ima_entries,
        received: Instant::now(),
    }
}

fn load_state(service: &Service, device_id: &str) -> AppraisalState {
    match service.storage().appraisal_state(device_id) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            // A corrupt state is not trusted: start over, which demands a full boot log.
            tracing::error!(device = %device_id, %error, "stored appraisal state unreadable; starting over");
            AppraisalState::default()
        }),
        _ => AppraisalState::default(),
    }
}

async fn send(outbound: &Outbound, body: verifier_message::Body) -> bool {
    outbound
        .send(Box::new(Ok(v1::VerifierMessage { body: Some(body) })))
        .await
        .is_ok()
}

/// How a device state is told to the agent (the network edge owns the wire enumeration).
pub type StateToWire = fn(DeviceState) -> v1::TrustState;

/// Runs one agent's stream until it ends. `device_id` comes from the client certificate;
/// `exporter` is the TLS exporter of the stream's connection, which every quote must be bound to.
pub async fn run(
    service: Arc<Service>,
    device_id: String,
    exporter: ChannelExporter,
    mut inbound: impl Inbound,
    outbound: Outbound,
    state_to_wire: StateToWire,
) {
    match tokio::time::timeout(HELLO_TIMEOUT, inbound.next_message()).await {
        Ok(Some(v1::AgentMessage {
            body: Some(agent_message::Body::Hello(hello)),
        })) if hello.device_id == device_id => {}
        _ => {
            let _ = outbound
                .send(Box::new(Err(Refusal::Malformed(
                    "expected hello for this device",
                ))))
                .await;
            return;
        }
    }
    // Replicas: only the replica holding the device's lease attests it.
    if !service.claim(&device_id).await {
        tracing::info!(device = %device_id, "device attested by another replica; sending the agent on");
        let _ = outbound.send(Box::new(Err(Refusal::Elsewhere))).await;
        return;
    }
    tracing::info!(device = %device_id, "attestation stream open");
    service.metrics().stream_opened();
    run_stream(
        &service,
        &device_id,
        exporter,
        &mut inbound,
        &outbound,
        state_to_wire,
    )
    .await;
    service.metrics().stream_closed();
    service.unclaim(&device_id);
    tracing::info!(device = %device_id, "attestation stream closed");
}

/// What a round tells the stream loop.
enum Step {
    /// Challenge again at once (a missed answer, a re-challenge after a TPM reset).
    Next,
    /// Wait this long, then challenge again.
    Wait(Duration),
    /// End the stream.
    Stop,
}

/// What a stream carries from one round to the next.
struct Round<'a, I> {
    service: &'a Arc<Service>,
    device_id: String,
    inbound: &'a mut I,
    outbound: &'a Outbound,
    state_to_wire: StateToWire,
    missed_limit: u32,
    exporter: ChannelExporter,
    next_id: u64,
    want_full: bool,
    missed: u32,
    rechallenges: u32,
    /// The last good appraisal state, kept in memory between rounds: only this stream writes
    /// it, so reading and decoding it from storage every round bought nothing.
    cached_prior: Option<AppraisalState>,
    /// The AK's verifying key and the stored AK it was built from: parsing the AK and the EK,
    /// the qualified name and the key check belong once per stream, not once per round. A
    /// re-enrolled AK (another stored AK) builds it again.
    cached_key: Option<(Vec<u8>, Arc<VerifyingKey>)>,
    /// Evidence parts received so far. Kept across rounds: the parts of an answer that missed
    /// its round's deadline arrive in the next, are joined, and are dropped there as a late
    /// answer (a fresh assembly would have decoded the tail alone and refused the stream).
    assembly: Assembly,
}

async fn run_stream(
    service: &Arc<Service>,
    device_id: &str,
    exporter: ChannelExporter,
    inbound: &mut impl Inbound,
    outbound: &Outbound,
    state_to_wire: StateToWire,
) {
    let mut round = Round {
        service,
        device_id: device_id.to_string(),
        inbound,
        outbound,
        state_to_wire,
        missed_limit: service
            .attestation_config()
            .timeout_after_missed_intervals
            .max(1),
        exporter,
        next_id: 1,
        want_full: true,
        missed: 0,
        rechallenges: 0,
        cached_prior: None,
        cached_key: None,
        assembly: Assembly::new(service.limits().max_evidence_message),
    };
    // Each round runs in its own function, so everything it held (the device record, the
    // evidence, the policy, the verdict: several KiB per device) is freed before the stream
    // sleeps until the next challenge; and its future is boxed, so the stream's task does not
    // keep a round's worth of space (about 4 KiB) through every sleep.
    loop {
        match Box::pin(round.run()).await {
            Step::Next => {}
            Step::Wait(rest) => tokio::time::sleep(rest).await,
            Step::Stop => break,
        }
    }
}

impl<I: Inbound> Round<'_, I> {
    /// One challenge, its answer and the verdict.
    #[allow(clippy::too_many_lines)]
    async fn run(&mut self) -> Step {
        let Self {
            service,
            device_id,
            inbound,
            outbound,
            state_to_wire,
            missed_limit,
            exporter,
            next_id,
            want_full,
            missed,
            rechallenges,
            cached_prior,
            cached_key,
            assembly,
        } = self;
        let (service, device_id, outbound, missed_limit) =
            (*service, device_id.as_str(), *outbound, *missed_limit);
        // A lease lost (taken over, or run out while this replica was paused or cut off from
        // the database) ends the stream: what this round would write could not land, and the
        // state cached here may be stale. The agent goes to the replica that holds it.
        if !service.storage().holds_lease(device_id) {
            let _ = outbound.send(Box::new(Err(Refusal::Elsewhere))).await;
            return Step::Stop;
        }
        let Ok(Some(device)) = service.storage().device_shared(device_id) else {
            return Step::Stop;
        };
        // Re-read every round: an operator may change the device's tier.
        let interval = service.interval_for(&device);
        if matches!(
            device.state,
            DeviceState::Decommissioned | DeviceState::Quarantined
        ) {
            let _ = outbound
                .send(Box::new(Err(Refusal::NotPermitted(
                    "device may not attest",
                ))))
                .await;
            return Step::Stop;
        }
        let key = match cached_key {
            Some((ak_public, key)) if *ak_public == device.ak_public => key.clone(),
            _ => match verifying_key(&device) {
                Ok(key) => {
                    let key = Arc::new(key);
                    *cached_key = Some((device.ak_public.clone(), key.clone()));
                    key
                }
                Err(error) => {
                    tracing::error!(device = %device_id, %error, "cannot build the AK key");
                    return Step::Stop;
                }
            },
        };
        let policy = policy_for(service, &device);
        let prior = match &*cached_prior {
            Some(prior) => prior.clone(),
            None => load_state(service, device_id),
        };
        // A boot log judged under other documents, or under a change window that has closed,
        // is judged again.
        let boot_rejudge = policy.governance.as_ref().is_some_and(|g| {
            prior.boot_judged_under != policy.boot_basis()
                || crate::clock::now_unix_millis() / 1000
                    >= prior.boot_judged_until.min(g.valid_until)
        });
        let nonce = match ChallengeNonce::draw() {
            Ok(nonce) => nonce,
            Err(error) => {
                tracing::error!(device = %device_id, %error, "no nonce; closing the stream");
                return Step::Stop;
            }
        };
        let selection = selection(&policy);
        // IMA entries judged under another allowlist are asked for again, all of them.
        let ima_rejudge =
            selection.banks.iter().any(|(alg, pcrs)| {
                *alg == policy.required_bank && pcrs.contains(&appraisal::IMA_PCR)
            }) && policy.ima_rejudgement_due(&prior);
        let challenge = Challenge {
            id: *next_id,
            bound: exporter.bind(&nonce),
            nonce,
            selection,
            want_boot_log: *want_full || prior.boot_reset_count.is_none() || boot_rejudge,
            ima_offset: if (*want_full && *rechallenges > 0) || ima_rejudge {
                0
            } else {
                prior.ima.entries
            },
            expires: Instant::now() + interval,
        };
        *next_id += 1;
        let started = Instant::now();
        let wire = v1::Challenge {
            challenge_id: challenge.id,
            nonce: challenge.nonce.as_bytes().to_vec(),
            expires_in_millis: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            pcr_selection: challenge
                .selection
                .banks
                .iter()
                .map(|(alg, pcrs)| v1::PcrBankSelection {
                    hash_algorithm: u32::from(alg.tpm_alg_id()),
                    pcrs: pcrs.clone(),
                })
                .collect(),
            want_boot_log: challenge.want_boot_log,
            ima_offset: challenge.ima_offset,
        };
        if !send(outbound, verifier_message::Body::Challenge(wire)).await {
            return Step::Stop;
        }
        // Wait for the answer to this challenge; answers to earlier, expired challenges arrive
        // late sometimes and are dropped (they count as missed, never as trusted).
        let deadline = tokio::time::Instant::now() + interval;
        // Large evidence arrives in parts (`EvidencePart`), joined here; the joined bytes are
        // freed as soon as they are decoded.
        let evidence = loop {
            let evidence = match tokio::time::timeout_at(deadline, inbound.next_message()).await {
                Err(_) => break None,
                Ok(Some(v1::AgentMessage {
                    body: Some(agent_message::Body::Evidence(evidence)),
                })) if assembly.is_empty() => evidence,
                Ok(Some(v1::AgentMessage {
                    body: Some(agent_message::Body::EvidencePart(part)),
                })) => match assembly.push(part) {
                    Ok(Some(evidence)) => evidence,
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(device = %device_id, error = %crate::untrusted_text::Escaped(&error), "evidence parts refused; closing the stream");
                        let _ = outbound
                            .send(Box::new(Err(Refusal::Malformed("malformed evidence"))))
                            .await;
                        return Step::Stop;
                    }
                },
                Ok(Some(_)) => {
                    let _ = outbound
                        .send(Box::new(Err(Refusal::Malformed("expected evidence"))))
                        .await;
                    return Step::Stop;
                }
                Ok(None) => {
                    tracing::info!(device = %device_id, "attestation stream closed");
                    return Step::Stop;
                }
            };
            if evidence.challenge_id < challenge.id {
                tracing::info!(device = %device_id, late = evidence.challenge_id, "dropping a late answer");
                continue;
            }
            let lines = evidence.ima_entries.iter().filter(|b| **b == b'\n').count() as u64;
            let bytes = (evidence.quote.len()
                + evidence.signature.len()
                + evidence.boot_log.len()
                + evidence.ima_entries.len()) as u64;
            service.count_answer(device_id, evidence.boot_log_included, lines, bytes);
            break Some(evidence_from_wire(evidence));
        };
        // An answer read after its challenge expired is no answer: it is never appraised (so it
        // can never make the device trusted), and it counts as missed, like silence. It is not
        // an integrity failure either: under load the verifier itself may read it late, and an
        // honest device must not be marked untrusted for that (the loadgen showed it).
        let evidence = evidence.filter(|e| {
            let in_time = e.received <= challenge.expires;
            if !in_time {
                tracing::warn!(device = %device_id, "answer read after the challenge expired; counted as missed");
            }
            in_time
        });
        let Some(evidence) = evidence else {
            *missed += 1;
            tracing::warn!(device = %device_id, missed = *missed, "no answer within the interval");
            if *missed >= missed_limit {
                let _ = service.transition(
                    device_id,
                    Input::Silent,
                    "no valid answer within the timeout",
                );
            }
            return Step::Next;
        };
        *missed = 0;
        // The nonce is spent now (a second use is refused from here on) and durable before any
        // verdict is sent: the commit below covers it.
        let fresh = match service
            .storage()
            .consume_nonce_deferred(challenge.nonce.as_bytes(), device_id)
        {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(%error, "cannot record the nonce; no verdict");
                return Step::Stop;
            }
        };
        let appraisal_started = Instant::now();
        let outcome = if evidence.boot_log.is_none() {
            // A quote and a few IMA entries take tens of microseconds: appraised here. A hop to
            // the blocking pool cost more than the work (thread wake-ups were the largest
            // item in the load generator's profile). Boot logs, which take longer, go there.
            Ok(appraisal::appraise(
                &key, &policy, &prior, &challenge, &evidence, fresh,
            ))
        } else {
            let prior = prior.clone();
            let challenge = challenge.clone();
            let policy = policy.clone();
            tokio::task::spawn_blocking(move || {
                appraisal::appraise(&key, &policy, &prior, &challenge, &evidence, fresh)
            })
            .await
        };
        let Ok(outcome) = outcome else {
            let _ = service.transition(
                device_id,
                Input::AppraisalFailed,
                "appraisal_completed: the appraisal crashed",
            );
            return Step::Stop;
        };
        if outcome.rechallenge && *rechallenges < MAX_RECHALLENGES {
            *rechallenges += 1;
            *want_full = true;
            tracing::info!(device = %device_id, "TPM reset seen: asking again for the boot log and IMA from the start");
            return Step::Next;
        }
        *rechallenges = 0;
        *want_full = false;
        let mut verdict = outcome.verdict;
        if outcome.rechallenge {
            // Still incomplete after the re-challenges: fail closed, never fall through to a pass.
            verdict.fail(crate::verdict::Failure::new(
                crate::verdict::Rule::ResetHandling,
                "the evidence stayed incomplete after a TPM reset",
            ));
        }
        service
            .metrics()
            .appraisal(verdict.passed(), appraisal_started.elapsed());
        // Recorded before the state changes, so the change carries the result it rests on; a
        // failure or a change of state is signed and kept at once.
        let quarantine = !verdict.passed()
            && policy
                .governance
                .as_ref()
                .is_some_and(|g| g.tier.on_failure == FailureAction::Quarantine);
        let result = ResultContext {
            device_id,
            nonce: challenge.nonce.as_bytes(),
            standing: standing_after(&device, verdict.passed(), quarantine),
            valid_for_seconds: (interval * missed_limit).as_secs().max(1),
            allowlist: outcome.allowlist_applied.as_deref(),
        };
        service.record_result(
            &result,
            &verdict,
            !verdict.passed() || device.state != DeviceState::Trusted,
        );
        let state = if verdict.passed() {
            let mut next = outcome.next;
            // The durable time of this pass: a restarted verifier times the device out from it.
            next.passed_at_unix = crate::clock::now_unix_millis() / 1000;
            if let Ok(bytes) = serde_json::to_vec(&next)
                && service
                    .storage()
                    .put_appraisal_state_deferred(device_id, &bytes)
                    .is_err()
            {
                tracing::error!(device = %device_id, "cannot save the appraisal state; no verdict");
                return Step::Stop;
            }
            *cached_prior = Some(next);
            if outcome.rebooted {
                let _ = service.record_reboot(device_id, &verdict.notes.join("; "));
            }
            if let Some(basis) = &outcome.rejudged {
                // The re-judgement is on record; the saved state names its basis, so the
                // verifier stops asking for the log.
                let event = crate::device::EventRecord {
                    at_unix_millis: crate::clock::now_unix_millis(),
                    kind: crate::device::EventKind::BootRejudged,
                    device_id: device_id.to_string(),
                    detail: format!("boot log re-judged under {basis}"),
                };
                if let Err(error) = service.storage().append_event(&event) {
                    tracing::error!(device = %device_id, %error, "cannot record the boot log's re-judgement");
                }
            }
            service.note_passed(device_id, interval * missed_limit);
            // Written with the appraisal's other writes; watchers hear of it after the commit.
            service.transition_after_appraisal(
                device_id,
                Input::AppraisalPassed,
                "all rules passed",
                false,
            )
        } else {
            tracing::warn!(device = %device_id, verdict = %verdict.summary(), "appraisal failed");
            service.record_failure(device_id, &verdict);
            if quarantine {
                // Rare, and two changes in a row: each durable and published in order.
                let _ = service.transition_recoverable(
                    device_id,
                    Input::AppraisalFailed,
                    &verdict.summary(),
                    verdict.policy_only(),
                );
                service
                    .transition(
                        device_id,
                        Input::Quarantine,
                        &format!(
                            "policy action on failure: quarantine ({})",
                            verdict.summary()
                        ),
                    )
                    .map(|device| (Arc::new(device), None))
            } else {
                service.transition_after_appraisal(
                    device_id,
                    Input::AppraisalFailed,
                    &verdict.summary(),
                    verdict.policy_only(),
                )
            }
        };
        // A state that could not be recorded is no verdict: the agent hears nothing rather than
        // a state the database does not hold (e.g. while the disk is full).
        let (current, change) = match state {
            Ok((device, change)) => (device.state, change),
            Err(error) => {
                tracing::error!(device = %device_id, %error, "cannot record the verdict; none issued");
                return Step::Stop;
            }
        };
        // One durable commit for the nonce, the state, the result and any change of state
        // before the verdict leaves; concurrent appraisals share the flush (group commit,
        // `storage::commit`).
        let commit_started = Instant::now();
        let committed = service.durable().await;
        service.metrics().commit_wait(commit_started.elapsed());
        if let Err(error) = committed {
            tracing::error!(device = %device_id, %error, "cannot make the verdict durable; none issued");
            if let Some(change) = &change {
                service.abandon(change);
            }
            return Step::Stop;
        }
        if let Some(change) = change {
            service.publish(change);
        }
        let notice = v1::VerdictNotice {
            challenge_id: challenge.id,
            state: (*state_to_wire)(current) as i32,
        };
        if !send(outbound, verifier_message::Body::Verdict(notice)).await {
            return Step::Stop;
        }
        Step::Wait(interval.saturating_sub(started.elapsed()))
    }
}
