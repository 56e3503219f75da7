//! Signed attestation results in the IETF RATS EAR format (EAT Attestation Result,
//! draft-fv-rats-ear), as a JWT signed ES256 by the verifier's key.
//!
//! The JWT is assembled here (header, claims, ES256 over them with aws-lc-rs) rather than with
//! the `ear` crate, whose build pulls OpenSSL headers into every build of the verifier; the
//! format is small and fixed, and tests check it with an independent JWT library.
//!
//! The trustworthiness vector is filled honestly: a claim is made only where an appraisal rule
//! backs it. Without reference values (no policy, or no admitted manifest), executables,
//! configuration and file system get no affirming claim, only a contraindication when a rule failed.
//! `ear.status` is affirming only when the appraisal passed and the device's standing state
//! after it is trusted; instance identity and hardware are affirmed only when the quote, its
//! signer and the trust list passed; executables only when admitted manifests backed the boot
//! and an enforced allowlist judged every IMA entry of the boot. Every result names the
//! device's standing state and carries an expiry (`exp`).

use base64::Engine as _;
use serde_json::{Value, json};

use crate::audit::{KeyError, SigningKey};
use crate::device::DeviceState;
use crate::verdict::{Rule, Verdict};

/// AR4SI trustworthiness tiers (draft-ietf-rats-ar4si): 2 affirming, 96 contraindicated,
/// 0 no claim.
const AFFIRMING: i64 = 2;
const CONTRAINDICATED: i64 = 96;
const NO_CLAIM: i64 = 0;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What a result says beside the verdict: whose, for which challenge, and where the device stands.
#[derive(Debug, Clone)]
pub struct ResultContext<'a> {
    pub device_id: &'a str,
    pub nonce: &'a [u8],
    /// The device's standing state once this appraisal is recorded: a passing appraisal of a
    /// device that stays untrusted (sticky after an integrity failure) is not affirming.
    pub standing: DeviceState,
    /// Seconds the result holds (`exp` = `iat` + this): the device's interval times the
    /// timeout allowance (`timeout_after_missed_intervals`), after which a silent device is
    /// timed out anyway.
    pub valid_for_seconds: u64,
    /// The fingerprint of the enforced allowlist every IMA entry of the boot was judged under;
    /// `None` when none was applied (no policy, allowlist off, a boot-only tier).
    pub allowlist: Option<&'a str>,
}

