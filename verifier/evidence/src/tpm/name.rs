//! Object Names and Qualified Names (TPM 2.0 Part 1, §16): how a TPM identifies a key, and what
//! TPMS_ATTEST.qualifiedSigner carries.

use super::public::Public;

/// TPM_RH_ENDORSEMENT: the hierarchy EKs (and often AKs) are created in.
pub const ENDORSEMENT_HIERARCHY: u32 = 0x4000_000b;
/// TPM_RH_OWNER: the storage hierarchy.
pub const OWNER_HIERARCHY: u32 = 0x4000_0001;
/// TPM_RH_PLATFORM: the firmware's hierarchy.
pub const PLATFORM_HIERARCHY: u32 = 0x4000_000c;

/// The Qualified Name of a hierarchy: its handle, big-endian (a hierarchy's Name is its handle).
pub fn hierarchy_qualified_name(handle: u32) -> Vec<u8> {
    handle.to_be_bytes().to_vec()
}

impl Public {
    /// The object's Name: nameAlg (u16 BE) || H_nameAlg(TPMT_PUBLIC), computed over the exact
    /// bytes received, never over a re-marshalled structure.
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.tpm_alg_id().to_be_bytes().to_vec();
        name.extend_from_slice(&self.name_alg.hash(&self.raw));
        name
    }

    /// The object's Qualified Name under a parent whose Qualified Name is `parent`
    /// (TPM 2.0 Part 1, §16.6): nameAlg || H_nameAlg(QN(parent) || Name). For a primary key the
    /// parent's QN is the hierarchy handle (see [`hierarchy_qualified_name`]).
    /// TPMS_ATTEST.qualifiedSigner carries this, not the bare Name.
    pub fn qualified_name(&self, parent: &[u8]) -> Vec<u8> {
        let mut qn = self.name_alg.tpm_alg_id().to_be_bytes().to_vec();
        qn.extend_from_slice(&self.name_alg.hash_parts(&[parent, &self.name()]));
        qn
    }
}
