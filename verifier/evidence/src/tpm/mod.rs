//! TPM 2.0 wire structures (TPM 2.0 Part 2), parsed in pure Rust with explicit bounds.
//!
//! - `public`: TPMT_PUBLIC (RSA and ECC keys), object attributes, key helpers.
//! - `name`: object Names and Qualified Names (what qualifiedSigner holds).
//! - `curve`: ECC curve identifiers (TPM_ECC_CURVE).
//! - `spki`: the key as X.509 SubjectPublicKeyInfo DER.
//! - `attest`: TPMS_ATTEST with its quote body and clock information.
//! - `pcr`: TPML_PCR_SELECTION.
//! - `signature`: TPMT_SIGNATURE.
//!
//! Everything is big-endian, as the TPM marshals it. Unknown algorithms are errors, not panics.

pub mod attest;
pub mod curve;
pub mod name;
pub mod pcr;
pub mod public;
pub mod signature;
pub mod spki;

pub use attest::{Attest, AttestType, ClockInfo, QuoteInfo, TPM_GENERATED};
pub use curve::EccCurve;
pub use name::{
    ENDORSEMENT_HIERARCHY, OWNER_HIERARCHY, PLATFORM_HIERARCHY, hierarchy_qualified_name,
};
pub use pcr::PcrSelection;
pub use public::{AttributeError, Encoding, KeyParameters, ObjectAttributes, Public, PublicKey};
pub use signature::{Signature, SignatureScheme};

/// TPM_ALG_NULL.
pub const ALG_NULL: u16 = 0x0010;
/// Largest digest any supported algorithm produces; a TPM2B_DIGEST larger than this is refused.
pub const MAX_DIGEST_SIZE: usize = 64;
/// Largest TPM2B_NAME: algorithm id + largest digest.
pub const MAX_NAME_SIZE: usize = 2 + MAX_DIGEST_SIZE;
/// Largest RSA modulus accepted (4096 bits).
pub const MAX_RSA_BYTES: usize = 512;
/// Largest ECC coordinate accepted (P-521).
pub const MAX_ECC_COORDINATE: usize = 66;
/// Largest TPM2B_DATA (extraData / qualifyingData).
pub const MAX_EXTRA_DATA: usize = 64;
