//! Joining evidence an agent sent in parts (`EvidencePart` in `proto/trustchain.proto`: a stream
//! keeps a receive buffer the size of the largest message it carried, so agents cut large evidence
//! into parts of a few KiB).
//!
//! The parts come from an authenticated but untrusted agent: their joined size is bounded by the
//! same limit as evidence sent whole, the buffer grows only with bytes actually received, and a
//! joined encoding that does not decode ends the stream (no verdict, so never trusted).

use prost::Message;
use trustchain_proto::v1;

/// Why joining failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssemblyError {
    #[error("evidence parts exceed the {limit}-byte evidence limit")]
    TooLarge { limit: usize },
    #[error("joined evidence parts do not decode: {0}")]
    Malformed(String),
}

/// The parts of one evidence message received so far.
#[derive(Debug)]
pub struct Assembly {
    limit: usize,
    bytes: Vec<u8>,
}

impl Assembly {
    /// An empty assembly refusing more than `limit` bytes in all.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: Vec::new(),
        }
    }

    /// True when no part of an unfinished message is held.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Adds `part`; after the last part, the whole evidence (and the assembly is empty again).
    pub fn push(&mut self, part: v1::EvidencePart) -> Result<Option<v1::Evidence>, AssemblyError> {
        if self.bytes.len().saturating_add(part.data.len()) > self.limit {
            self.bytes = Vec::new();
            return Err(AssemblyError::TooLarge { limit: self.limit });
        }
        self.bytes.extend_from_slice(&part.data);
        if !part.last {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.bytes);
        v1::Evidence::decode(bytes.as_slice())
            .map(Some)
            .map_err(|error| AssemblyError::Malformed(error.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use trustchain_proto::evidence_messages;
    use trustchain_proto::v1::agent_message::Body;

    fn parts(evidence: v1::Evidence) -> Vec<v1::EvidencePart> {
        evidence_messages(evidence)
            .into_iter()
            .map(|m| match m.body {
                Some(Body::EvidencePart(part)) => part,
                other => panic!("not a part: {other:?}"),
            })
            .collect()
    }

    fn big_evidence() -> v1::Evidence {
        v1::Evidence {
            challenge_id: 9,
            quote: vec![7; 100],
            boot_log: vec![0xab; 20_000],
            boot_log_included: true,
            ..v1::Evidence::default()
        }
    }

    #[test]
    fn parts_join_into_the_evidence_sent() {
        let mut assembly = Assembly::new(1 << 20);
        let mut joined = None;
        for part in parts(big_evidence()) {
            assert!(joined.is_none(), "evidence before the last part");
            joined = assembly.push(part).unwrap();
        }
        assert_eq!(joined, Some(big_evidence()));
        assert!(assembly.is_empty());
    }

    #[test]
    fn parts_beyond_the_evidence_limit_are_refused_before_they_are_kept() {
        let mut assembly = Assembly::new(10_000);
        let mut outcome = Ok(None);
        for part in parts(big_evidence()) {
            outcome = assembly.push(part);
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(AssemblyError::TooLarge { limit: 10_000 }));
        assert!(assembly.is_empty(), "nothing kept after the refusal");
    }

    #[test]
    fn joined_parts_that_do_not_decode_are_refused() {
        let mut assembly = Assembly::new(1 << 20);
        let first = v1::EvidencePart {
            data: vec![0xff; 64],
            last: false,
        };
        assert_eq!(assembly.push(first), Ok(None));
        let last = v1::EvidencePart {
            data: vec![0xff; 3],
            last: true,
        };
        assert!(matches!(
            assembly.push(last),
            Err(AssemblyError::Malformed(_))
        ));
    }
}
