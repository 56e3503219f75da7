//! Issue 18, item 4: the agent and the verifier as systemd services. The shipped units pass
//! `systemd-analyze verify` and `systemd-analyze security` (a broken unit does not), their
//! sysusers.d files create the users, and the real binaries speak the notify protocol to a
//! socket this test binds as systemd would: the verifier says READY=1 once it serves and pings
//! the watchdog at half of WATCHDOG_USEC; the agent pings from its start but says READY=1 only
//! once its TPM has answered and its first attempt to reach the verifier has an outcome (a TPM
//! that does not answer keeps it "activating", with STATUS= naming why).
//!
//! Needs systemd's tools (`systemd-analyze`, `systemd-sysusers`), swtpm, and the workspace
//! binaries; fails, never skips, without them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;
use trustchain_swtpm::{BootProfile, SwtpmDevice};
use trustchain_tests::faults::agent_run::{AgentSetup, start_agent};
use trustchain_tests::faults::deployment::Deployment;
use trustchain_tests::faults::proxy::{Proxy, pair_targets, tcti_port};
use trustchain_tests::workspace_binary;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

const UNITS: [(&str, &str); 2] = [
    ("agent/systemd/trustchain-agent.service", "trustchain-agent"),
    (
        "verifier/systemd/trustchain-verifier.service",
        "trustchain-verifier",
    ),
];

/// The unit with `/usr/bin/<binary>` replaced by the built binary (verify checks ExecStart=
/// exists), written into `dir` under its own name.
fn unit_for_test(dir: &Path, unit: &str, binary: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo_file(unit)).unwrap();
    let built = workspace_binary(binary);
    let text = text.replace(&format!("/usr/bin/{binary}"), built.to_str().unwrap());
    let path = dir.join(Path::new(unit).file_name().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is missing: install systemd (apt-get install systemd); this test never skips"
    );
    Command::new(name)
}

/// `systemd-analyze verify`: (success, everything it printed).
fn verify(unit: &Path) -> (bool, String) {
    let out = tool("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_units_verify_clean_and_a_broken_unit_does_not() {
    let dir = tempfile::tempdir().unwrap();
    for (unit, binary) in UNITS {
        let path = unit_for_test(dir.path(), unit, binary);
        let (ok, text) = verify(&path);
        assert!(ok && text.trim().is_empty(), "{unit}: {text}");

        // The check has teeth: a misspelt hardening value and a missing binary are reported.
        let text = std::fs::read_to_string(&path).unwrap();
        let broken = dir.path().join(format!("broken-{binary}.service"));
        std::fs::write(
            &broken,
            text.replace("ProtectSystem=strict", "ProtectSystem=strictest"),
        )
        .unwrap();
        // (systemd ignores a bad value with a warning, so the clean check above is "no output".)
        let (_, out) = verify(&broken);
        assert!(out.contains("strictest"), "{unit} mutant passed: {out}");
        std::fs::write(
            &broken,
            text.replace(workspace_binary(binary).to_str().unwrap(), "/nonexistent/x"),
        )
        .unwrap();
        let (ok, out) = verify(&broken);
        assert!(!ok, "{unit} with a missing binary passed: {out}");
    }
}

#[test]
fn the_units_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    for (unit, binary) in UNITS {
        let text = std::fs::read_to_string(repo_file(unit)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for needed in [
            "Type=notify".to_string(),
            "NoNewPrivileges=yes".into(),
            "CapabilityBoundingSet=".into(),
            "ProtectSystem=strict".into(),
            format!("User={binary}"),
            format!("ReadWritePaths=/var/lib/{binary}"),
            format!("StateDirectory={binary}"),
        ] {
            assert!(lines.contains(&needed.as_str()), "{unit} lacks {needed}");
        }
        assert!(
            lines.iter().any(|l| l.starts_with("WatchdogSec=")),
            "{unit}"
        );
        // systemd's own review of the sandbox: exposure at most 2.0 of 10 ("OK").
        let path = unit_for_test(dir.path(), unit, binary);
        let out = tool("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text.lines().last().unwrap_or_default().to_string();
        assert!(out.status.success(), "{unit}: {summary}");
        eprintln!("{summary}");
    }
    let agent = std::fs::read_to_string(repo_file(UNITS[0].0)).unwrap();
    assert!(agent.contains("\nSupplementaryGroups=tss\n"));
    assert!(agent.contains("\nDeviceAllow=/dev/tpmrm0 rw\n"));
    assert!(agent.contains("\nDevicePolicy=closed\n"));
}

#[test]
fn the_sysusers_files_create_the_service_users() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    for conf in [
        "agent/systemd/trustchain-agent.sysusers",
        "verifier/systemd/trustchain-verifier.sysusers",
    ] {
        let out = tool("systemd-sysusers")
            .arg(format!("--root={}", root.path().display()))
            .arg(repo_file(conf))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    for user in ["trustchain-agent", "trustchain-verifier"] {
        let line = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap_or_else(|| panic!("{user} not in {passwd}"));
        // A system user that cannot log in.
        assert!(line.ends_with("/usr/sbin/nologin") || line.ends_with("/bin/false"));
    }
    let tss = group.lines().find(|l| l.starts_with("tss:")).unwrap();
    assert!(tss.ends_with(":trustchain-agent"), "{tss}");
}

/// The notify socket a service manager binds, and what arrives on it.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<(Instant, String)>,
}

impl Notifications {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        Self {
            socket: UnixDatagram::bind(&path).unwrap(),
            path,
            seen: Vec::new(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("NOTIFY_SOCKET".into(), self.path.display().to_string()),
            // One second: pings every half second.
            ("WATCHDOG_USEC".into(), "1000000".into()),
        ]
    }

    /// Receives until `done` holds over what arrived, or `limit` passes; returns `done`.
    async fn until(
        &mut self,
        limit: Duration,
        done: impl Fn(&[(Instant, String)]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(Ok(n)) = tokio::time::timeout(left, self.socket.recv(&mut buf)).await {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in text.lines() {
                    self.seen.push((Instant::now(), line.to_string()));
                }
            }
        }
        true
    }

    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|(_, l)| l == line).count()
    }

    fn lines(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, l)| l.as_str()).collect()
    }
}

