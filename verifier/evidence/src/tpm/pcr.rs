//! TPML_PCR_SELECTION: which PCRs of which banks a quote covers.

use crate::digest::HashAlgorithm;
use crate::reader::{ReadError, Reader};

/// Most banks in one selection (a TPM has at most a handful).
pub const MAX_BANKS: usize = 16;
/// PCRs per bank in a PC Client TPM.
pub const PCR_COUNT: u32 = 24;
/// Largest sizeofSelect accepted (bitmap bytes per bank).
const MAX_SELECT_BYTES: usize = 8;

/// A checked PCR selection: banks in order, each with its PCR indices ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrSelection {
    pub banks: Vec<(HashAlgorithm, Vec<u32>)>,
}

impl PcrSelection {
    pub fn new(banks: Vec<(HashAlgorithm, Vec<u32>)>) -> Self {
        let banks = banks
            .into_iter()
            .map(|(alg, mut pcrs)| {
                pcrs.sort_unstable();
                pcrs.dedup();
                (alg, pcrs)
            })
            .collect();
        Self { banks }
    }

    /// Reads a TPML_PCR_SELECTION.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let count = r.u32_be("pcrSelections.count")? as usize;
        if count > MAX_BANKS {
            return Err(r.invalid(
                "pcrSelections.count",
                format!("{count} banks (at most {MAX_BANKS})"),
            ));
        }
        let mut banks = Vec::with_capacity(count);
        for _ in 0..count {
            let alg_id = r.u16_be("pcrSelection.hash")?;
            let alg = HashAlgorithm::from_tpm_alg_id(alg_id).ok_or_else(|| {
                r.invalid(
                    "pcrSelection.hash",
                    format!("unsupported hash 0x{alg_id:04x}"),
                )
            })?;
            let size = usize::from(r.u8("pcrSelection.sizeofSelect")?);
            let bitmap = r.bytes_limited("pcrSelection.pcrSelect", size, MAX_SELECT_BYTES)?;
            let mut pcrs = Vec::new();
            for (byte_index, byte) in bitmap.iter().enumerate() {
                for bit in 0..8u32 {
                    if byte & (1 << bit) != 0 {
                        pcrs.push(byte_index as u32 * 8 + bit);
                    }
                }
            }
            if banks.iter().any(|(a, _)| *a == alg) {
                return Err(r.invalid("pcrSelection.hash", format!("bank {alg} selected twice")));
            }
            banks.push((alg, pcrs));
        }
        Ok(Self { banks })
    }

    /// Marshals as a TPML_PCR_SELECTION (3-byte bitmaps, as PC Client TPMs use).
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.banks.len() as u32).to_be_bytes());
        for (alg, pcrs) in &self.banks {
            out.extend_from_slice(&alg.tpm_alg_id().to_be_bytes());
            let mut bitmap = [0u8; 3];
            for pcr in pcrs {
                if let Some(byte) = bitmap.get_mut((*pcr / 8) as usize) {
                    *byte |= 1 << (pcr % 8);
                }
            }
            out.push(3);
            out.extend_from_slice(&bitmap);
        }
        out
    }

    /// The (bank, pcr) pairs in the order their values enter pcrDigest.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlgorithm, u32)> + '_ {
        self.banks
            .iter()
            .flat_map(|(alg, pcrs)| pcrs.iter().map(move |p| (*alg, *p)))
    }

    pub fn is_empty(&self) -> bool {
        self.banks.iter().all(|(_, pcrs)| pcrs.is_empty())
    }

    pub fn contains_bank(&self, alg: HashAlgorithm) -> bool {
        self.banks
            .iter()
            .any(|(a, pcrs)| *a == alg && !pcrs.is_empty())
    }
}

impl std::fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .banks
            .iter()
            .map(|(alg, pcrs)| {
                let list: Vec<String> = pcrs.iter().map(u32::to_string).collect();
                format!("{alg}:{}", list.join(","))
            })
            .collect();
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let sel = PcrSelection::new(vec![
            (HashAlgorithm::Sha256, vec![10, 0, 7]),
            (HashAlgorithm::Sha1, vec![23]),
        ]);
        let bytes = sel.marshal();
        let parsed = PcrSelection::read(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(parsed, sel);
        let order: Vec<_> = parsed.iter().collect();
        assert_eq!(order[0], (HashAlgorithm::Sha256, 0));
        assert_eq!(order[3], (HashAlgorithm::Sha1, 23));
    }

    #[test]
    fn hostile_counts_and_sizes_are_refused() {
        assert!(PcrSelection::read(&mut Reader::new(&[0xff, 0xff, 0xff, 0xff])).is_err());
        let big_select = [0, 0, 0, 1, 0, 0x0b, 200];
        assert!(PcrSelection::read(&mut Reader::new(&big_select)).is_err());
        let unknown = [0, 0, 0, 1, 0x12, 0x34, 3, 1, 0, 0];
        assert!(PcrSelection::read(&mut Reader::new(&unknown)).is_err());
    }
}
