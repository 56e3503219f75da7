//! TrustStore against a real sled database: imports, rollbacks, snapshots.

use super::*;
use crate::audit::SigningKey;
use crate::reference::documents::Revocations;
use crate::storage::SledStorage;

fn list(version: u64, revoked: Revocations) -> TrustList {
    TrustList {
        revoked,
        ..TrustList::empty(version)
    }
}

fn store(dir: &std::path::Path, authority: &SigningKey) -> TrustStore {
    let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(dir).unwrap());
    TrustStore::open(storage, Some(hex::decode(authority.public_hex()).unwrap())).unwrap()
}

#[test]
fn versions_only_go_up_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let authority = SigningKey::generate().unwrap();
    {
        let trust = store(dir.path(), &authority);
        let v2 = signed::sign(
            &list(2, Revocations::default()),
            TRUST_LIST_TYPE,
            &authority,
        )
        .unwrap();
        trust.import_trust_list(&v2).unwrap();
        let v1 = signed::sign(
            &list(1, Revocations::default()),
            TRUST_LIST_TYPE,
            &authority,
        )
        .unwrap();
        assert!(matches!(
            trust.import_trust_list(&v1),
            Err(ImportError::Rollback {
                offered: 1,
                active: 2
            })
        ));
        let fingerprint = trust.current().fingerprint.clone();
        assert_eq!(fingerprint.len(), 64);
    }
    // After a restart the same list is active and the same version is still refused.
    let trust = store(dir.path(), &authority);
    assert_eq!(trust.current().trust_list_version(), Some(2));
    let again = signed::sign(
        &list(2, Revocations::default()),
        TRUST_LIST_TYPE,
        &authority,
    )
    .unwrap();
    assert!(trust.import_trust_list(&again).is_err());
}

#[test]
fn without_an_authority_no_trust_list_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(dir.path()).unwrap());
    let trust = TrustStore::open(storage, None).unwrap();
    let key = SigningKey::generate().unwrap();
    let doc = signed::sign(&list(1, Revocations::default()), TRUST_LIST_TYPE, &key).unwrap();
    assert!(matches!(
        trust.import_trust_list(&doc),
        Err(ImportError::NoAuthority)
    ));
}

#[test]
fn a_revoked_tpm_firmware_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let authority = SigningKey::generate().unwrap();
    let trust = store(dir.path(), &authority);
    let revoked = Revocations {
        firmware_versions: vec!["0x0000000800010002".into()],
        ..Revocations::default()
    };
    trust
        .import_trust_list(&signed::sign(&list(1, revoked), TRUST_LIST_TYPE, &authority).unwrap())
        .unwrap();
    let snapshot = trust.current();
    let failure = snapshot.firmware_revoked(0x0000_0008_0001_0002).unwrap();
    assert_eq!(failure.rule, Rule::TrustList);
    assert!(failure.detail.contains("trust list v1"));
    assert!(snapshot.firmware_revoked(0x0000_0008_0001_0003).is_none());
}
