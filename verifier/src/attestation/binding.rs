//! The channel binding each quote must carry: the nonce bound to the TLS connection the stream
//! runs on (construction: `trustchain_proto::binding`, docs/architecture.md).

use trustchain_proto::binding::{EXPORTER_LEN, qualifying_data};

use super::nonce::ChallengeNonce;

/// The TLS exporter of the connection an attestation stream runs on (the network edge derives
/// it after the handshake: `server::connection`).
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelExporter([u8; EXPORTER_LEN]);

impl std::fmt::Debug for ChannelExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelExporter").finish_non_exhaustive()
    }
}

impl ChannelExporter {
    pub fn new(exporter: [u8; EXPORTER_LEN]) -> Self {
        Self(exporter)
    }

    /// The qualifyingData a quote answering `nonce` on this connection must carry:
    /// SHA-256(nonce || exporter) (`trustchain_proto::binding`).
    pub fn bind(&self, nonce: &ChallengeNonce) -> [u8; 32] {
        qualifying_data(nonce.as_bytes(), &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_differs_per_connection_and_from_the_bare_nonce() {
        let nonce = ChallengeNonce::draw().unwrap();
        let a = ChannelExporter::new([1; EXPORTER_LEN]).bind(&nonce);
        let b = ChannelExporter::new([2; EXPORTER_LEN]).bind(&nonce);
        assert_ne!(a, b);
        assert_ne!(&a, nonce.as_bytes());
    }
}
