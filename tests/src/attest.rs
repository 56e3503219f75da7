//! Set-up the continuous-attestation tests share: a verifier on a given challenge interval, a
//! device trusted under the real agent or over its own hand-driven stream, and checks on the
//! stored state and the verdict.

use trustchain_swtpm::{BootProfile, TestMakers, TpmMaker};
use trustchain_verifier::device::DeviceState;

use crate::stream::AttestStream;
use crate::{TestDevice, TestVerifier};

/// TPM_ALG_SHA256, the bank hand-driven quotes are over.
pub const SHA256: u16 = 0x000b;

/// A verifier challenging every `interval_seconds`; silent for `missed` intervals means timed
/// out.
pub async fn verifier_every(
    maker: &TpmMaker,
    interval_seconds: u64,
    missed: u32,
) -> anyhow::Result<TestVerifier> {
    TestVerifier::start_with(maker, |c| {
        c.attestation.default_interval_seconds = interval_seconds;
        c.attestation.timeout_after_missed_intervals = missed;
    })
    .await
}

/// A device under the real agent, with bash measured, once `verifier` trusts it.
pub async fn trusted_device(
    verifier: &TestVerifier,
    maker: &TpmMaker,
    label: &str,
) -> anyhow::Result<TestDevice> {
    TestDevice::trusted(verifier, maker, label, &[("/usr/bin/bash", b"bash")]).await
}

/// An enrolled device (no agent running, bash measured) with its own attestation stream,
/// trusted after one honest round on that stream.
pub async fn trusted_on_own_stream(
    verifier: &TestVerifier,
    maker: &TpmMaker,
    label: &str,
) -> anyhow::Result<(TestDevice, AttestStream)> {
    let mut device =
        TestDevice::enrolled(verifier, maker, label, &BootProfile::default_linux()).await?;
    device.swtpm.ima_measure("/usr/bin/bash", b"bash")?;
    let mut stream = AttestStream::open(verifier, &device).await?;
    // Honest answers until one is appraised in time: on a loaded machine an answer can reach
    // the verifier after its challenge expired (counted as missed, and challenged again).
    for _ in 0..5 {
        let challenge = stream.challenge().await?;
        let honest = device.evidence(&challenge, &stream.bound(&challenge), SHA256)?;
        stream.answer(honest).await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
        while std::time::Instant::now() < deadline {
            if stored_state(verifier, &device)? == DeviceState::Trusted {
                return Ok((device, stream));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    anyhow::bail!(
        "{} not trusted after five honest answers: {}",
        device.device_id(),
        verifier.failure_summary(&device.device_id())
    )
}

/// The device's state as the verifier stored it.
pub fn stored_state(verifier: &TestVerifier, device: &TestDevice) -> anyhow::Result<DeviceState> {
    let id = device.device_id();
    verifier
        .service
        .storage()
        .device(&id)?
        .map(|d| d.state)
        .ok_or_else(|| anyhow::anyhow!("{id} is not stored"))
}

/// Whether the device's last failed verdict names `rule`; the error shows the verdict.
pub fn names_rule(verifier: &TestVerifier, device: &TestDevice, rule: &str) -> anyhow::Result<()> {
    let id = device.device_id();
    if verifier.failed_rules(&id).iter().any(|r| r == rule) {
        Ok(())
    } else {
        anyhow::bail!(
            "expected rule {rule}, verdict: {}",
            verifier.failure_summary(&id)
        )
    }
}

/// A device under the real agent (nothing measured), trusted by `verifier`, then tampered with
/// (PCR 4 extended behind the boot log's back) until `verifier` finds it untrusted: the state
/// change an alert reports.
pub async fn trusted_then_tampered(
    verifier: &TestVerifier,
    maker: &TpmMaker,
    label: &str,
) -> anyhow::Result<TestDevice> {
    let device = TestDevice::trusted(verifier, maker, label, &[]).await?;
    device.swtpm.extend_unlisted(4, b"implant")?;
    verifier
        .settle(&device.device_id(), DeviceState::Untrusted)
        .await?;
    Ok(device)
}

/// Devices "gw-good" and "gw-bad" (default boot, nothing measured) enrolled, their agents
/// started, both trusted by `verifier`: the bad one's to be tampered with.
pub async fn good_and_bad(
    verifier: &TestVerifier,
    maker: &TpmMaker,
) -> anyhow::Result<(TestDevice, TestDevice)> {
    let profile = BootProfile::default_linux();
    let mut good = TestDevice::enrolled(verifier, maker, "gw-good", &profile).await?;
    let mut bad = TestDevice::enrolled(verifier, maker, "gw-bad", &profile).await?;
    good.start_agent();
    bad.start_agent();
    for device in [&good, &bad] {
        verifier
            .settle(&device.device_id(), DeviceState::Trusted)
            .await?;
    }
    Ok((good, bad))
}

/// Starts the device's agent again and waits until `verifier` trusts it.
pub async fn answers_again(verifier: &TestVerifier, device: &mut TestDevice) -> anyhow::Result<()> {
    device.start_agent();
    verifier
        .settle(&device.device_id(), DeviceState::Trusted)
        .await
}

/// For hand-driven tests: fresh TPM makers, a verifier challenging every 10 s (time for a slow
/// machine to answer by hand; 3 missed intervals time out) and device `label` trusted on its
/// own stream, as [`trusted_on_own_stream`].
pub async fn hand_driven(
    label: &str,
) -> anyhow::Result<(TestMakers, TestVerifier, TestDevice, AttestStream)> {
    let makers = TestMakers::generate()?;
    let verifier = verifier_every(&makers.trusted, 10, 3).await?;
    let (device, stream) = trusted_on_own_stream(&verifier, &makers.trusted, label).await?;
    Ok((makers, verifier, device, stream))
}

/// Fresh TPM makers, a verifier as [`verifier_every`] and device `label` under the real agent,
/// as [`trusted_device`].
pub async fn agent_trusted(
    interval_seconds: u64,
    missed: u32,
    label: &str,
) -> anyhow::Result<(TestMakers, TestVerifier, TestDevice)> {
    let makers = TestMakers::generate()?;
    let verifier = verifier_every(&makers.trusted, interval_seconds, missed).await?;
    let device = trusted_device(&verifier, &makers.trusted, label).await?;
    Ok((makers, verifier, device))
}
