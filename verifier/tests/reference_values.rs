//! Reference values against real evidence: policies learned from every real boot log pass that
//! log and fail it when one boot application changes; Keylime runtime policies and measured-boot
//! reference states convert and judge real lists and logs; Secure Boot and kernel command line
//! rules; and the `trustchain policy` / `manifest` commands' exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use trustchain_verifier::audit::SigningKey;
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::eventlog::{self, EventLog};
use trustchain_verifier::evidence::ima;
use trustchain_verifier::reference::boot::{self, event_subject, is_boot_application};
use trustchain_verifier::reference::documents::BootKind;
use trustchain_verifier::reference::keylime;
use trustchain_verifier::reference::learn::{self, LearnIdentity, Learned};
use trustchain_verifier::reference::policy::SecureBootRule;
use trustchain_verifier::reference::runtime::AggregateCheck;
use trustchain_verifier::reference::{AdmittedManifest, Manifest, Policy, References};
use trustchain_verifier::verdict::{Rule, Verdict};

fn shared(path: &str) -> PathBuf {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata"
    ))
    .join(path);
    assert!(
        path.exists(),
        "testdata {} is missing: ../shared must sit beside the repository",
        path.display()
    );
    path
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keylime"
    ))
    .join(name)
}

/// The logs that are malformed on purpose (see shared/testdata/README.md).
const MALFORMED: [&str; 3] = [
    "keylime__binary_bios_measurements-bogus.bin",
    "keylime__binary_bios_measurements-empty.bin",
    "tpm2-tools__specid-vendordata.bin",
];

/// Every log that parses: (file name, bytes, parsed). Fails if a log other than the known
/// malformed ones does not parse, so no log is skipped silently.
fn parseable_logs() -> Vec<(String, Vec<u8>, EventLog)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(shared("eventlogs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        match eventlog::parse(&bytes) {
            Ok(log) => out.push((name, bytes, log)),
            Err(error) => assert!(
                MALFORMED.contains(&name.as_str()),
                "{name} does not parse: {error}"
            ),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 32,
        "expected the whole testdata set, found {}",
        out.len()
    );
    out
}

fn identity() -> LearnIdentity {
    LearnIdentity {
        supplier: "acme".into(),
        product: "gateway".into(),
        version: "1.0".into(),
        policy_name: "gateways".into(),
    }
}

/// The learned documents as they would be after being written and read back.
fn references(learned: &Learned) -> References {
    let policy = Policy::from_toml(&learned.policy.to_toml().unwrap()).unwrap();
    let manifest: Manifest =
        serde_json::from_str(&serde_json::to_string_pretty(&learned.manifest).unwrap()).unwrap();
    references_from(policy, manifest)
}

fn references_from(policy: Policy, manifest: Manifest) -> References {
    let refs = References::offline(
        policy,
        vec![AdmittedManifest {
            manifest,
            signer: "unsigned".into(),
        }],
        0,
    );
    assert!(refs.passed_over.is_empty(), "{:?}", refs.passed_over);
    refs
}

fn check(log: &EventLog, refs: &References) -> Verdict {
    let bank = refs.policy.boot.bank().unwrap();
    let mut verdict = Verdict::new();
    boot::check(log, bank, refs, &mut verdict);
    verdict
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trustchain"))
}

fn run(command: &mut Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_policy_learned_from_any_real_log_passes_that_log() {
    for (name, bytes, log) in parseable_logs() {
        let learned =
            learn::learn(&bytes, None, &identity()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let refs = references(&learned);
        let verdict = check(&log, &refs);
        assert!(verdict.passed(), "{name}: {}", verdict.summary());
        // The learned bank is sha256 whenever the log has it.
        if log.banks.contains(&HashAlgorithm::Sha256) {
            assert_eq!(learned.policy.boot.required_bank, "sha256", "{name}");
        }
    }
}

#[test]
fn the_cli_learns_and_checks_every_real_log() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _, _) in parseable_logs() {
        let log = shared("eventlogs").join(&name);
        let manifest = dir.path().join(format!("{name}.json"));
        let policy = dir.path().join(format!("{name}.toml"));
        let (code, stdout, stderr) = run(cli()
            .args(["policy", "learn", "--supplier", "acme", "--product", "gw"])
            .args(["--version", "1", "--name", "gw"])
            .arg("--eventlog")
            .arg(&log)
            .arg("--out-manifest")
            .arg(&manifest)
            .arg("--out-policy")
            .arg(&policy));
        assert_eq!(code, 0, "{name}: {stdout}{stderr}");
        let (code, stdout, stderr) = run(cli()
            .args(["policy", "check", "--policy"])
            .arg(&policy)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--eventlog")
            .arg(&log));
        assert_eq!(code, 0, "{name}: {stdout}{stderr}");
        assert!(stdout.contains("PASS"), "{name}: {stdout}");
        assert!(stdout.contains("manifest relied on: acme/gw/1 (signer: unsigned)"));
    }
}

