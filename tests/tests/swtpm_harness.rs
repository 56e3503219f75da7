//! The swtpm harness itself, on real swtpm processes: boots replay, EK certificates chain to the
//! right maker, resets behave like a power cycle, a locality-3 startup really starts PCR 0 at 3,
//! IMA extends PCR 10, tamper helpers tamper. Needs swtpm and tpm2-tools (`tpm2_eventlog`, an
//! independent log parser); fails, never skips, without them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::process::Command;

use trustchain_swtpm::{Bank, BootProfile, EkKind, SwtpmDevice, TestMakers};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// PCR values `tpm2_eventlog` (tpm2-tools, an independent parser) computes for a log file.
fn tpm2_eventlog_pcrs(path: &std::path::Path) -> BTreeMap<String, BTreeMap<u32, Vec<u8>>> {
    let output = Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .expect("tpm2_eventlog (tpm2-tools) must be installed: run scripts/setup.sh");
    assert!(
        output.status.success(),
        "tpm2_eventlog failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut banks = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_pcrs = false;
    for line in text.lines() {
        if line.starts_with("pcrs:") {
            in_pcrs = true;
            continue;
        }
        if !in_pcrs {
            continue;
        }
        let trimmed = line.trim();
        if let Some(bank) = trimmed.strip_suffix(':') {
            current = Some(bank.to_string());
            banks.insert(bank.to_string(), BTreeMap::new());
        } else if let (Some(bank), Some((index, value))) = (&current, trimmed.split_once(':')) {
            let value = hex::decode(value.trim().trim_start_matches("0x")).unwrap();
            banks
                .get_mut(bank)
                .unwrap()
                .insert(index.trim().parse().unwrap(), value);
        }
    }
    banks
}

fn profiles() -> Vec<BootProfile> {
    let base = BootProfile::default_linux();
    vec![
        base.clone(),
        base.clone().with_banks(&[Bank::Sha256, Bank::Sha1]),
        base.clone().with_kernel(b"vmlinuz-6.6.0-other"),
        base.clone().with_secure_boot(false),
        base.clone()
            .with_kernel_cmdline("/vmlinuz root=/dev/sdb1 ro init=/bin/sh"),
        base.clone()
            .with_firmware(b"firmware volume: vendor build 2"),
        base.clone()
            .with_banks(&[Bank::Sha1, Bank::Sha256])
            .with_kernel(b"k2"),
        base,
    ]
}

#[test]
fn eight_devices_boot_in_parallel_and_their_pcrs_match_tpm2_eventlog() {
    let makers = TestMakers::generate().unwrap();
    let maker = &makers.trusted;
    std::thread::scope(|scope| {
        let handles: Vec<_> = profiles()
            .into_iter()
            .enumerate()
            .map(|(i, profile)| {
                scope.spawn(move || {
                    let mut device = SwtpmDevice::start(maker, &format!("device-{i}")).unwrap();
                    device.boot(&profile).unwrap();
                    let reference = tpm2_eventlog_pcrs(&device.event_log_path());
                    for bank in &profile.banks {
                        let expected = &reference[bank.name()];
                        let indices: Vec<u32> = expected.keys().copied().collect();
                        assert!(
                            indices.contains(&4) && indices.contains(&7),
                            "{bank:?}: {indices:?}"
                        );
                        let actual = device.read_pcrs(*bank, &indices).unwrap();
                        assert_eq!(&actual, expected, "device {i} bank {}", bank.name());
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
}

fn key_material(cert: &X509Certificate<'_>) -> Vec<u8> {
    match cert.public_key().parsed().unwrap() {
        PublicKey::RSA(rsa) => rsa
            .modulus
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect(),
        PublicKey::EC(point) => point.data().to_vec(),
        other => panic!("unexpected key {other:?}"),
    }
}

fn tpm_key_material(public: &tss_esapi::structures::Public) -> Vec<u8> {
    match public {
        tss_esapi::structures::Public::Rsa { unique, .. } => unique.value().to_vec(),
        tss_esapi::structures::Public::Ecc { unique, .. } => {
            let mut point = vec![0x04];
            point.extend_from_slice(unique.x().value());
            point.extend_from_slice(unique.y().value());
            point
        }
        other => panic!("unexpected EK {other:?}"),
    }
}

#[test]
fn ek_certificates_chain_to_the_test_maker_not_the_rogue_and_match_the_tpm_key() {
    let makers = TestMakers::generate().unwrap();
    let device = SwtpmDevice::start(&makers.trusted, "chain").unwrap();
    let (_, root) = X509Certificate::from_der(makers.trusted.root_der()).unwrap();
    let (_, intermediate) = X509Certificate::from_der(makers.trusted.intermediate_der()).unwrap();
    let (_, rogue_root) = X509Certificate::from_der(makers.rogue.root_der()).unwrap();
    let (_, rogue_intermediate) =
        X509Certificate::from_der(makers.rogue.intermediate_der()).unwrap();
    assert!(
        intermediate
            .verify_signature(Some(root.public_key()))
            .is_ok()
    );
    for kind in [EkKind::Rsa2048, EkKind::EccP256] {
        let der = device.ek_certificate_der(kind).unwrap();
        let (_, ek) = X509Certificate::from_der(&der).unwrap();
        assert!(
            ek.verify_signature(Some(intermediate.public_key())).is_ok(),
            "{kind:?}"
        );
        assert!(
            ek.verify_signature(Some(rogue_intermediate.public_key()))
                .is_err(),
            "{kind:?}"
        );
        assert!(
            ek.verify_signature(Some(rogue_root.public_key())).is_err(),
            "{kind:?}"
        );
        assert_eq!(ek.issuer(), intermediate.subject());
        assert_eq!(
            ek.public_key().raw,
            device.ek_spki_der(kind).unwrap().as_slice(),
            "{kind:?}: SubjectPublicKeyInfo is the TPM's EK"
        );
        let san = ek.subject_alternative_name().unwrap().expect("TCG SAN");
        let manufacturer = san
            .value
            .general_names
            .iter()
            .find_map(|name| match name {
                GeneralName::DirectoryName(dn) => dn
                    .iter_attributes()
                    .find(|a| a.attr_type().to_id_string() == "2.23.133.2.1")
                    .and_then(|a| a.as_str().ok().map(str::to_string)),
                _ => None,
            })
            .expect("tpmManufacturer attribute");
        assert!(manufacturer.starts_with("id:"), "{manufacturer}");
        let in_tpm = device.ek_public(kind).unwrap();
        assert_eq!(
            key_material(&ek),
            tpm_key_material(&in_tpm),
            "{kind:?}: EK in TPM == EK in certificate"
        );
    }
}

#[test]
fn reboot_clears_pcrs_advances_reset_count_and_replays_again() {
    let makers = TestMakers::generate().unwrap();
    let mut device = SwtpmDevice::start(&makers.trusted, "reboot").unwrap();
    let profile = BootProfile::default_linux();
    device.boot(&profile).unwrap();
    let before = device.reset_count().unwrap();
    let booted = device.read_pcrs(Bank::Sha256, &[0, 4, 7, 10]).unwrap();
    assert!(booted.values().all(|v| v.iter().any(|b| *b != 0)));

    device.reset().unwrap();
    let after_reset = device.reset_count().unwrap();
    assert!(after_reset > before, "resetCount {before} -> {after_reset}");
    let cleared = device.read_pcrs(Bank::Sha256, &[0, 4, 7, 10]).unwrap();
    assert!(
        cleared.values().all(|v| v.iter().all(|b| *b == 0)),
        "PCRs cleared: {cleared:?}"
    );

    device
        .boot(&profile.clone().with_kernel(b"new kernel"))
        .unwrap();
    let reference = tpm2_eventlog_pcrs(&device.event_log_path());
    let indices: Vec<u32> = reference["sha256"].keys().copied().collect();
    assert_eq!(
        device.read_pcrs(Bank::Sha256, &indices).unwrap(),
        reference["sha256"]
    );
    assert_ne!(
        device.read_pcrs(Bank::Sha256, &[4]).unwrap()[&4],
        booted[&4]
    );
}

/// Replays the ASCII IMA log in the test itself: PCR 10 = fold of H(template data), where the
/// template data is rebuilt from the line's fields.
fn replay_ima(log: &str, bank: Bank) -> Vec<u8> {
    let mut pcr = vec![0u8; bank.size()];
    for line in log.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[2], "ima-ng");
        let (alg, digest) = fields[3].split_once(':').unwrap();
        let mut d = format!("{alg}:").into_bytes();
        d.push(0);
        d.extend(hex::decode(digest).unwrap());
        let mut n = fields[4].as_bytes().to_vec();
        n.push(0);
        let mut template = Vec::new();
        for field in [d, n] {
            template.extend((field.len() as u32).to_le_bytes());
            template.extend(field);
        }
        assert_eq!(
            hex::encode(Bank::Sha1.hash(&template)),
            fields[1],
            "template hash column"
        );
        pcr = bank.extend(&pcr, &bank.hash(&template));
    }
    pcr
}

#[test]
fn ima_entries_extend_pcr10_to_the_log_replay() {
    let makers = TestMakers::generate().unwrap();
    let mut device = SwtpmDevice::start(&makers.trusted, "ima").unwrap();
    device
        .boot(&BootProfile::default_linux().with_banks(&[Bank::Sha256, Bank::Sha1]))
        .unwrap();
    device.ima_measure("/usr/bin/bash", b"bash binary").unwrap();
    device
        .ima_measure_many(&[
            ("/usr/sbin/sshd".into(), b"sshd".to_vec()),
            ("/etc/passwd".into(), b"root:x".to_vec()),
        ])
        .unwrap();
    let log = std::fs::read_to_string(device.ima_log_path()).unwrap();
    assert_eq!(log.lines().count(), 4, "boot_aggregate + 3 files");
    assert!(log.lines().next().unwrap().ends_with("boot_aggregate"));
    for bank in [Bank::Sha256, Bank::Sha1] {
        assert_eq!(
            device.read_pcrs(bank, &[10]).unwrap()[&10],
            replay_ima(&log, bank),
            "{bank:?}"
        );
    }
}

#[test]
fn tamper_helpers_break_the_match_between_log_and_tpm() {
    let makers = TestMakers::generate().unwrap();
    let mut device = SwtpmDevice::start(&makers.trusted, "tamper").unwrap();
    device.boot(&BootProfile::default_linux()).unwrap();
    let replayed = trustchain_swtpm::boot::replay(device.boot_events(), Bank::Sha256);
    assert_eq!(
        device.read_pcrs(Bank::Sha256, &[4]).unwrap()[&4],
        replayed[&4]
    );

    device.extend_unlisted(4, b"rootkit").unwrap();
    assert_ne!(
        device.read_pcrs(Bank::Sha256, &[4]).unwrap()[&4],
        replayed[&4]
    );

    // Editing the log afterwards: the file now replays to something the TPM never saw.
    device
        .rewrite_boot_log(|events| {
            let kernel = events.iter_mut().rev().find(|e| e.pcr == 4).unwrap();
            kernel.digests = vec![(Bank::Sha256, Bank::Sha256.hash(b"approved kernel"))];
        })
        .unwrap();
    let reference = tpm2_eventlog_pcrs(&device.event_log_path());
    assert_ne!(reference["sha256"][&4], replayed[&4]);
}

#[test]
fn a_forged_kernel_digest_shows_in_pcrs_4_and_9_only() {
    let makers = TestMakers::generate().unwrap();
    let mut device = SwtpmDevice::start(&makers.trusted, "forge").unwrap();
    let profile = BootProfile::default_linux().with_banks(&[Bank::Sha256, Bank::Sha1]);
    device.boot(&profile).unwrap();
    device.forge_logged_kernel(b"vmlinuz-approved").unwrap();
    assert_eq!(
        std::fs::read(device.event_log_path()).unwrap(),
        device.event_log()
    );
    let reference = tpm2_eventlog_pcrs(&device.event_log_path());
    for bank in [Bank::Sha256, Bank::Sha1] {
        let logged = &reference[bank.name()];
        let indices: Vec<u32> = logged.keys().copied().collect();
        let actual = device.read_pcrs(bank, &indices).unwrap();
        for index in indices {
            assert_eq!(
                actual[&index] != logged[&index],
                index == 4 || index == 9,
                "{bank:?} PCR {index}"
            );
        }
    }
}

/// Replays a crypto-agile event log parsed here, independently of the harness (tpm2_eventlog
/// 5.4 ignores StartupLocality): PCR index -> value for `bank`.
fn replay_log_bytes(log: &[u8], bank: Bank) -> BTreeMap<u32, Vec<u8>> {
    let u32_at = |at: usize| u32::from_le_bytes(log[at..at + 4].try_into().unwrap());
    // Header: TCG_PCClientPCREvent (SHA-1 format) whose data is the Spec ID event.
    let mut at = 32 + u32_at(28) as usize;
    let mut pcrs = BTreeMap::new();
    while at < log.len() {
        let (pcr, event_type, count) = (u32_at(at), u32_at(at + 4), u32_at(at + 8));
        at += 12;
        let mut digest = None;
        for _ in 0..count {
            let alg = u16::from_le_bytes([log[at], log[at + 1]]);
            let size = match alg {
                0x0004 => 20,
                0x000b => 32,
                other => panic!("algorithm {other:#x}"),
            };
            if alg == bank.alg_id() {
                digest = Some(log[at + 2..at + 2 + size].to_vec());
            }
            at += 2 + size;
        }
        let data_size = u32_at(at) as usize;
        let data = &log[at + 4..at + 4 + data_size];
        at += 4 + data_size;
        if event_type == 3 {
            if let Some(locality) = data.strip_prefix(b"StartupLocality\0") {
                let mut start = vec![0u8; bank.size()];
                *start.last_mut().unwrap() = locality[0];
                pcrs.insert(0, start);
            }
            continue;
        }
        let old = pcrs.entry(pcr).or_insert_with(|| vec![0u8; bank.size()]);
        *old = bank.extend(old, &digest.expect("digest for the bank"));
    }
    pcrs
}

#[test]
fn startup_locality_3_really_starts_pcr0_at_3() {
    let makers = TestMakers::generate().unwrap();
    let mut device = SwtpmDevice::start(&makers.trusted, "locality").unwrap();
    let profile = BootProfile::default_linux()
        .with_banks(&[Bank::Sha256, Bank::Sha1])
        .with_startup_locality(3);
    device.boot(&profile).unwrap();
    let log = std::fs::read(device.event_log_path()).unwrap();
    for bank in [Bank::Sha256, Bank::Sha1] {
        let replayed = replay_log_bytes(&log, bank);
        let indices: Vec<u32> = replayed.keys().copied().collect();
        assert_eq!(
            device.read_pcrs(bank, &indices).unwrap(),
            replayed,
            "{bank:?}"
        );
        // Without the locality, the same events would give another PCR 0.
        let from_zero = replay_log_bytes(&with_locality_zero(&log), bank);
        assert_ne!(from_zero[&0], replayed[&0]);
    }
    // A reboot into a profile without StartupLocality starts PCR 0 at 0 again.
    device.reboot(&BootProfile::default_linux()).unwrap();
    let reference = tpm2_eventlog_pcrs(&device.event_log_path());
    assert_eq!(
        device.read_pcrs(Bank::Sha256, &[0]).unwrap()[&0],
        reference["sha256"][&0]
    );
    assert!(matches!(
        device.boot(&BootProfile::default_linux().with_startup_locality(2)),
        Err(trustchain_swtpm::HarnessError::Unsupported(_))
    ));
}

/// The same log with its StartupLocality event's locality set to 0.
fn with_locality_zero(log: &[u8]) -> Vec<u8> {
    let marker = b"StartupLocality\0";
    let at = log
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("StartupLocality event in the log");
    let mut out = log.to_vec();
    out[at + marker.len()] = 0;
    out
}
