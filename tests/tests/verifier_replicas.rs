//! Issue 16: an agent given several verifier replicas (`verifier_urls`) tries them in turn. A
//! real `trustchain-agent` on a real swtpm, against a real verifier process, once with a dead
//! first address (nothing listens there) and once with the first address a loopback proxy to the
//! verifier that the test cuts: the agent moves to the next address, at once (no backoff for the
//! first failure of a round), and is attested through it.
//!
//! The agent's status file names the replica of its stream (`verifier`); its log names every
//! replica it attaches to and every move to the next one. The one-shot `trustchain-agent enroll`
//! goes through the list once, past the dead address.
//!
//! Needs the workspace binaries and swtpm; fails, never skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use trustchain_agent::status::AgentState;
use trustchain_swtpm::{BootProfile, SwtpmDevice};
use trustchain_tests::faults::agent_run::{
    AgentProcess, AgentSetup, start_agent_with_replicas, wait_for, wait_trusted,
};
use trustchain_tests::faults::deployment::Deployment;
use trustchain_tests::faults::proxy::{Proxy, tcti_port};

/// A loopback address nothing listens on: bound, then released.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    address
}

fn log(agent: &AgentProcess) -> String {
    std::fs::read_to_string(&agent.log).unwrap_or_default()
}

/// What the agent did with the replicas, for the test's output.
fn print_timeline(agent: &AgentProcess) {
    for line in log(agent).lines().filter(|line| {
        ["enroll", "attached", "moving", "verdict", "state:"]
            .iter()
            .any(|word| line.contains(word))
    }) {
        eprintln!("{line}");
    }
}

/// The agent's log lines from the last time it attached to `url` on.
fn since_attached_to(agent: &AgentProcess, url: &str) -> Vec<String> {
    let text = log(agent);
    let lines: Vec<&str> = text.lines().collect();
    let attached = lines
        .iter()
        .rposition(|line| line.contains("attached to a verifier replica") && line.contains(url));
    match attached {
        Some(at) => lines.iter().skip(at).map(|line| line.to_string()).collect(),
        None => Vec::new(),
    }
}

/// Waits until the agent's stream is on `url` and the verifier has sent a TRUSTED verdict on it.
async fn trusted_through(agent: &AgentProcess, url: &str) {
    wait_for(Duration::from_secs(120), || async {
        let status = agent.status()?;
        (status.state == AgentState::Attesting && status.verifier.as_deref() == Some(url))
            .then_some(())?;
        since_attached_to(agent, url)
            .iter()
            .any(|line| line.contains("verdict") && line.contains("TRUST_STATE_TRUSTED"))
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no TRUSTED verdict through {url}; status {:?}; log:\n{}",
            agent.status(),
            log(agent)
        )
    });
}

fn start(
    deployment: &Deployment,
    tpm: &SwtpmDevice,
    hostname: &str,
    first: SocketAddr,
    second: SocketAddr,
) -> AgentProcess {
    start_agent_with_replicas(
        &AgentSetup {
            dir: &deployment.dir.join("agent"),
            verifier: first,
            root_pem: &deployment.root_pem_path(),
            tpm_port: tcti_port(&tpm.tcti()).unwrap(),
            tpm,
            hostname,
            env: &[],
            binary: None,
        },
        &[second],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_first_replica_costs_one_quick_retry_and_the_second_enrolls_and_attests() {
    let mut deployment = Deployment::create(2, 3, None).unwrap();
    deployment.start_verifier().await.unwrap();
    let mut tpm = SwtpmDevice::start(&deployment.makers.trusted, "gw-replicas-dead").unwrap();
    tpm.boot(&BootProfile::default_linux()).unwrap();
    let dead = closed_port();
    let agent = start(
        &deployment,
        &tpm,
        "gw-replicas-dead",
        dead,
        deployment.address(),
    );

    let device_id = agent
        .attesting_device_id(Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("the agent did not attest; log:\n{}", log(&agent)));
    wait_trusted(&deployment, &device_id, Duration::from_secs(60))
        .await
        .unwrap();
    let direct = format!("https://{}", deployment.address());
    trusted_through(&agent, &direct).await;

    // Enrollment met the dead address first and went on to the live one without a backoff:
    // the first failure of a round is a quick retry.
    let text = log(&agent);
    let dead_url = format!("https://{dead}");
    let first_move = text
        .lines()
        .find(|line| line.contains("moving to the next verifier replica"))
        .unwrap_or_else(|| panic!("no move to the next replica; log:\n{text}"));
    assert!(
        first_move.contains(&dead_url) && first_move.contains(&direct),
        "{first_move}"
    );
    assert!(first_move.contains("back_off=false"), "{first_move}");
    assert!(
        text.lines()
            .any(|line| line.contains("enrolled") && line.contains(&direct)),
        "enrolled through {direct}; log:\n{text}"
    );
    print_timeline(&agent);

    // The one-shot command goes through the list once: past the dead address to the live one.
    let config = agent.state_dir.with_file_name("agent.toml");
    drop(agent);
    let output = std::process::Command::new(
        trustchain_tests::faults::sibling_binary("trustchain-agent").unwrap(),
    )
    .args(["enroll", "--force", "--config"])
    .arg(&config)
    .env("TSS2_LOG", "all+none")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("enrolled as {device_id}")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("enrollment failed at this replica")
                && line.contains(&dead_url)),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_first_replica_is_cut_off_the_device_is_attested_through_the_second() {
    let mut deployment = Deployment::create(2, 3, None).unwrap();
    deployment.start_verifier().await.unwrap();
    let network = Proxy::start("127.0.0.1:0".parse().unwrap(), Some(deployment.address()))
        .await
        .unwrap();
    let mut tpm = SwtpmDevice::start(&deployment.makers.trusted, "gw-replicas-cut").unwrap();
    tpm.boot(&BootProfile::default_linux()).unwrap();
    let agent = start(
        &deployment,
        &tpm,
        "gw-replicas-cut",
        network.address,
        deployment.address(),
    );

    // It starts with the first address (the proxy) and stays there while it works.
    let device_id = agent
        .attesting_device_id(Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("the agent did not attest; log:\n{}", log(&agent)));
    wait_trusted(&deployment, &device_id, Duration::from_secs(60))
        .await
        .unwrap();
    let proxied = format!("https://{}", network.address);
    trusted_through(&agent, &proxied).await;
    let streams = agent.status().unwrap().streams_opened;

    // The first replica becomes unreachable: the stream is cut and new connections refused.
    network.set_target(None);
    network.cut();
    let direct = format!("https://{}", deployment.address());
    trusted_through(&agent, &direct).await;
    let status = agent.status().unwrap();
    assert!(status.streams_opened > streams, "{status:?}");
    assert_eq!(status.device_id.as_deref(), Some(device_id.as_str()));
    wait_trusted(&deployment, &device_id, Duration::from_secs(60))
        .await
        .unwrap();
    let text = log(&agent);
    assert!(
        text.lines()
            .any(|line| line.contains("moving to the next verifier replica")
                && line.contains(&proxied)
                && line.contains("back_off=false")),
        "the cut replica was left at once; log:\n{text}"
    );
    print_timeline(&agent);
}