/// The EAR claims for one appraisal.
pub fn ear_claims(context: &ResultContext<'_>, verdict: &Verdict, issued_at: i64) -> Value {
    let ResultContext {
        device_id, nonce, ..
    } = *context;
    let failed = |rules: &[Rule]| verdict.failures().iter().any(|f| rules.contains(&f.rule));
    let quote_broken = failed(&[
        Rule::QuoteWellFormed,
        Rule::QuoteSignature,
        Rule::QuoteSigner,
        Rule::QuoteMagicAndType,
        Rule::Nonce,
        Rule::ChannelBinding,
        Rule::ChallengeAnswered,
    ]);
    // The trust list no longer admits the device, its maker CA or its TPM firmware.
    let trust_list_broken = failed(&[Rule::TrustList]);
    let instance_identity = if quote_broken || trust_list_broken {
        CONTRAINDICATED
    } else {
        AFFIRMING
    };
    // The TPM's genuineness was established at enrollment (EK chain) and is re-proven by each
    // quote the enrolled AK signs, while the trust list still admits its maker and firmware.
    let hardware = if trust_list_broken {
        CONTRAINDICATED
    } else if quote_broken {
        NO_CLAIM
    } else {
        AFFIRMING
    };
    let executables = if failed(&[
        Rule::BootLogReplay,
        Rule::BootEventRules,
        Rule::BootReferenceValues,
        Rule::ImaReplay,
        Rule::ImaAllowlist,
        Rule::ImaRejudgement,
    ]) {
        CONTRAINDICATED
    } else if verdict.passed() && !verdict.basis.manifests.is_empty() && context.allowlist.is_some()
    {
        // Boot measurements matched manifests a trusted signer vouched for, and every IMA
        // entry of the boot passed an enforced allowlist.
        AFFIRMING
    } else {
        NO_CLAIM
    };
    let configuration = if failed(&[
        Rule::BootEventRules,
        Rule::ClockMonotonic,
        Rule::ResetHandling,
        Rule::RequiredBank,
        Rule::PcrDigest,
    ]) {
        CONTRAINDICATED
    } else {
        NO_CLAIM
    };
    let file_system = if failed(&[Rule::ImaReplay, Rule::ImaAllowlist, Rule::ImaRejudgement]) {
        CONTRAINDICATED
    } else {
        NO_CLAIM
    };
    let status = if verdict.passed() && context.standing == DeviceState::Trusted {
        "affirming"
    } else {
        "contraindicated"
    };
    let failed_rules: Vec<Value> = verdict
        .failures()
        .iter()
        .map(|f| json!({ "rule": f.rule.name(), "subject": f.subject, "measured": f.measured, "expected": f.expected, "detail": f.detail }))
        .collect();
    let basis = &verdict.basis;
    let policy_id = basis.policy.as_ref().map_or_else(
        || "trustchain:default-rules-v1".to_string(),
        |p| format!("trustchain:policy:{}:v{}", p.name, p.version),
    );
    let manifests: Vec<Value> = basis
        .manifests
        .iter()
        .map(|m| json!({ "id": m.id, "signer": m.signer }))
        .collect();
    json!({
        "eat_profile": "tag:github.com,2023:veraison/ear",
        "iat": issued_at,
        "exp": issued_at.saturating_add(i64::try_from(context.valid_for_seconds).unwrap_or(i64::MAX)),
        "eat_nonce": b64(nonce),
        "ear.verifier-id": { "developer": "TrustChain", "build": concat!("trustchain-verifier ", env!("CARGO_PKG_VERSION")) },
        "submods": {
            device_id: {
                "ear.status": status,
                "ear.trustworthiness-vector": {
                    "instance-identity": instance_identity,
                    "hardware": hardware,
                    "executables": executables,
                    "configuration": configuration,
                    "file-system": file_system,
                },
                "ear.appraisal-policy-id": policy_id,
            }
        },
        "trustchain.device-id": device_id,
        "trustchain.device-state": context.standing.name(),
        "trustchain.allowlist": context.allowlist,
        "trustchain.failed-rules": failed_rules,
        "trustchain.notes": verdict.notes,
        "trustchain.policy-version": policy_id,
        "trustchain.trust-list-version": basis.trust_list_version.map_or_else(|| "none".to_string(), |v| v.to_string()),
        "trustchain.manifests": manifests,
    })
}