fn has(line: &'static str, times: usize) -> impl Fn(&[(Instant, String)]) -> bool {
    move |seen| seen.iter().filter(|(_, l)| l == line).count() >= times
}

#[tokio::test(flavor = "multi_thread")]
async fn the_verifier_is_ready_once_it_serves_pings_the_watchdog_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut notes = Notifications::bind(dir.path());
    let mut deployment = Deployment::create(10, 3, None).unwrap();
    deployment.verifier_env = notes.env();
    // Returns once the verifier answers an admin call.
    deployment.start_verifier().await.unwrap();
    assert!(
        notes
            .until(Duration::from_secs(10), has("READY=1", 1))
            .await,
        "no READY=1: {:?}",
        notes.lines()
    );
    let ready = notes
        .seen
        .iter()
        .find(|(_, l)| l == "READY=1")
        .map(|(at, _)| *at)
        .unwrap();
    // Pings at half of WATCHDOG_USEC: three within ~1.5 s of READY=1, well inside 4 s.
    assert!(
        notes
            .until(Duration::from_secs(4), has("WATCHDOG=1", 3))
            .await,
        "watchdog pings: {:?}",
        notes.lines()
    );
    let pings: Vec<Instant> = notes
        .seen
        .iter()
        .filter(|(at, l)| l == "WATCHDOG=1" && *at >= ready)
        .map(|(at, _)| *at)
        .collect();
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap < Duration::from_millis(900), "ping gap {gap:?}");
    }

    let pid = deployment.verifier_pid().unwrap();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(
        notes
            .until(Duration::from_secs(10), has("STOPPING=1", 1))
            .await,
        "no STOPPING=1 after SIGTERM: {:?}",
        notes.lines()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_is_ready_only_after_its_tpm_and_first_attempt_and_pings_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let mut notes = Notifications::bind(dir.path());
    let mut deployment = Deployment::create(2, 3, None).unwrap();
    deployment.start_verifier().await.unwrap();
    let mut tpm = SwtpmDevice::start(&deployment.makers.trusted, "gw-notify").unwrap();
    tpm.boot(&BootProfile::default_linux()).unwrap();
    // The TPM is unreachable at first: the proxy refuses every connection.
    let (tpm_proxy, tpm_ctrl_proxy) = Proxy::start_pair(None).await.unwrap();
    let env = notes.env();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let agent = start_agent(&AgentSetup {
        dir: &dir.path().join("agent"),
        verifier: deployment.address(),
        root_pem: &deployment.root_pem_path(),
        tpm_port: tpm_proxy.address.port(),
        tpm: &tpm,
        hostname: "gw-notify",
        env: &env,
        binary: None,
    })
    .unwrap();

    // Without its TPM the agent is alive (pings) but not ready, and says why.
    notes.until(Duration::from_secs(4), |_| false).await;
    assert_eq!(notes.count("READY=1"), 0, "{:?}", notes.lines());
    assert!(notes.count("WATCHDOG=1") >= 3, "{:?}", notes.lines());
    assert!(
        notes
            .lines()
            .iter()
            .any(|l| l.starts_with("STATUS=TPM unavailable")),
        "{:?}; agent log {}",
        notes.lines(),
        agent.log.display()
    );

    // The TPM answers: the agent enrolls, opens its stream, and only then is ready.
    let (main, ctrl) = pair_targets(tcti_port(&tpm.tcti()));
    tpm_proxy.set_target(main);
    tpm_ctrl_proxy.set_target(ctrl);
    assert!(
        notes
            .until(Duration::from_secs(90), has("READY=1", 1))
            .await,
        "no READY=1 once the TPM answered: {:?}; agent log {}",
        notes.lines(),
        agent.log.display()
    );
    let lines = notes.lines();
    let ready = lines.iter().position(|l| *l == "READY=1").unwrap();
    assert_eq!(
        lines.get(ready + 1).copied(),
        Some("STATUS=attesting"),
        "{lines:?}"
    );
    assert!(
        lines[..ready].contains(&"STATUS=enrolling"),
        "READY=1 before the first attempt: {lines:?}"
    );
    // And it keeps pinging while it attests.
    let before = notes.count("WATCHDOG=1");
    notes.until(Duration::from_secs(2), |_| false).await;
    assert!(
        notes.count("WATCHDOG=1") >= before + 2,
        "{:?}",
        notes.lines()
    );
    assert_eq!(notes.count("READY=1"), 1, "READY=1 sent twice");
}

