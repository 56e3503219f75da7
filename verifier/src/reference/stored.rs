//! Reading the stored trust documents back, at start and after every import, failing closed.
//!
//! Every accepted version of a trust list and a policy is kept, so an older one is always at
//! hand. Falling back to it when the newest no longer verifies or parses would undo what the
//! newest said (a rollback of revocations, or a device governed by a laxer policy), so the
//! snapshot is not built at all: the verifier refuses to start, naming the document, and an
//! operator restores the configured authority or a backup of the state directory.
//!
//! Also here: the checks every trust list passes at import and again when it is read back
//! (revoked firmware versions are exactly 16 hex digits, normalised to lower case).

use super::documents::{TRUST_LIST_KIND, TrustList};
use super::policy::Policy;
use super::signed::{self, TRUST_LIST_TYPE};
use crate::storage::{DocumentKind, Storage, StorageError};

/// Checks a trust list's contents beyond its signature and normalises what appraisals match
/// exactly: each revoked TPM firmware version (the quote's signed 64-bit firmwareVersion) must be
/// 16 hex digits, an optional `0x` aside, and is kept in lower case without the prefix.
pub fn checked_trust_list(mut list: TrustList) -> Result<TrustList, String> {
    for version in &mut list.revoked.firmware_versions {
        *version = firmware_version(version).ok_or_else(|| {
            format!(
                "revoked firmware version {version:?} is not 16 hex digits (the quote's 64-bit \
                 firmwareVersion, e.g. \"0000000800010002\")"
            )
        })?;
    }
    Ok(list)
}

/// `text` as 16 lower-case hex digits, or None.
fn firmware_version(text: &str) -> Option<String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    (digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_lowercase())
}

fn refused(what: &'static str, detail: String) -> StorageError {
    StorageError::Corrupt {
        what,
        detail: format!(
            "{detail}; refusing to fall back to an older version (it would undo what the newest \
             one says): restore the configured trust_list_authority or a backup of the state \
             directory"
        ),
    }
}

/// The newest stored trust list, which must verify with the configured authority, be a trust
/// list and carry the version it is stored under. None only when none is stored.
pub(super) fn newest_trust_list(
    storage: &dyn Storage,
    authority: Option<&[u8]>,
) -> Result<Option<TrustList>, StorageError> {
    let lists = storage.documents(DocumentKind::TrustList)?;
    let Some((key, jws)) = lists.last() else {
        return Ok(None);
    };
    let stored_version = <[u8; 8]>::try_from(key.as_slice())
        .map(u64::from_be_bytes)
        .map_err(|_| {
            refused(
                "trust list",
                format!("a trust list has the key {}", hex::encode(key)),
            )
        })?;
    let name = format!(
        "trust list v{stored_version} (the newest of {} stored)",
        lists.len()
    );
    let Some(authority) = authority else {
        return Err(refused(
            "trust list",
            format!("{name} is stored but no trust_list_authority is configured to verify it"),
        ));
    };
    let text = std::str::from_utf8(jws)
        .map_err(|_| refused("trust list", format!("{name} is not text")))?;
    let list: TrustList = signed::verify(text, TRUST_LIST_TYPE, authority).map_err(|error| {
        refused(
            "trust list",
            format!("{name} does not verify with the configured authority: {error}"),
        )
    })?;
    if list.kind != TRUST_LIST_KIND || list.version != stored_version {
        return Err(refused(
            "trust list",
            format!(
                "{name} holds a {:?} document of version {}",
                list.kind, list.version
            ),
        ));
    }
    checked_trust_list(list)
        .map(Some)
        .map_err(|problem| refused("trust list", format!("{name}: {problem}")))
}

/// `name\0version` (how policies are stored) for messages; hex when it is not that.
fn policy_key_name(key: &[u8]) -> String {
    let split = key.iter().position(|b| *b == 0);
    match split.map(|at| key.split_at(at)) {
        Some((name, rest)) => match <[u8; 8]>::try_from(rest.get(1..).unwrap_or_default()) {
            Ok(version) => format!(
                "policy {} v{}",
                String::from_utf8_lossy(name).escape_debug(),
                u64::from_be_bytes(version)
            ),
            Err(_) => format!("policy stored under key {}", hex::encode(key)),
        },
        None => format!("policy stored under key {}", hex::encode(key)),
    }
}