/// Where `event`'s digest in `bank` lies in the raw log: inside its header (PCR, type, digest
/// list), a few hundred bytes at most.
fn digest_position(bytes: &[u8], offset: usize, digest: &[u8]) -> usize {
    let window = &bytes[offset..(offset + 400).min(bytes.len())];
    offset
        + window
            .windows(digest.len())
            .position(|w| w == digest)
            .expect("digest in the event header")
}

#[test]
fn changing_any_boot_application_digest_fails_naming_that_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs_with_applications = 0;
    for (name, bytes, log) in parseable_logs() {
        let learned = learn::learn(&bytes, None, &identity()).unwrap();
        let refs = references(&learned);
        let bank = refs.policy.boot.bank().unwrap();
        let applications: Vec<_> = log
            .events
            .iter()
            .filter(|e| is_boot_application(e) && e.digest(bank).is_some())
            .collect();
        if applications.is_empty() {
            continue;
        }
        logs_with_applications += 1;
        for (n, event) in applications.iter().enumerate() {
            let digest = event.digest(bank).unwrap();
            let at = digest_position(&bytes, event.offset, digest);
            let mut changed = bytes.clone();
            changed[at] ^= 0x01;
            let changed_log = eventlog::parse(&changed).unwrap();
            let verdict = check(&changed_log, &refs);
            let subject = event_subject(event);
            assert_eq!(
                verdict.failures().len(),
                1,
                "{name} {subject}: {}",
                verdict.summary()
            );
            let failure = &verdict.failures()[0];
            assert_eq!(failure.rule, Rule::BootReferenceValues);
            assert_eq!(failure.subject, subject, "{name}");
            let changed_event = &changed_log.events[event.index];
            assert_eq!(
                failure.measured,
                hex::encode(changed_event.digest(bank).unwrap())
            );
            assert!(
                failure
                    .expected
                    .contains("acme/gateway/1.0 (signed by unsigned)")
            );

            // Once per log through the CLI: exit 1, naming the event.
            if n == 0 {
                let manifest = dir.path().join("m.json");
                let policy = dir.path().join("p.toml");
                let log_path = dir.path().join("changed.bin");
                std::fs::write(&manifest, serde_json::to_string(&learned.manifest).unwrap())
                    .unwrap();
                std::fs::write(&policy, learned.policy.to_toml().unwrap()).unwrap();
                std::fs::write(&log_path, &changed).unwrap();
                let (code, stdout, _) = run(cli()
                    .args(["policy", "check", "--policy"])
                    .arg(&policy)
                    .arg("--manifest")
                    .arg(&manifest)
                    .arg("--eventlog")
                    .arg(&log_path));
                assert_eq!(code, 1, "{name}: {stdout}");
                assert!(stdout.contains("FAIL"), "{stdout}");
                assert!(
                    stdout.contains(&format!("rule boot_reference_values: {subject}")),
                    "{name}: {stdout}"
                );
            }
        }
    }
    assert!(logs_with_applications >= 20, "{logs_with_applications}");
}

fn sha256_ima_list() -> ima::ImaLog {
    let bytes =
        std::fs::read(shared("ima/keylime__create-runtime-policy__ima-log-sha256")).unwrap();
    ima::parse(&bytes).unwrap()
}

fn ima_check(refs: &References, list: &ima::ImaLog) -> Verdict {
    let mut verdict = Verdict::new();
    refs.allowlist
        .check(list, AggregateCheck::NotChecked, &mut verdict);
    verdict
}

