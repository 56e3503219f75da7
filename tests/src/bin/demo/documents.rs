//! The demo's trust documents, made with the real commands: keys (`trustchain-ca`), a manifest
//! and policy learned from a known-good device and checked offline, the supplier's and the policy
//! office's signatures, and the trust list signed by the authority.

use std::path::{Path, PathBuf};

use trustchain_swtpm::SwtpmDevice;

use super::{INTERVAL_SECONDS, SUPPLIER, binary, path, run};

/// Trust creation and proof with the real commands: keys, a manifest and policy learned from a
/// known-good device, signatures, and a trust list. Returns the files to import.
pub(super) fn trust_documents(
    dir: &Path,
    device: &SwtpmDevice,
    maker_pems: &[(&str, &Path)],
    classes: &[(String, &str)],
) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let ca = binary("trustchain-ca")?;
    let cli = binary("trustchain")?;
    let keys = dir.join("keys");
    run(&ca, &["trust-list-key", "--dir", &path(&keys)])?;
    for name in ["demo-os-vendor", "demo-policy-office"] {
        run(
            &ca,
            &["supplier-key", "--dir", &path(&keys), "--name", name],
        )?;
    }
    let learned = run(
        &cli,
        &[
            "policy",
            "learn",
            "--eventlog",
            &path(&device.event_log_path()),
            "--ima",
            &path(&device.ima_log_path()),
            "--supplier",
            SUPPLIER,
            "--product",
            "gateway-os",
            "--version",
            "1.0",
            "--name",
            "fleet",
            "--out-manifest",
            &path(&dir.join("gateway-os-1.0.json")),
            "--out-policy",
            &path(&dir.join("fleet.toml")),
        ],
    )?;
    for line in learned.lines().filter(|l| !l.trim().is_empty()).take(6) {
        println!("          policy learn: {}", line.trim());
    }
    // The operator reviews the draft and sets the fleet's tier: a 2 s interval for the demo.
    let draft = std::fs::read_to_string(dir.join("fleet.toml"))?;
    let mut policy = trustchain_verifier::reference::Policy::from_toml(&draft)?;
    policy.tier.interval_seconds = Some(INTERVAL_SECONDS);
    policy.tier.evidence =
        Some(trustchain_verifier::reference::policy::EvidenceRequired::BootAndIma);
    policy.tier.on_failure = Some(trustchain_verifier::reference::policy::FailureAction::Alert);
    std::fs::write(dir.join("fleet.toml"), policy.to_toml()?)?;
    // The policy checked offline against the device's logs before the rollout.
    run(
        &cli,
        &[
            "policy",
            "check",
            "--policy",
            &path(&dir.join("fleet.toml")),
            "--eventlog",
            &path(&device.event_log_path()),
            "--ima",
            &path(&device.ima_log_path()),
            "--manifest",
            &path(&dir.join("gateway-os-1.0.json")),
        ],
    )?;
    let mut maker_cas = Vec::new();
    for (name, pem) in maker_pems {
        maker_cas.push(serde_json::json!({
            "name": name,
            "certificate_pem": std::fs::read_to_string(pem)?,
        }));
    }
    let list = serde_json::json!({
        "kind": "trustchain.trust-list.v1",
        "version": 1,
        "issued_at": "2026-11-25T00:00:00Z",
        "maker_cas": maker_cas,
        // Each device admitted by its EK, with the class the operator gives it (the class an
        // agent claims is only a reported fact).
        "devices": classes
            .iter()
            .map(|(ek, class)| serde_json::json!({ "ek_public_sha256": ek, "device_class": class }))
            .collect::<Vec<_>>(),
        "manifest_signers": [{
            "name": "demo-os-vendor",
            "public_key": std::fs::read_to_string(keys.join("demo-os-vendor.pub"))?.trim(),
            "scope": { "suppliers": [SUPPLIER], "products": ["*"] },
        }],
        // Who may sign policies (the verifier requires signed policies by default).
        "policy_signers": [{
            "name": "demo-policy-office",
            "public_key": std::fs::read_to_string(keys.join("demo-policy-office.pub"))?.trim(),
        }],
    });
    std::fs::write(
        dir.join("trust-list.json"),
        serde_json::to_string_pretty(&list)?,
    )?;
    // The signatures, each `trustchain <document> sign`: the manifest by its supplier, the
    // trust list by the authority, the policy by the policy office.
    for (document, key, input, out) in [
        (
            "manifest",
            "demo-os-vendor",
            "gateway-os-1.0.json",
            "gateway-os-1.0.jws",
        ),
        (
            "trust-list",
            "trust-list-authority",
            "trust-list.json",
            "trust-list.jws",
        ),
        ("policy", "demo-policy-office", "fleet.toml", "fleet.jws"),
    ] {
        run(
            &cli,
            &[
                document,
                "sign",
                "--key",
                &path(&keys.join(format!("{key}.pk8"))),
                "--in",
                &path(&dir.join(input)),
                "--out",
                &path(&dir.join(out)),
            ],
        )?;
    }
    Ok((
        dir.join("trust-list.jws"),
        dir.join("gateway-os-1.0.jws"),
        dir.join("fleet.jws"),
    ))
}