/// `cargo deb` on the already built binaries. (cargo-deb warns that the dev profile is meant
/// for tests, which this is: a release build of the workspace here would double the test's
/// cost; `scripts/package.sh` makes the release packages from the same metadata.)
fn build_deb(package: &str, out: &Path) -> PathBuf {
    let status = tool("cargo-deb")
        .current_dir(repo_file(""))
        .args([
            "deb",
            "-p",
            package,
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "-q",
        ])
        .arg("--output")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "cargo deb -p {package}");
    std::fs::read_dir(out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with(&format!("{package}_")) && name.ends_with("_amd64.deb")
        })
        .unwrap_or_else(|| panic!("no {package} .deb in {}", out.display()))
}

fn deb_field(deb: &Path, field: &str) -> String {
    let out = tool("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_packages_hold_the_binaries_units_users_and_docs_and_run_once_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let packages = [
        (
            "trustchain-agent",
            vec![
                "./usr/bin/trustchain-agent",
                "./usr/lib/systemd/system/trustchain-agent.service",
                "./usr/lib/sysusers.d/trustchain-agent.conf",
                "./usr/lib/tmpfiles.d/trustchain-agent.conf",
                "./usr/share/doc/trustchain-agent/agent.example.toml",
                "./usr/share/doc/trustchain-agent/field.md",
                "./usr/share/doc/trustchain-agent/copyright",
            ],
        ),
        (
            "trustchain-verifier",
            vec![
                "./usr/bin/trustchain-verifier",
                "./usr/bin/trustchain",
                "./usr/lib/systemd/system/trustchain-verifier.service",
                "./usr/lib/sysusers.d/trustchain-verifier.conf",
                "./usr/share/doc/trustchain-verifier/verifier.example.toml",
                "./usr/share/doc/trustchain-verifier/field.md",
            ],
        ),
    ];
    for (package, wanted) in packages {
        let deb = build_deb(package, dir.path());
        let listing = tool("dpkg-deb").arg("-c").arg(&deb).output().unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout).to_string();
        let paths: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .collect();
        for path in &wanted {
            assert!(paths.contains(path), "{package} lacks {path}: {listing}");
        }
        // Nothing in /etc: the operator writes the config (the units wait for it).
        assert!(!paths.iter().any(|p| p.starts_with("./etc/")), "{listing}");
        let depends = deb_field(&deb, "Depends");
        assert!(depends.contains("systemd"), "{depends}");
        // The agent links libtss2; the verifier never does (DESIGN: pure-Rust parsing).
        assert_eq!(
            depends.contains("libtss2-esys"),
            package == "trustchain-agent",
            "{package}: {depends}"
        );
        let scripts = tool("dpkg-deb").arg("-I").arg(&deb).output().unwrap();
        let scripts = String::from_utf8_lossy(&scripts.stdout).to_string();
        assert!(scripts.contains("postinst"), "{scripts}");

        // Unpacked, the binary runs and the unit verifies against it.
        let root = dir.path().join(format!("root-{package}"));
        let status = tool("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
        let binary = root.join("usr/bin").join(package);
        let version = Command::new(&binary).arg("--version").output().unwrap();
        assert!(
            String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
            "{package} --version"
        );
        let unit_path = root.join(format!("usr/lib/systemd/system/{package}.service"));
        let unit = std::fs::read_to_string(&unit_path)
            .unwrap()
            .replace(&format!("/usr/bin/{package}"), binary.to_str().unwrap());
        let unit_path = dir.path().join(format!("{package}.service"));
        std::fs::write(&unit_path, unit).unwrap();
        let (ok, text) = verify(&unit_path);
        assert!(ok && text.trim().is_empty(), "unpacked {package}: {text}");
    }
}
