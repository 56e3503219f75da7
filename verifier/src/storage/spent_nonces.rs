//! A device's spent nonces, as one small record per device (tree `spent_nonces`, layout v3):
//! how many it has spent, and the last [`KEPT`].
//!
//! Why per device, not one key per nonce (layouts v1 and v2): a nonce is 32 random bytes bound
//! to the one challenge its stream holds in memory, so it can be answered only while that
//! challenge is outstanding, and never again once spent or once the process restarts. What the
//! durable record adds is (1) proof that the nonce was spent before its verdict left, (2) a
//! count the seal can hold the database to (a rolled-back database is refused), and (3) a stop
//! for a random source that repeats itself. One key per nonce gave the same at the price of a
//! tree that grew by every appraisal forever (432 million keys a day at 5,000 appraisals/s),
//! with every insert landing on a random, usually evicted, page: a quarter of the verifier's CPU
//! per appraisal and most of its slow commits under load (load generator, 5,000 appraisals/s).
//!
//! Encoding (written by hand: eight bytes and a few length-prefixed nonces do not need a
//! format library): the count as a big-endian u64, then each kept nonce, oldest first, as one
//! length byte and the nonce.

/// Nonces kept per device after the count.
pub const KEPT: usize = 8;

/// The longest nonce accepted (TPM2B_DATA in a quote holds at most a SHA-512 digest).
pub const MAX_NONCE: usize = 64;

/// One device's spent nonces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpentNonces {
    /// Nonces spent by the device, ever.
    pub count: u64,
    /// The last [`KEPT`], oldest first.
    recent: Vec<Vec<u8>>,
}

impl SpentNonces {
    /// Reads a stored record; no record is a device that has spent none.
    pub fn decode(bytes: Option<&[u8]>) -> Result<Self, String> {
        let Some(bytes) = bytes else {
            return Ok(Self::default());
        };
        let (count, mut rest) = bytes
            .split_first_chunk::<8>()
            .ok_or("shorter than its count")?;
        let mut recent = Vec::new();
        while let Some((&length, tail)) = rest.split_first() {
            let length = usize::from(length);
            if length == 0 || length > MAX_NONCE || recent.len() == KEPT {
                return Err("holds a malformed nonce list".into());
            }
            let nonce = tail.get(..length).ok_or("ends inside a nonce")?;
            recent.push(nonce.to_vec());
            rest = tail.get(length..).unwrap_or_default();
        }
        let count = u64::from_be_bytes(*count);
        if (recent.len() as u64) > count {
            return Err("keeps more nonces than it counts".into());
        }
        Ok(Self { count, recent })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(8 + self.recent.iter().map(|n| 1 + n.len()).sum::<usize>());
        out.extend_from_slice(&self.count.to_be_bytes());
        for nonce in &self.recent {
            // Lengths are checked on the way in (`spend`) and out (`decode`).
            out.push(u8::try_from(nonce.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(nonce);
        }
        out
    }

    pub fn contains(&self, nonce: &[u8]) -> bool {
        self.recent.iter().any(|kept| kept == nonce)
    }

    /// The record after spending `nonce` (which the caller checked is not kept, and is 1 to
    /// [`MAX_NONCE`] bytes long).
    pub fn spend(mut self, nonce: &[u8]) -> Self {
        self.count += 1;
        if self.recent.len() == KEPT {
            self.recent.remove(0);
        }
        self.recent.push(nonce.to_vec());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_keeps_the_last_nonces_and_counts_all() {
        let mut record = SpentNonces::decode(None).unwrap();
        for i in 0..20u8 {
            assert!(!record.contains(&[i; 32]));
            record = record.spend(&[i; 32]);
            record = SpentNonces::decode(Some(&record.encode())).unwrap();
        }
        assert_eq!(record.count, 20);
        assert!(record.contains(&[19; 32]) && record.contains(&[12; 32]));
        assert!(!record.contains(&[11; 32]));
    }

    #[test]
    fn damaged_records_are_refused_not_read_as_empty() {
        let good = SpentNonces::default().spend(&[7; 32]).encode();
        for bad in [
            &good[..5],                      // no full count
            &good[..good.len() - 1],         // ends inside the nonce
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 9], // keeps a nonce it does not count
            &[0, 0, 0, 0, 0, 0, 0, 9, 0],    // a nonce of length 0
        ] {
            assert!(SpentNonces::decode(Some(bad)).is_err(), "{bad:?}");
        }
        let mut too_many = 100u64.to_be_bytes().to_vec();
        for _ in 0..=KEPT {
            too_many.extend_from_slice(&[1, 0xaa]);
        }
        assert!(SpentNonces::decode(Some(&too_many)).is_err());
    }
}
