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

use base64::Engine as _;
use serde_json::{Value, json};

use crate::attestation::verdict::{Rule, Verdict};
use crate::audit::{KeyError, SigningKey};

/// AR4SI trustworthiness tiers (draft-ietf-rats-ar4si): 2 affirming, 96 contraindicated,
/// 0 no claim.
const AFFIRMING: i64 = 2;
const CONTRAINDICATED: i64 = 96;
const NO_CLAIM: i64 = 0;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The EAR claims for one appraisal.
pub fn ear_claims(device_id: &str, nonce: &[u8], verdict: &Verdict, issued_at: i64) -> Value {
    let failed = |rules: &[Rule]| verdict.failures().iter().any(|f| rules.contains(&f.rule));
    let identity_broken = failed(&[
        Rule::QuoteWellFormed,
        Rule::QuoteSignature,
        Rule::QuoteSigner,
        Rule::QuoteMagicAndType,
        Rule::Nonce,
        Rule::ChallengeAnswered,
    ]);
    let instance_identity = if identity_broken {
        CONTRAINDICATED
    } else {
        AFFIRMING
    };
    // The TPM's genuineness was established at enrollment (EK chain) and is re-proven by each
    // quote the enrolled AK signs.
    let hardware = if identity_broken { NO_CLAIM } else { AFFIRMING };
    let executables = if failed(&[
        Rule::BootLogReplay,
        Rule::BootEventRules,
        Rule::BootReferenceValues,
        Rule::ImaReplay,
        Rule::ImaAllowlist,
    ]) {
        CONTRAINDICATED
    } else if verdict.passed() && !verdict.basis.manifests.is_empty() {
        // Boot measurements matched manifests a trusted signer vouched for.
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
    let file_system = if failed(&[Rule::ImaReplay, Rule::ImaAllowlist]) {
        CONTRAINDICATED
    } else {
        NO_CLAIM
    };
    let status = if verdict.passed() {
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
        "trustchain.failed-rules": failed_rules,
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

    #[test]
    fn a_result_is_a_three_part_es256_jwt() {
        let key = SigningKey::generate().unwrap();
        let verdict = Verdict::new();
        let claims = serde_json::to_vec(&ear_claims("tc-1", &[7; 32], &verdict, 1)).unwrap();
        let jwt = sign_jwt(&key, &claims).unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.rsplit('.').next().unwrap())
            .unwrap();
        assert_eq!(signature.len(), 64);
    }
}
