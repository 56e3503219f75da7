//! Digests in stored maps written as hex strings instead of JSON arrays of numbers: a SHA-256
//! value takes 66 bytes instead of about 115, and the appraisal state, written on every
//! appraisal, is mostly PCR values. Reading accepts both forms, so states stored before this
//! encoding stay readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stored digest: hex (current) or an array of bytes (earlier states).
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Hex(String),
    Bytes(Vec<u8>),
}

impl Stored {
    fn into_bytes<E: serde::de::Error>(self) -> Result<Vec<u8>, E> {
        match self {
            Self::Hex(text) => hex::decode(text).map_err(E::custom),
            Self::Bytes(bytes) => Ok(bytes),
        }
    }
}

/// PCR index -> digest, per bank.
type Banks<K> = BTreeMap<K, BTreeMap<u32, Vec<u8>>>;

fn read_pcrs<E: serde::de::Error>(raw: BTreeMap<u32, Stored>) -> Result<BTreeMap<u32, Vec<u8>>, E> {
    raw.into_iter()
        .map(|(pcr, value)| Ok((pcr, value.into_bytes()?)))
        .collect()
}

/// PCR index -> digest.
pub mod pcrs {
    use super::*;

    pub fn serialize<S: Serializer>(map: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(pcr, value)| (pcr, hex::encode(value))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        read_pcrs(BTreeMap::<u32, Stored>::deserialize(d)?)
    }
}

/// Bank -> PCR index -> digest.
pub mod banks {
    use super::*;

    struct Pcrs<'a>(&'a BTreeMap<u32, Vec<u8>>);

    impl Serialize for Pcrs<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::pcrs::serialize(self.0, s)
        }
    }

    pub fn serialize<K: Serialize, S: Serializer>(map: &Banks<K>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(bank, pcrs)| (bank, Pcrs(pcrs))))
    }

    pub fn deserialize<'de, K, D>(d: D) -> Result<Banks<K>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        D: Deserializer<'de>,
    {
        BTreeMap::<K, BTreeMap<u32, Stored>>::deserialize(d)?
            .into_iter()
            .map(|(bank, pcrs)| Ok((bank, read_pcrs(pcrs)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "pcrs")]
        boot: BTreeMap<u32, Vec<u8>>,
        #[serde(with = "banks")]
        ima: BTreeMap<String, BTreeMap<u32, Vec<u8>>>,
    }

    #[test]
    fn digests_are_written_as_hex_and_read_in_either_form() {
        let sample = Sample {
            boot: BTreeMap::from([(0, vec![0xab; 32]), (7, vec![1, 2, 3])]),
            ima: BTreeMap::from([("sha256".into(), BTreeMap::from([(10, vec![0xcd; 32])]))]),
        };
        let json = serde_json::to_string(&sample).unwrap();
        assert!(json.contains(&"ab".repeat(32)), "{json}");
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
        let earlier = r#"{"boot":{"0":[171,171],"7":[1,2,3]},"ima":{"sha256":{"10":[205]}}}"#;
        let read: Sample = serde_json::from_str(earlier).unwrap();
        assert_eq!(read.boot[&7], vec![1, 2, 3]);
        assert_eq!(read.ima["sha256"][&10], vec![205]);
        assert!(serde_json::from_str::<Sample>(r#"{"boot":{"0":"zz"},"ima":{}}"#).is_err());
    }
}