/// Signs `claims` as a compact JWS (ES256).
/// Signs EAR claims, given as their JSON encoding (`serde_json::to_vec` of [`ear_claims`]).
pub fn sign_jwt(key: &SigningKey, claims: &[u8]) -> Result<String, KeyError> {
    let header = b64(br#"{"alg":"ES256","typ":"JWT"}"#);
    let payload = b64(claims);
    let signing_input = format!("{header}.{payload}");
    let signature = key.sign_fixed(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64(&signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::verdict::Failure;
    use crate::verdict::ManifestRef;

    fn context(standing: DeviceState, allowlist: Option<&str>) -> ResultContext<'_> {
        ResultContext {
            device_id: "tc-1",
            nonce: &[7; 32],
            standing,
            valid_for_seconds: 30,
            allowlist,
        }
    }

    fn backed() -> Verdict {
        let mut verdict = Verdict::new();
        verdict.basis.manifests = vec![ManifestRef {
            id: "Acme/kernel/6.1".into(),
            signer: "acme".into(),
        }];
        verdict
    }

    fn submod(claims: &Value) -> &Value {
        &claims["submods"]["tc-1"]
    }

    fn vector(claims: &Value, claim: &str) -> i64 {
        submod(claims)["ear.trustworthiness-vector"][claim]
            .as_i64()
            .unwrap()
    }

    #[test]
    fn a_pass_of_a_device_that_stays_untrusted_is_not_affirming() {
        let verdict = backed();
        let trusted = ear_claims(&context(DeviceState::Trusted, Some("ab")), &verdict, 100);
        assert_eq!(submod(&trusted)["ear.status"], "affirming");
        assert_eq!(trusted["trustchain.device-state"], "trusted");
        for standing in [
            DeviceState::Untrusted,
            DeviceState::Quarantined,
            DeviceState::Decommissioned,
        ] {
            let claims = ear_claims(&context(standing, Some("ab")), &verdict, 100);
            assert_eq!(submod(&claims)["ear.status"], "contraindicated");
            assert_eq!(claims["trustchain.device-state"], standing.name());
        }
    }

    #[test]
    fn every_result_carries_an_expiry() {
        let claims = ear_claims(&context(DeviceState::Trusted, None), &Verdict::new(), 100);
        assert_eq!(claims["iat"], 100);
        assert_eq!(claims["exp"], 130);
    }

    #[test]
    fn identity_and_hardware_follow_the_quote_signer_and_trust_list() {
        let claims = ear_claims(&context(DeviceState::Trusted, None), &backed(), 1);
        assert_eq!(vector(&claims, "instance-identity"), AFFIRMING);
        assert_eq!(vector(&claims, "hardware"), AFFIRMING);

        let mut revoked = backed();
        revoked.fail(Failure::new(Rule::TrustList, "maker CA revoked"));
        let claims = ear_claims(&context(DeviceState::Untrusted, None), &revoked, 1);
        assert_eq!(vector(&claims, "instance-identity"), CONTRAINDICATED);
        assert_eq!(vector(&claims, "hardware"), CONTRAINDICATED);

        for rule in [
            Rule::QuoteSigner,
            Rule::QuoteSignature,
            Rule::Nonce,
            Rule::ChannelBinding,
        ] {
            let mut forged = backed();
            forged.fail(Failure::new(rule, "forged"));
            let claims = ear_claims(&context(DeviceState::Untrusted, None), &forged, 1);
            assert_eq!(vector(&claims, "instance-identity"), CONTRAINDICATED);
            assert_ne!(vector(&claims, "hardware"), AFFIRMING);
        }
    }

    #[test]
    fn executables_are_affirmed_only_under_an_applied_allowlist() {
        let with = ear_claims(&context(DeviceState::Trusted, Some("ab")), &backed(), 1);
        assert_eq!(vector(&with, "executables"), AFFIRMING);
        assert_eq!(with["trustchain.allowlist"], "ab");
        // Allowlist off (or no IMA in the tier): no claim, even with manifests behind the boot.
        let without = ear_claims(&context(DeviceState::Trusted, None), &backed(), 1);
        assert_eq!(vector(&without, "executables"), NO_CLAIM);
        assert!(without["trustchain.allowlist"].is_null());
        // No manifests: no claim.
        let bare = ear_claims(
            &context(DeviceState::Trusted, Some("ab")),
            &Verdict::new(),
            1,
        );
        assert_eq!(vector(&bare, "executables"), NO_CLAIM);
        for rule in [Rule::ImaAllowlist, Rule::ImaRejudgement] {
            let mut failed = backed();
            failed.fail(Failure::new(rule, "revoked binary"));
            let claims = ear_claims(&context(DeviceState::Untrusted, Some("ab")), &failed, 1);
            assert_eq!(vector(&claims, "executables"), CONTRAINDICATED);
        }
    }

    #[test]
    fn a_result_is_a_three_part_es256_jwt() {
        let key = SigningKey::generate().unwrap();
        let verdict = Verdict::new();
        let claims = serde_json::to_vec(&ear_claims(
            &context(DeviceState::Trusted, None),
            &verdict,
            1,
        ))
        .unwrap();
        let jwt = sign_jwt(&key, &claims).unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.rsplit('.').next().unwrap())
            .unwrap();
        assert_eq!(signature.len(), 64);
    }
}