#[test]
fn a_keylime_runtime_policy_judges_a_real_ima_list() {
    let imported =
        keylime::import_runtime_policy(&std::fs::read(fixture("runtime_policy.json")).unwrap())
            .unwrap();
    assert_eq!(imported.runtime.len(), 3);
    assert_eq!(imported.log_hash_alg.as_deref(), Some("sha1"));
    let learned = keylime::draft(&identity(), Some(imported), None).unwrap();
    assert!(learned.policy.ima.enforce_allowlist);
    let list = sha256_ima_list();

    let refs = references(&learned);
    let verdict = ima_check(&refs, &list);
    assert!(verdict.passed(), "{}", verdict.summary());

    // Excludes are anchored at the start, as Keylime's re.match is.
    assert!(refs.allowlist.excluded("/tmp/x"));
    assert!(!refs.allowlist.excluded("/home/tmp/x"));

    // One digest removed: the entry fails, naming the file.
    let mut manifest = learned.manifest.clone();
    manifest.runtime.remove("/data");
    let refs = references_from(learned.policy.clone(), manifest.clone());
    let verdict = ima_check(&refs, &list);
    assert_eq!(verdict.failures().len(), 1, "{}", verdict.summary());
    let failure = &verdict.failures()[0];
    assert_eq!(failure.rule, Rule::ImaAllowlist);
    assert_eq!(failure.subject, "IMA entry 1 (/data)");
    assert_eq!(
        failure.measured,
        "sha256:96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754"
    );
    assert_eq!(
        failure.expected,
        "a file on the allowlist (no digest is listed for this path)"
    );

    // Another digest for the path: the failure lists the allowed one.
    manifest.runtime.insert(
        "/data".into(),
        vec!["sha256:0000000000000000000000000000000000000000000000000000000000000002".into()],
    );
    let refs = references_from(learned.policy.clone(), manifest.clone());
    let verdict = ima_check(&refs, &list);
    assert_eq!(
        verdict.failures()[0].expected,
        "sha256:0000000000000000000000000000000000000000000000000000000000000002"
    );

    // Excluded: passes again.
    let mut policy = learned.policy.clone();
    policy.ima.excludes.push("^/data$".into());
    let refs = references_from(policy, manifest);
    assert!(ima_check(&refs, &list).passed());
}

#[test]
fn a_keylime_measured_boot_reference_state_converts_and_passes_its_log() {
    let imported =
        keylime::import_mb_refstate(&std::fs::read(fixture("mb_refstate.json")).unwrap()).unwrap();
    let kinds = |kind: BootKind| {
        imported
            .boot
            .events
            .iter()
            .filter(|m| m.kind == kind)
            .count()
    };
    assert_eq!(kinds(BootKind::BootApplication), 3);
    assert_eq!(kinds(BootKind::FirmwareBlob), 2);
    assert_eq!(imported.boot.secure_boot, Some(true));
    assert_eq!(
        imported.boot.kernel_cmdlines,
        vec![
            "(hd0,gpt2)/vmlinuz-5.14.0-183.el9.x86_64 root=/dev/mapper/cs-root ro \
             crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/cs-swap \
             rd.lvm.lv=cs/root rd.lvm.lv=cs/swap rhgb quiet"
                .to_string()
        ]
    );
    for list in ["pk:", "kek:", "db:"] {
        assert!(
            imported.notes.iter().any(|n| n.starts_with(list)),
            "{list} {:?}",
            imported.notes
        );
    }

    let mut learned = keylime::draft(&identity(), None, Some(imported)).unwrap();
    assert_eq!(learned.policy.boot.secure_boot, SecureBootRule::Required);
    assert!(learned.policy.boot.check_firmware_blobs);
    assert!(learned.policy.boot.kernel_cmdline.match_manifest);
    let bytes = std::fs::read(shared("eventlogs/keylime__mb_log.bin")).unwrap();
    let log = eventlog::parse(&bytes).unwrap();
    // Keylime reference states list no option ROMs, and checking firmware blobs checks every
    // event of PCRs 0 and 2 (issue 20, item 4): the operator adds the machine's driver.
    add_option_roms(&mut learned.manifest, &log);
    let refs = references(&learned);
    let verdict = check(&log, &refs);
    assert!(verdict.passed(), "{}", verdict.summary());

    // Another machine's log: its boot applications are not the reference state's.
    let other = eventlog::parse(
        &std::fs::read(shared("eventlogs/tpm2-tools__event-moklisttrusted.bin")).unwrap(),
    )
    .unwrap();
    assert!(!check(&other, &refs).passed());
}

