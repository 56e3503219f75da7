//! PCR selections for tss-esapi, PCR reads, and the agent's own check that the PCR values it
//! sends hash to the digest the TPM signed (a PCR extended between TPM2_Quote and TPM2_PCR_Read
//! would otherwise make an honest device fail appraisal).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};
use tss_esapi::Context;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{PcrSelectionList, PcrSelectionListBuilder, PcrSlot, QuoteInfo};

use super::{BankSelection, TpmError};

/// PCRs 0..23: the PC client platform's count.
const PCR_COUNT: u32 = 24;
/// TPM2_PCR_Read returns at most 8 digests per call.
const READ_CHUNK: usize = 8;

/// (TPM_ALG_ID, PCR index, value).
pub(crate) type PcrValue = (u16, u32, Vec<u8>);

fn tpm(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Tpm { operation, source }
}

fn hashing(alg_id: u16) -> Result<HashingAlgorithm, TpmError> {
    match alg_id {
        0x0004 => Ok(HashingAlgorithm::Sha1),
        0x000b => Ok(HashingAlgorithm::Sha256),
        0x000c => Ok(HashingAlgorithm::Sha384),
        0x000d => Ok(HashingAlgorithm::Sha512),
        other => Err(TpmError::Selection(format!(
            "unsupported PCR bank 0x{other:04x}"
        ))),
    }
}

fn alg_id(hashing: HashingAlgorithm) -> Result<u16, TpmError> {
    match hashing {
        HashingAlgorithm::Sha1 => Ok(0x0004),
        HashingAlgorithm::Sha256 => Ok(0x000b),
        HashingAlgorithm::Sha384 => Ok(0x000c),
        HashingAlgorithm::Sha512 => Ok(0x000d),
        other => Err(TpmError::Unexpected(format!("PCR bank {other:?}"))),
    }
}

fn slot(index: u32) -> Result<PcrSlot, TpmError> {
    if index >= PCR_COUNT {
        return Err(TpmError::Selection(format!("no PCR {index}")));
    }
    PcrSlot::try_from(1u32 << index).map_err(tpm("PCR slot"))
}

fn index(slot: PcrSlot) -> u32 {
    u32::from(slot).trailing_zeros()
}

/// Checks `selection` (known banks, PCRs 0..23, no repeats, nothing empty) and returns the set
/// of (bank, PCR) it names.
pub(crate) fn validate(selection: &[BankSelection]) -> Result<BTreeSet<(u16, u32)>, TpmError> {
    if selection.is_empty() {
        return Err(TpmError::Selection("no bank selected".into()));
    }
    let mut wanted = BTreeSet::new();
    let mut banks = BTreeSet::new();
    for (bank, pcrs) in selection {
        hashing(*bank)?;
        if !banks.insert(*bank) {
            return Err(TpmError::Selection(format!(
                "bank 0x{bank:04x} given twice"
            )));
        }
        if pcrs.is_empty() {
            return Err(TpmError::Selection(format!(
                "no PCR selected in bank 0x{bank:04x}"
            )));
        }
        for &pcr in pcrs {
            slot(pcr)?;
            if !wanted.insert((*bank, pcr)) {
                return Err(TpmError::Selection(format!("PCR {pcr} given twice")));
            }
        }
    }
    Ok(wanted)
}

/// The tss-esapi selection list for a checked `selection`.
pub(crate) fn selection_list(selection: &[BankSelection]) -> Result<PcrSelectionList, TpmError> {
    let mut builder = PcrSelectionListBuilder::new();
    for (bank, pcrs) in selection {
        let slots = pcrs
            .iter()
            .map(|p| slot(*p))
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.with_selection(hashing(*bank)?, &slots);
    }
    builder.build().map_err(tpm("PCR selection"))
}

/// Reads the selected PCRs, in selection order. Fails if the TPM leaves any out (e.g. a bank
/// that is not allocated).
pub(crate) fn read(
    ctx: &mut Context,
    selection: &[BankSelection],
) -> Result<Vec<PcrValue>, TpmError> {
    let mut values = Vec::new();
    for (bank, pcrs) in selection {
        for chunk in pcrs.chunks(READ_CHUNK) {
            let list = selection_list(&[(*bank, chunk.to_vec())])?;
            let (_, read, digests) = ctx.pcr_read(list).map_err(tpm("PCR read"))?;
            let returned: Vec<u32> = read
                .get_selections()
                .iter()
                .flat_map(|s| s.selected())
                .map(index)
                .collect();
            let mut asked = chunk.to_vec();
            asked.sort_unstable();
            if returned != asked || digests.value().len() != chunk.len() {
                return Err(TpmError::Unexpected(format!(
                    "PCR read of bank 0x{bank:04x} returned PCRs {returned:?} for {asked:?}"
                )));
            }
            // Digests come in ascending PCR order, like `returned`.
            let by_index: BTreeMap<u32, Vec<u8>> = returned
                .into_iter()
                .zip(digests.value().iter().map(|d| d.value().to_vec()))
                .collect();
            for pcr in chunk {
                let value = by_index.get(pcr).cloned().unwrap_or_default();
                values.push((*bank, *pcr, value));
            }
        }
    }
    Ok(values)
}

/// True when `values` hash (SHA-256, the AK's signing hash) to the quote's pcrDigest, taking
/// PCRs in the order the quote's selection lists them. Fails if the quote covers other PCRs
/// than `wanted`.
pub(crate) fn matches_quote(
    info: &QuoteInfo,
    wanted: &BTreeSet<(u16, u32)>,
    values: &[PcrValue],
) -> Result<bool, TpmError> {
    let by_key: BTreeMap<(u16, u32), &[u8]> = values
        .iter()
        .map(|(bank, pcr, value)| ((*bank, *pcr), value.as_slice()))
        .collect();
    let mut quoted = BTreeSet::new();
    let mut hasher = Sha256::new();
    for selection in info.pcr_selection().get_selections() {
        let bank = alg_id(selection.hashing_algorithm())?;
        for pcr in selection.selected().into_iter().map(index) {
            let value = by_key.get(&(bank, pcr)).ok_or_else(|| {
                TpmError::Unexpected(format!("the quote covers PCR {pcr} of 0x{bank:04x}"))
            })?;
            hasher.update(value);
            quoted.insert((bank, pcr));
        }
    }
    if &quoted != wanted {
        return Err(TpmError::Unexpected(
            "the quote covers other PCRs than selected".into(),
        ));
    }
    Ok(hasher.finalize().as_slice() == info.pcr_digest().value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_are_checked() {
        assert_eq!(validate(&[(0x000b, vec![0, 7, 10])]).unwrap().len(), 3);
        for bad in [
            vec![],
            vec![(0x000b, vec![])],
            vec![(0x000b, vec![24])],
            vec![(0x000b, vec![1, 1])],
            vec![(0x000b, vec![1]), (0x000b, vec![2])],
            vec![(0x0012, vec![1])],
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
        selection_list(&[(0x000b, vec![0, 1, 2]), (0x0004, vec![10])]).unwrap();
    }
}
