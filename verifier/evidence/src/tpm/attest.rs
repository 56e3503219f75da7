//! TPMS_ATTEST (TPM 2.0 Part 2, §10.12): what the TPM signs when it quotes.

use crate::reader::{ReadError, Reader};

use super::pcr::PcrSelection;
use super::{MAX_DIGEST_SIZE, MAX_EXTRA_DATA, MAX_NAME_SIZE};

/// TPM_GENERATED_VALUE: the TPM puts it in everything it signs, and refuses to sign external data
/// that starts with it.
pub const TPM_GENERATED: u32 = 0xff54_4347;

/// TPMI_ST_ATTEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestType {
    Quote,
    Certify,
    Creation,
    SessionAudit,
    CommandAudit,
    Time,
    Nv,
    Other(u16),
}

impl AttestType {
    fn from_tag(tag: u16) -> Self {
        match tag {
            0x8018 => Self::Quote,
            0x8017 => Self::Certify,
            0x801a => Self::Creation,
            0x8016 => Self::SessionAudit,
            0x8015 => Self::CommandAudit,
            0x8019 => Self::Time,
            0x8014 => Self::Nv,
            other => Self::Other(other),
        }
    }

    /// The TPM_ST tag on the wire.
    pub fn tag(self) -> u16 {
        match self {
            Self::Quote => 0x8018,
            Self::Certify => 0x8017,
            Self::Creation => 0x801a,
            Self::SessionAudit => 0x8016,
            Self::CommandAudit => 0x8015,
            Self::Time => 0x8019,
            Self::Nv => 0x8014,
            Self::Other(tag) => tag,
        }
    }
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered (advances only while powered).
    pub clock: u64,
    /// TPM resets (power cycles, TPM2_Startup(CLEAR) after a reset).
    pub reset_count: u32,
    /// TPM restarts and resumes since the last reset.
    pub restart_count: u32,
    /// The clock has not gone back since it was last saved (no power loss before an update).
    pub safe: bool,
}

/// TPMS_QUOTE_INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    pub selection: PcrSelection,
    pub pcr_digest: Vec<u8>,
}

/// A parsed TPMS_ATTEST. The quote body is parsed for quotes; other types keep only the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    pub magic: u32,
    pub attest_type: AttestType,
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub quote: Option<QuoteInfo>,
}

impl Attest {
    /// Parses TPMS_ATTEST bytes (the contents of TPM2B_ATTEST, which is what is signed).
    pub fn parse(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32_be("magic")?;
        let attest_type = AttestType::from_tag(r.u16_be("type")?);
        let qualified_signer = r.tpm2b("qualifiedSigner", MAX_NAME_SIZE)?.to_vec();
        let extra_data = r.tpm2b("extraData", MAX_EXTRA_DATA)?.to_vec();
        let clock = r.u64_be("clockInfo.clock")?;
        let reset_count = r.u32_be("clockInfo.resetCount")?;
        let restart_count = r.u32_be("clockInfo.restartCount")?;
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            other => return Err(r.invalid("clockInfo.safe", format!("TPMI_YES_NO is {other}"))),
        };
        let firmware_version = r.u64_be("firmwareVersion")?;
        let quote = if attest_type == AttestType::Quote {
            let selection = PcrSelection::read(&mut r)?;
            let pcr_digest = r.tpm2b("pcrDigest", MAX_DIGEST_SIZE)?.to_vec();
            r.finish()?;
            Some(QuoteInfo {
                selection,
                pcr_digest,
            })
        } else {
            None
        };
        Ok(Self {
            magic,
            attest_type,
            qualified_signer,
            extra_data,
            clock_info: ClockInfo {
                clock,
                reset_count,
                restart_count,
                safe,
            },
            firmware_version,
            quote,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::HashAlgorithm;

    #[test]
    fn gce_quote_fields() {
        let path = format!(
            "{}/../../../shared/testdata/quotes/gce-cos-85-no-nonce/quote1_sha256.tpms_attest.bin",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("testdata {path} missing: {e}"));
        let attest = Attest::parse(&bytes).unwrap();
        assert_eq!(attest.magic, TPM_GENERATED);
        assert_eq!(attest.attest_type, AttestType::Quote);
        assert!(attest.extra_data.is_empty());
        let quote = attest.quote.unwrap();
        assert_eq!(quote.selection.banks[0].0, HashAlgorithm::Sha256);
        assert_eq!(quote.selection.banks[0].1.len(), 24);
        assert_eq!(quote.pcr_digest.len(), 32);
        for len in 0..bytes.len() {
            assert!(Attest::parse(&bytes[..len]).is_err());
        }
    }
}