#[test]
fn the_cli_imports_keylime_documents_and_checks_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.json");
    let policy = dir.path().join("p.toml");
    let (code, stdout, stderr) = run(cli()
        .args([
            "policy",
            "import-keylime",
            "--supplier",
            "centos",
            "--product",
            "stream9",
        ])
        .args(["--version", "5.14.0-183", "--name", "centos"])
        .arg("--runtime-policy")
        .arg(fixture("runtime_policy.json"))
        .arg("--mb-refstate")
        .arg(fixture("mb_refstate.json"))
        .arg("--out-manifest")
        .arg(&manifest)
        .arg("--out-policy")
        .arg(&policy));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("note: pk: 1 signature(s) not converted"),
        "{stdout}"
    );
    // As above: the operator adds the machine's option ROM to the imported manifest.
    let log =
        eventlog::parse(&std::fs::read(shared("eventlogs/keylime__mb_log.bin")).unwrap()).unwrap();
    let mut imported: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    add_option_roms(&mut imported, &log);
    std::fs::write(&manifest, serde_json::to_vec_pretty(&imported).unwrap()).unwrap();
    let (code, stdout, stderr) = run(cli()
        .args(["policy", "check", "--json", "--policy"])
        .arg(&policy)
        .arg("--manifest")
        .arg(&manifest)
        .arg("--eventlog")
        .arg(shared("eventlogs/keylime__mb_log.bin"))
        .arg("--ima")
        .arg(shared("ima/keylime__create-runtime-policy__ima-log-sha256")));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["passed"], true);
    assert_eq!(out["manifests"][0]["id"], "centos/stream9/5.14.0-183");

    // Neither source: a usage error.
    let (code, _, _) = run(cli()
        .args([
            "policy",
            "import-keylime",
            "--supplier",
            "a",
            "--product",
            "b",
        ])
        .args(["--version", "1", "--out-manifest"])
        .arg(&manifest));
    assert_ne!(code, 0);
}

/// Adds the log's PCR 2 driver images (option ROMs) to the manifest, as an operator would after
/// a Keylime import (Keylime reference states do not list them).
fn add_option_roms(manifest: &mut Manifest, log: &EventLog) {
    for event in log
        .events
        .iter()
        .filter(|e| e.pcr == 2 && boot::is_driver(e))
    {
        manifest
            .boot
            .events
            .push(trustchain_verifier::reference::documents::BootMeasurement {
                pcr: 2,
                kind: BootKind::BootApplication,
                description: "option ROM".into(),
                digests: [(
                    "sha256".to_string(),
                    hex::encode(event.digest(HashAlgorithm::Sha256).unwrap()),
                )]
                .into(),
            });
    }
}

fn learned_from(name: &str) -> (EventLog, Learned) {
    let bytes = std::fs::read(shared(&format!("eventlogs/{name}"))).unwrap();
    let learned = learn::learn(&bytes, None, &identity()).unwrap();
    (eventlog::parse(&bytes).unwrap(), learned)
}

#[test]
fn secure_boot_required_fails_on_logs_without_it() {
    // Secure Boot off (SecureBoot = 0).
    let (log, mut learned) = learned_from("go-tpm-tools__ubuntu-2104-no-secure-boot.bin");
    assert_eq!(learned.policy.boot.secure_boot, SecureBootRule::Optional);
    assert!(check(&log, &references(&learned)).passed());
    learned.policy.boot.secure_boot = SecureBootRule::Required;
    let verdict = check(&log, &references(&learned));
    assert_eq!(verdict.failures().len(), 1, "{}", verdict.summary());
    let failure = &verdict.failures()[0];
    assert!(failure.detail.contains("shows it off"), "{failure}");
    assert!(
        failure
            .subject
            .contains("PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG")
    );
    assert_eq!(failure.measured, "SecureBoot = 00");

    // No SecureBoot variable event at all.
    let (log, mut learned) = learned_from("tpm2-tools__event.bin");
    learned.policy.boot.secure_boot = SecureBootRule::Required;
    let verdict = check(&log, &references(&learned));
    assert!(!verdict.passed());
    assert!(
        verdict.failures()[0]
            .detail
            .contains("no SecureBoot variable")
    );

    // On: a learned policy requires it, and it holds.
    let (log, learned) = learned_from("keylime__binary_bios_measurements-secureboot.bin");
    assert_eq!(learned.policy.boot.secure_boot, SecureBootRule::Required);
    assert!(check(&log, &references(&learned)).passed());
}

