//! Byte fields of stored records (TPM public areas, certificates) written as base64 strings
//! instead of JSON arrays of numbers: a 1 KiB certificate took about 3.6 KiB in sled, on disk
//! and in its page cache, and every device record carries two. Reading accepts both forms, so
//! records stored before this encoding stay readable.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serializer};

/// A stored byte field: base64 (current) or an array of bytes (earlier records).
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Base64(String),
    Bytes(Vec<u8>),
}

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    match Stored::deserialize(d)? {
        Stored::Base64(text) => STANDARD.decode(text).map_err(serde::de::Error::custom),
        Stored::Bytes(bytes) => Ok(bytes),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "super")]
        der: Vec<u8>,
    }

    #[test]
    fn bytes_are_written_as_base64_and_read_in_either_form() {
        let record = Record {
            der: vec![0x30, 0x82, 0x01, 0xff, 0x00],
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(json, r#"{"der":"MIIB/wA="}"#);
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
        let earlier = r#"{"der":[48,130,1,255,0]}"#;
        assert_eq!(serde_json::from_str::<Record>(earlier).unwrap(), record);
    }

    #[test]
    fn a_field_that_is_not_base64_is_refused() {
        assert!(serde_json::from_str::<Record>(r#"{"der":"not base64!"}"#).is_err());
        assert!(serde_json::from_str::<Record>(r#"{"der":[256]}"#).is_err());
    }
}
