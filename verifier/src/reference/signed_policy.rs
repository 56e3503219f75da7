//! Signed policies: a policy travels as a JWS like a manifest (`typ` [`POLICY_TYPE`]), its
//! payload the policy's TOML text, signed by a key the active trust list admits as a
//! `policy_signers` entry. With `require_signed_policies` on (the default), an unsigned policy is
//! refused; with it off, unsigned TOML is still taken, and a signed one must verify all the same.
//!
//! The signature is checked at import; the stored document keeps it (for the audit trail), and
//! a stored policy is read back from its payload.

use serde::{Deserialize, Serialize};

use super::documents::TrustList;
use super::policy::{Policy, PolicyError};
use super::signed::{self, POLICY_TYPE, SignedError};
use crate::audit::SigningKey;

/// The `kind` of a signed policy's payload.
pub const SIGNED_POLICY_KIND: &str = "trustchain.signed-policy.v1";

/// The payload of a signed policy: the policy exactly as written (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    pub kind: String,
    pub policy_toml: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicySignatureError {
    #[error(
        "the policy is not signed, and this verifier requires signed policies \
         (require_signed_policies): sign it with `trustchain policy sign`"
    )]
    Unsigned,
    #[error("no trust list is active, so no policy signer is admitted")]
    NoTrustList,
    #[error(
        "the policy is signed with key {kid}, which the active trust list does not admit as a policy signer"
    )]
    UnknownSigner { kid: String },
    #[error("signed policy: {0}")]
    Signature(#[from] SignedError),
    #[error("signed policy: payload kind is {found:?}, expected {SIGNED_POLICY_KIND:?}")]
    Kind { found: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A policy admitted for import: its TOML text and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedPolicy {
    pub text: String,
    /// The trust list's policy-signer name, or `None` for an unsigned policy.
    pub signer: Option<String>,
}

/// Whether `document` is a JWS (three base64url parts) rather than TOML text: a TOML policy
/// always holds `=`, which base64url never does.
pub fn is_signed(document: &str) -> bool {
    let document = document.trim();
    document.split('.').count() == 3
        && document
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Signs a policy's TOML text (checked first: a policy that would be refused is not signed).
pub fn sign(policy_toml: &str, key: &SigningKey) -> Result<String, PolicySignatureError> {
    Policy::from_toml(policy_toml)?;
    let payload = SignedPolicy {
        kind: SIGNED_POLICY_KIND.into(),
        policy_toml: policy_toml.to_string(),
    };
    Ok(signed::sign(&payload, POLICY_TYPE, key)?)
}

/// The policy text `document` carries, if it may be imported under `list` (the active trust
/// list): signed by one of its policy signers, or unsigned when signatures are not `required`.
pub fn admit(
    document: &str,
    list: Option<&TrustList>,
    required: bool,
) -> Result<AdmittedPolicy, PolicySignatureError> {
    if !is_signed(document) {
        if required {
            return Err(PolicySignatureError::Unsigned);
        }
        return Ok(AdmittedPolicy {
            text: document.to_string(),
            signer: None,
        });
    }
    let opened = signed::open(document)?;
    if opened.header.typ != POLICY_TYPE {
        return Err(SignedError::WrongType {
            found: opened.header.typ.clone(),
            expected: POLICY_TYPE.into(),
        }
        .into());
    }
    let list = list.ok_or(PolicySignatureError::NoTrustList)?;
    let signer = list
        .policy_signers
        .iter()
        .find(|s| {
            signed::public_key_from_hex(&s.public_key)
                .is_ok_and(|key| signed::key_id(&key) == opened.header.kid)
        })
        .ok_or_else(|| PolicySignatureError::UnknownSigner {
            kid: opened.header.kid.clone(),
        })?;
    let key = signed::public_key_from_hex(&signer.public_key)?;
    let payload: SignedPolicy = opened.verify(POLICY_TYPE, &key)?;
    if payload.kind != SIGNED_POLICY_KIND {
        return Err(PolicySignatureError::Kind {
            found: payload.kind,
        });
    }
    Ok(AdmittedPolicy {
        text: payload.policy_toml,
        signer: Some(signer.name.clone()),
    })
}

/// The policy text of a stored document (its signature was checked when it was imported).
pub fn stored_text(document: &str) -> Result<String, PolicySignatureError> {
    if !is_signed(document) {
        return Ok(document.to_string());
    }
    let payload: SignedPolicy = signed::open(document)?.payload_unchecked()?;
    if payload.kind != SIGNED_POLICY_KIND {
        return Err(PolicySignatureError::Kind {
            found: payload.kind,
        });
    }
    Ok(payload.policy_toml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::documents::PolicySigner;

    const POLICY: &str = "name = \"gateways\"\nversion = 1\n";

    fn list(signer: &SigningKey) -> TrustList {
        TrustList {
            policy_signers: vec![PolicySigner {
                name: "policy-office".into(),
                public_key: signer.public_hex(),
            }],
            ..TrustList::empty(1)
        }
    }

    #[test]
    fn unsigned_is_refused_when_required_and_signed_must_verify_either_way() {
        let key = SigningKey::generate().unwrap();
        let trusted = list(&key);
        assert!(!is_signed(POLICY));
        assert!(matches!(
            admit(POLICY, Some(&trusted), true),
            Err(PolicySignatureError::Unsigned)
        ));
        assert_eq!(admit(POLICY, None, false).unwrap().signer, None);
        let document = sign(POLICY, &key).unwrap();
        assert!(is_signed(&document));
        let admitted = admit(&document, Some(&trusted), true).unwrap();
        assert_eq!(
            (admitted.text.as_str(), admitted.signer.as_deref()),
            (POLICY, Some("policy-office"))
        );
        assert_eq!(stored_text(&document).unwrap(), POLICY);
        let stranger = SigningKey::generate().unwrap();
        let other = sign(POLICY, &stranger).unwrap();
        for required in [true, false] {
            assert!(matches!(
                admit(&other, Some(&trusted), required),
                Err(PolicySignatureError::UnknownSigner { .. })
            ));
        }
        assert!(matches!(
            admit(&document, None, true),
            Err(PolicySignatureError::NoTrustList)
        ));
        // A manifest-typed JWS is not a policy.
        let manifest = signed::sign(&serde_json::json!({}), signed::MANIFEST_TYPE, &key).unwrap();
        assert!(matches!(
            admit(&manifest, Some(&trusted), true),
            Err(PolicySignatureError::Signature(
                SignedError::WrongType { .. }
            ))
        ));
    }
}
