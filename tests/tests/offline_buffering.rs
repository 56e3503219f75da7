//! Issue 18, item 5: a gateway on a bad link. While the verifier is unreachable the agent keeps
//! no evidence at all (nothing to lose in a restart, nothing to grow): the IMA log it reads is
//! the kernel's. When the link is back, the verifier asks from the offset it had appraised, and
//! only the entries it has not seen travel, at most `MAX_IMA_BATCH` bytes per answer.
//!
//! A real `trustchain-agent` on a real swtpm, through a loopback proxy that is cut for a few
//! intervals while the device measures new files; the agent's debug log names the offset and
//! the entries of every answer.
//!
//! Needs the workspace binaries and swtpm; fails, never skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use trustchain_agent::status::AgentState;
use trustchain_swtpm::{BootProfile, SwtpmDevice};
use trustchain_tests::faults::agent_run::{AgentSetup, start_agent, wait_for, wait_trusted};
use trustchain_tests::faults::deployment::Deployment;
use trustchain_tests::faults::proxy::{Proxy, tcti_port};

/// (ima_offset, ima_entries) of every answer in the agent's log, in order.
fn answers(log: &std::path::Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    };
    text.lines()
        .filter(|line| line.contains("answering the challenge"))
        .filter_map(|line| Some((field(line, "ima_offset=")?, field(line, "ima_entries=")?)))
        .collect()
}

fn files(from: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + count)
        .map(|i| (format!("/opt/app/plugin-{i}.so"), vec![i as u8; 64]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_outage_only_the_entries_the_verifier_has_not_seen_travel() {
    let mut deployment = Deployment::create(2, 3, None).unwrap();
    deployment.start_verifier().await.unwrap();
    let network = Proxy::start("127.0.0.1:0".parse().unwrap(), Some(deployment.address()))
        .await
        .unwrap();
    let mut tpm = SwtpmDevice::start(&deployment.makers.trusted, "gw-offline").unwrap();
    tpm.boot(&BootProfile::default_linux()).unwrap();
    tpm.ima_measure_many(&files(0, 40)).unwrap();
    let agent = start_agent(&AgentSetup {
        dir: &deployment.dir.join("agent"),
        verifier: network.address,
        root_pem: &deployment.root_pem_path(),
        tpm_port: tcti_port(&tpm.tcti()).unwrap(),
        tpm: &tpm,
        hostname: "gw-offline",
        env: &[("RUST_LOG", "info,trustchain_agent::attest=debug".into())],
        binary: None,
    })
    .unwrap();
    let device_id = agent
        .attesting_device_id(Duration::from_secs(120))
        .await
        .expect("the agent attests");
    wait_trusted(&deployment, &device_id, Duration::from_secs(60))
        .await
        .unwrap();
    // Every entry so far (boot_aggregate and 40 files) has been appraised: wait for an answer
    // that starts past all of them.
    let seen = tpm.ima_entries().len() as u64;
    wait_for(Duration::from_secs(20), || async {
        answers(&agent.log)
            .iter()
            .any(|(offset, _)| *offset == seen)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("never asked from {seen}: {:?}", answers(&agent.log)));

    // The link goes down for several intervals; the kernel measures 25 new files meanwhile.
    let streams = agent.status().unwrap().streams_opened;
    network.set_target(None);
    network.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_outage = answers(&agent.log).len();
    tpm.ima_measure_many(&files(40, 25)).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        answers(&agent.log).len(),
        before_outage,
        "answers while the link was down"
    );
    let rss_offline = trustchain_tests::faults::rss_kib(agent.child.id()).unwrap();

    network.set_target(Some(deployment.address()));
    wait_for(Duration::from_secs(90), || async {
        let status = agent.status()?;
        (status.state == AgentState::Attesting && status.streams_opened > streams).then_some(())
    })
    .await
    .expect("the agent reconnects");
    wait_trusted(&deployment, &device_id, Duration::from_secs(60))
        .await
        .unwrap();
    let after: Vec<(u64, u64)> = answers(&agent.log)
        .into_iter()
        .skip(before_outage)
        .collect();
    let first = *after.first().expect("an answer after the reconnection");
    // The verifier asked from where it had appraised, and exactly the 25 new entries came.
    assert_eq!(first, (seen, 25), "after the reconnection: {after:?}");
    let total: u64 = after.iter().map(|(_, entries)| entries).sum();
    assert_eq!(total, 25, "entries sent again: {after:?}");
    assert!(after.iter().all(|(offset, _)| *offset >= seen), "{after:?}");
    eprintln!(
        "answers after the reconnection {after:?}; agent RSS while offline {rss_offline} KiB"
    );
}