/// The latest version of each stored policy, sorted by name. Every stored policy must parse and
/// be the name and version it is stored under: one that does not could be the newest of its name,
/// and skipping it would leave its devices to an older or a default policy.
pub(super) fn latest_policies(
    storage: &dyn Storage,
    limit: usize,
) -> Result<Vec<Policy>, StorageError> {
    let mut policies: Vec<Policy> = Vec::new();
    for (key, text) in storage
        .documents(DocumentKind::Policy)?
        .into_iter()
        .take(limit)
    {
        let name = policy_key_name(&key);
        let text = std::str::from_utf8(&text)
            .map_err(|_| refused("policy", format!("stored {name} is not text")))?;
        let text = super::signed_policy::stored_text(text).map_err(|error| {
            refused("policy", format!("stored {name} no longer opens: {error}"))
        })?;
        let policy = Policy::from_toml(&text).map_err(|error| {
            refused("policy", format!("stored {name} no longer parses: {error}"))
        })?;
        let mut expected = policy.name.clone().into_bytes();
        expected.push(0);
        expected.extend_from_slice(&policy.version.to_be_bytes());
        if expected != key {
            return Err(refused(
                "policy",
                format!(
                    "stored {name} holds policy {:?} v{}",
                    policy.name, policy.version
                ),
            ));
        }
        match policies.iter_mut().find(|p| p.name == policy.name) {
            Some(existing) if existing.version < policy.version => *existing = policy,
            Some(_) => {}
            None => policies.push(policy),
        }
    }
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(policies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::documents::Revocations;

    fn list(firmware_versions: &[&str]) -> TrustList {
        TrustList {
            revoked: Revocations {
                firmware_versions: firmware_versions.iter().map(|v| v.to_string()).collect(),
                ..Revocations::default()
            },
            ..TrustList::empty(1)
        }
    }

    #[test]
    fn revoked_firmware_versions_are_normalised_to_sixteen_lower_case_hex_digits() {
        let checked =
            checked_trust_list(list(&["0x00000008000100AB", "00000008000100cd"])).unwrap();
        assert_eq!(
            checked.revoked.firmware_versions,
            vec!["00000008000100ab", "00000008000100cd"]
        );
    }

    #[test]
    fn a_revoked_firmware_version_that_is_not_sixteen_hex_digits_is_refused() {
        for bad in [
            "8000100ab",
            "0000000800010002 ",
            "000000080001000g",
            "00000008000100020",
            "0x",
            "",
            "1.2.3",
            "0x0x00000008000100",
        ] {
            let error = checked_trust_list(list(&["0000000800010002", bad])).unwrap_err();
            assert!(error.contains("not 16 hex digits"), "{bad:?}: {error}");
        }
    }

    fn sled() -> (tempfile::TempDir, crate::storage::SledStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::SledStorage::open(dir.path()).unwrap();
        (dir, storage)
    }

    fn put_list(storage: &dyn Storage, version: u64, key: &crate::audit::SigningKey) {
        let mut trust_list = list(&[]);
        trust_list.version = version;
        let jws = signed::sign(&trust_list, TRUST_LIST_TYPE, key).unwrap();
        storage
            .put_document(
                DocumentKind::TrustList,
                &version.to_be_bytes(),
                jws.as_bytes(),
            )
            .unwrap();
    }

    #[test]
    fn a_newest_trust_list_that_does_not_verify_is_refused_not_skipped() {
        let (_dir, storage) = sled();
        let authority = crate::audit::SigningKey::generate().unwrap();
        let public = hex::decode(authority.public_hex()).unwrap();
        assert!(
            newest_trust_list(&storage, Some(&public))
                .unwrap()
                .is_none()
        );
        put_list(&storage, 1, &authority);
        put_list(&storage, 2, &authority);
        let newest = newest_trust_list(&storage, Some(&public)).unwrap().unwrap();
        assert_eq!(newest.version, 2);

        // v3 signed by someone else: v2 is not used in its place.
        let other = crate::audit::SigningKey::generate().unwrap();
        put_list(&storage, 3, &other);
        let error = newest_trust_list(&storage, Some(&public)).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("trust list v3") && text.contains("does not verify"),
            "{text}"
        );
        // Nor is the stored list trusted without an authority.
        let error = newest_trust_list(&storage, None).unwrap_err().to_string();
        assert!(error.contains("no trust_list_authority"), "{error}");

        // A genuine list stored under another version's key is refused too.
        let (_dir, storage) = sled();
        let mut trust_list = list(&[]);
        trust_list.version = 1;
        let jws = signed::sign(&trust_list, TRUST_LIST_TYPE, &authority).unwrap();
        storage
            .put_document(DocumentKind::TrustList, &9u64.to_be_bytes(), jws.as_bytes())
            .unwrap();
        let error = newest_trust_list(&storage, Some(&public))
            .unwrap_err()
            .to_string();
        assert!(error.contains("trust list v9"), "{error}");
    }

    #[test]
    fn a_stored_policy_that_no_longer_parses_is_refused_not_skipped() {
        let (_dir, storage) = sled();
        let policy = |version: u64| format!("name = \"gateways\"\nversion = {version}\n");
        let key = |version: u64| {
            let mut key = b"gateways".to_vec();
            key.push(0);
            key.extend_from_slice(&version.to_be_bytes());
            key
        };
        if Policy::from_toml(&policy(1)).is_err() {
            panic!(
                "the test policy must parse: {:?}",
                Policy::from_toml(&policy(1))
            );
        }
        storage
            .put_document(DocumentKind::Policy, &key(1), policy(1).as_bytes())
            .unwrap();
        assert_eq!(latest_policies(&storage, 100).unwrap().len(), 1);
        storage
            .put_document(
                DocumentKind::Policy,
                &key(2),
                b"name = \"gateways\"\nversion = ",
            )
            .unwrap();
        let error = latest_policies(&storage, 100).unwrap_err().to_string();
        assert!(
            error.contains("policy gateways v2") && error.contains("no longer parses"),
            "{error}"
        );
        // A valid policy under another version's key.
        storage
            .put_document(DocumentKind::Policy, &key(2), policy(1).as_bytes())
            .unwrap();
        let error = latest_policies(&storage, 100).unwrap_err().to_string();
        assert!(error.contains("holds policy"), "{error}");
    }

    #[test]
    fn a_trust_list_with_a_malformed_firmware_version_is_refused_at_import() {
        let (_dir, storage) = sled();
        let authority = crate::audit::SigningKey::generate().unwrap();
        let public = hex::decode(authority.public_hex()).unwrap();
        let trust =
            super::super::trust::TrustStore::open(std::sync::Arc::new(storage), Some(public))
                .unwrap();
        let jws = signed::sign(&list(&["8000100ab"]), TRUST_LIST_TYPE, &authority).unwrap();
        let error = trust.import_trust_list(&jws).unwrap_err().to_string();
        assert!(error.contains("not 16 hex digits"), "{error}");
        assert_eq!(trust.current().trust_list_version(), None);
        let jws =
            signed::sign(&list(&["0X000000080001000A"]), TRUST_LIST_TYPE, &authority).unwrap();
        trust.import_trust_list(&jws).unwrap();
        let snapshot = trust.current();
        assert!(snapshot.firmware_revoked(0x0000_0008_0001_000a).is_some());
    }

    #[test]
    fn policy_keys_are_named_for_the_operator() {
        let mut key = b"gateways".to_vec();
        key.push(0);
        key.extend_from_slice(&3u64.to_be_bytes());
        assert_eq!(policy_key_name(&key), "policy gateways v3");
        assert_eq!(policy_key_name(b"\x01\x02"), "policy stored under key 0102");
    }
}
