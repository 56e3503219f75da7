//! ECC curve identifiers (TPM_ECC_CURVE, TPM 2.0 Part 2, §6.4), shared by the TPMT_PUBLIC
//! parser and the SubjectPublicKeyInfo encoder.

/// ECC curves (TPM_ECC_CURVE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCurve {
    NistP256,
    NistP384,
    NistP521,
    Other(u16),
}

impl EccCurve {
    pub(super) fn from_id(id: u16) -> Self {
        match id {
            0x0003 => Self::NistP256,
            0x0004 => Self::NistP384,
            0x0005 => Self::NistP521,
            other => Self::Other(other),
        }
    }

    pub fn coordinate_size(self) -> Option<usize> {
        match self {
            Self::NistP256 => Some(32),
            Self::NistP384 => Some(48),
            Self::NistP521 => Some(66),
            Self::Other(_) => None,
        }
    }
}
