//! Sending evidence in parts (`EvidencePart` in `proto/trustchain.proto` says why).

use prost::Message;

use crate::v1::{AgentMessage, Evidence, EvidencePart, agent_message};

/// Largest evidence message sent whole: a routine answer (a quote, PCR values and a few dozen IMA
/// lines, 1-3 KiB). The receiving stream's buffer ends about twice the largest message it carried.
pub const EVIDENCE_WHOLE_BYTES: usize = 3 * 1024;

/// Largest part of a larger evidence message's encoding. Load generator, 10,000 devices: parts
/// of 4 KiB left 76 KiB per device in the verifier, of 1 KiB 66 KiB; cutting routine answers
/// too cost 15 % more verifier CPU per appraisal, hence [`EVIDENCE_WHOLE_BYTES`].
pub const EVIDENCE_PART_BYTES: usize = 1024;

/// The agent messages that carry `evidence`: the message itself when its encoding fits in
/// [`EVIDENCE_WHOLE_BYTES`], else its encoding in parts of at most [`EVIDENCE_PART_BYTES`], the
/// last marked.
pub fn evidence_messages(evidence: Evidence) -> Vec<AgentMessage> {
    if evidence.encoded_len() <= EVIDENCE_WHOLE_BYTES {
        return vec![AgentMessage {
            body: Some(agent_message::Body::Evidence(evidence)),
        }];
    }
    let encoded = evidence.encode_to_vec();
    let count = encoded.len().div_ceil(EVIDENCE_PART_BYTES);
    encoded
        .chunks(EVIDENCE_PART_BYTES)
        .enumerate()
        .map(|(index, data)| AgentMessage {
            body: Some(agent_message::Body::EvidencePart(EvidencePart {
                data: data.to_vec(),
                last: index + 1 == count,
            })),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn evidence(boot_log_bytes: usize) -> Evidence {
        Evidence {
            challenge_id: 7,
            quote: vec![1; 120],
            signature: vec![2; 72],
            boot_log: (0..boot_log_bytes).map(|i| i as u8).collect(),
            boot_log_included: boot_log_bytes > 0,
            ima_offset: 3,
            ima_entries: b"10 abc ima-ng sha256:00 /bin/true\n".to_vec(),
            ..Evidence::default()
        }
    }

    #[test]
    fn routine_evidence_goes_whole() {
        let messages = evidence_messages(evidence(0));
        assert_eq!(messages.len(), 1);
        assert!(matches!(
            messages[0].body,
            Some(agent_message::Body::Evidence(_))
        ));
    }

    #[test]
    fn large_evidence_goes_in_bounded_parts_that_join_to_the_same_message() {
        let original = evidence(70 * 1024);
        let messages = evidence_messages(original.clone());
        assert!(messages.len() > 17);
        let mut joined = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let Some(agent_message::Body::EvidencePart(part)) = &message.body else {
                panic!("part {index} is not a part");
            };
            assert!(part.data.len() <= EVIDENCE_PART_BYTES);
            assert_eq!(part.last, index + 1 == messages.len());
            joined.extend_from_slice(&part.data);
        }
        assert_eq!(Evidence::decode(joined.as_slice()).unwrap(), original);
    }
}