#[test]
fn kernel_command_line_rules_on_real_logs() {
    let (log, learned) = learned_from("keylime__mb_log.bin");
    let mut policy = learned.policy.clone();
    policy.boot.kernel_cmdline.forbid = vec!["crashkernel=".into()];
    let refs = references_from(policy, learned.manifest.clone());
    let verdict = check(&log, &refs);
    assert_eq!(verdict.failures().len(), 1, "{}", verdict.summary());
    assert_eq!(verdict.failures()[0].subject, "event 97 (PCR 8, EV_IPL)");
    assert!(verdict.failures()[0].measured.contains("crashkernel="));

    let mut policy = learned.policy.clone();
    policy.boot.kernel_cmdline.require = vec!["rhgb".into(), "ro".into()];
    assert!(
        check(
            &log,
            &references_from(policy.clone(), learned.manifest.clone())
        )
        .passed()
    );
    policy
        .boot
        .kernel_cmdline
        .require
        .push("lockdown=confidentiality".into());
    assert!(!check(&log, &references_from(policy, learned.manifest.clone())).passed());

    // Another command line than the manifest's.
    let mut manifest = learned.manifest.clone();
    manifest.boot.kernel_cmdlines = vec!["(hd0,gpt2)/vmlinuz root=/dev/sda1".into()];
    let verdict = check(&log, &references_from(learned.policy.clone(), manifest));
    assert_eq!(verdict.failures().len(), 1);
    assert!(verdict.failures()[0].expected.contains("acme/gateway/1.0"));

    // systemd-boot's UTF-16 command line in PCR 12.
    let (log, learned) = learned_from("tpm2-tools__event-sd-boot-fedora37.bin");
    assert_eq!(
        learned.manifest.boot.kernel_cmdlines,
        vec![" console=ttyS0 console=tty0 efi=debug ".to_string()]
    );
    let mut policy = learned.policy.clone();
    policy.boot.kernel_cmdline.forbid = vec!["efi=debug".into()];
    assert!(!check(&log, &references_from(policy, learned.manifest.clone())).passed());

    // Rules, and a log without a command line: fails closed.
    let (log, learned) = learned_from("go-attestation__crypto_agile_eventlog.bin");
    assert!(learned.manifest.boot.kernel_cmdlines.is_empty());
    let mut policy = learned.policy.clone();
    policy.boot.kernel_cmdline.forbid = vec!["init=".into()];
    let verdict = check(&log, &references_from(policy, learned.manifest));
    assert_eq!(verdict.failures().len(), 1);
    assert!(
        verdict.failures()[0]
            .detail
            .contains("no kernel command line")
    );
}

#[test]
fn learning_with_an_ima_list_allows_exactly_that_list() {
    let bytes = std::fs::read(shared("eventlogs/keylime__mb_log.bin")).unwrap();
    let ima_bytes = std::fs::read(shared(
        "ima/keylime__archive_ima__ascii_runtime_measurements",
    ))
    .unwrap();
    let learned = learn::learn(&bytes, Some(&ima_bytes), &identity()).unwrap();
    let list = ima::parse(&ima_bytes).unwrap();
    let refs = references(&learned);
    assert!(ima_check(&refs, &list).passed());
    // Any one file removed fails exactly that file's entries.
    let path = learned.manifest.runtime.keys().nth(10).unwrap().clone();
    let mut manifest = learned.manifest.clone();
    manifest.runtime.remove(&path);
    let verdict = ima_check(&references_from(learned.policy.clone(), manifest), &list);
    assert!(!verdict.passed());
    assert!(
        verdict
            .failures()
            .iter()
            .all(|f| f.subject.ends_with(&format!("({path})")))
    );
}

fn write_key(dir: &Path) -> (PathBuf, String) {
    let key = SigningKey::generate().unwrap();
    let path = dir.join("supplier.pkcs8");
    std::fs::write(&path, key.pkcs8()).unwrap();
    (path, key.public_hex())
}

#[test]
fn cli_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = shared("eventlogs/keylime__mb_log.bin");

    // manifest create from a log, sign, inspect.
    let manifest = d.join("m.json");
    let (code, stdout, stderr) = run(cli()
        .args([
            "manifest",
            "create",
            "--supplier",
            "acme",
            "--product",
            "gateway",
        ])
        .args(["--version", "1.0", "--from-eventlog"])
        .arg(&log)
        .args([
            "--boot-app",
            "sha256:cb994b400590b66cbf55fc663555caf0d4f1ce267464d0452c2361e05ee1cd50",
        ])
        .args(["--description", "shim"])
        .args([
            "--file",
            "/usr/bin/true=sha256:96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754",
        ])
        .arg("--out")
        .arg(&manifest));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (key, public) = write_key(d);
    let jws = d.join("m.jws");
    let (code, stdout, stderr) = run(cli()
        .args(["manifest", "sign", "--key"])
        .arg(&key)
        .arg("--in")
        .arg(&manifest)
        .arg("--out")
        .arg(&jws));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, _) = run(cli()
        .args(["manifest", "inspect"])
        .arg(&jws)
        .args(["--public-key", &public]));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("signature: valid"), "{stdout}");
    assert!(stdout.contains("\"supplier\": \"acme\""));
    let (code, stdout, _) = run(cli().args(["manifest", "inspect"]).arg(&jws));
    assert_eq!(code, 0);
    assert!(stdout.contains("signature: not checked"));
    let stranger = SigningKey::generate().unwrap().public_hex();
    let (code, stdout, _) = run(cli()
        .args(["manifest", "inspect"])
        .arg(&jws)
        .args(["--public-key", &stranger]));
    assert_eq!(code, 1);
    assert!(stdout.contains("signature: INVALID"), "{stdout}");

    // A policy check relying on the signed manifest (opened without a key).
    let learned = learn::learn(&std::fs::read(&log).unwrap(), None, &identity()).unwrap();
    let policy = d.join("p.toml");
    std::fs::write(&policy, learned.policy.to_toml().unwrap()).unwrap();
    let (code, stdout, stderr) = run(cli()
        .args(["policy", "check", "--policy"])
        .arg(&policy)
        .arg("--manifest")
        .arg(&jws)
        .arg("--eventlog")
        .arg(&log));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("(signature not checked)"), "{stdout}");

    // No manifest: every boot application fails; exit 1.
    let (code, stdout, _) = run(cli()
        .args(["policy", "check", "--policy"])
        .arg(&policy)
        .arg("--eventlog")
        .arg(&log));
    assert_eq!(code, 1);
    assert!(
        stdout.contains("no manifest lists boot application digests"),
        "{stdout}"
    );

    // Malformed input: one line on stderr, exit 1.
    let junk = d.join("junk");
    std::fs::write(&junk, b"name = [\n").unwrap();
    for args in [
        vec![
            "policy",
            "check",
            "--policy",
            junk.to_str().unwrap(),
            "--eventlog",
            log.to_str().unwrap(),
        ],
        vec![
            "policy",
            "check",
            "--policy",
            policy.to_str().unwrap(),
            "--eventlog",
            junk.to_str().unwrap(),
        ],
        vec![
            "policy",
            "check",
            "--policy",
            policy.to_str().unwrap(),
            "--eventlog",
            log.to_str().unwrap(),
            "--manifest",
            junk.to_str().unwrap(),
        ],
        vec![
            "manifest",
            "sign",
            "--key",
            junk.to_str().unwrap(),
            "--in",
            manifest.to_str().unwrap(),
            "--out",
            d.join("x").to_str().unwrap(),
        ],
        vec![
            "manifest",
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--in",
            policy.to_str().unwrap(),
            "--out",
            d.join("x").to_str().unwrap(),
        ],
        vec!["manifest", "inspect", junk.to_str().unwrap()],
        vec![
            "policy",
            "import-keylime",
            "--runtime-policy",
            junk.to_str().unwrap(),
            "--supplier",
            "a",
            "--product",
            "b",
            "--version",
            "1",
            "--out-manifest",
            d.join("x").to_str().unwrap(),
        ],
    ] {
        let (code, stdout, stderr) = run(cli().args(&args));
        assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}

#[test]
fn the_documented_example_policy_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policy.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let policy = Policy::from_toml(&text).unwrap();
    assert_eq!(policy.boot.secure_boot, SecureBootRule::Required);
    assert!(!policy.components.is_empty());
    assert!(!policy.ima.excludes.is_empty());
    assert!(policy.components.iter().any(|c| c.until.is_some()));
}
