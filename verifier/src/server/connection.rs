//! An accepted connection as the gRPC server sees it, and per-source slot counting.
//!
//! A peer with a client certificate (validated by rustls against the deployment CA and its CRL)
//! keeps its connection as long as it likes: an agent's attestation stream lives for days. A
//! peer without one can only enroll, so its connection ends after a fixed lifetime whatever it is
//! doing, and it holds a slot in two caps (overall and per source) until then.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use trustchain_ca::role::{PeerIdentity, peer_identity};
use trustchain_proto::binding::{EXPORTER_LABEL, EXPORTER_LEN};

use crate::attestation::binding::ChannelExporter;

/// The address a limit counts against: the IPv4 address, or the /64 prefix of an IPv6 address
/// (one host usually holds a whole /64, so counting single IPv6 addresses would limit nothing).
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Counts slots held per source; a source may hold at most `per_source` at once. The map only
/// holds sources that hold a slot, so its size is bounded by the caps the slots sit under.
#[derive(Debug, Clone)]
pub(crate) struct SourceSlots {
    per_source: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl SourceSlots {
    pub(crate) fn new(per_source: usize) -> Self {
        Self {
            per_source,
            held: Arc::default(),
        }
    }

    /// A slot for `ip`'s source, released when dropped; `None` when the source holds them all.
    pub(crate) fn claim(&self, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut held = self
            .held
            .lock()
            // Counters only: a panicking holder cannot leave them half-updated.
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = held.entry(key).or_insert(0);
        if *count >= self.per_source {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            key,
            held: self.held.clone(),
        })
    }
}

/// One slot held by a source.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    key: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// What every request on a connection carries of it (its tonic connect info): the peer's
/// address and the identity read once from its client certificate. Tonic's own connect info
/// copies the whole certificate chain per connection (about 1 KiB, while rustls keeps its own
/// copy), and a verifier holds thousands of agents' connections for days.
#[derive(Debug, Clone)]
pub(crate) struct EdgeInfo {
    remote: Option<SocketAddr>,
    certificate: ClientCertificate,
    /// The connection's TLS exporter (label `trustchain_proto::binding::EXPORTER_LABEL`, no
    /// context), derived once after the handshake; `None` if rustls could not give it, and then
    /// no attestation stream opens on this connection.
    exporter: Option<[u8; EXPORTER_LEN]>,
}

#[derive(Debug, Clone)]
enum ClientCertificate {
    Absent,
    /// Chains to the deployment CA (rustls checked it) but names no role: no access.
    WithoutRole,
    Identity(Arc<PeerIdentity>),
}

impl EdgeInfo {
    fn of(stream: &TlsStream<TcpStream>) -> Self {
        let (tcp, tls) = stream.get_ref();
        let certificate = match tls.peer_certificates().and_then(|chain| chain.first()) {
            None => ClientCertificate::Absent,
            Some(leaf) => peer_identity(leaf).map_or(ClientCertificate::WithoutRole, |id| {
                ClientCertificate::Identity(Arc::new(id))
            }),
        };
        let exporter = tls
            .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
            .ok();
        Self {
            remote: tcp.peer_addr().ok(),
            certificate,
            exporter,
        }
    }

    /// The connection's info as a request carries it.
    pub(crate) fn of_request<T>(request: &tonic::Request<T>) -> Option<&Self> {
        request.extensions().get::<Self>()
    }

    /// The connection's TLS exporter, which every quote on it must be bound to.
    pub(crate) fn exporter(&self) -> Option<ChannelExporter> {
        self.exporter.map(ChannelExporter::new)
    }

    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// `None`: no client certificate; `Some(None)`: one that names no role.
    pub(crate) fn identity(&self) -> Option<Option<&PeerIdentity>> {
        match &self.certificate {
            ClientCertificate::Absent => None,
            ClientCertificate::WithoutRole => Some(None),
            ClientCertificate::Identity(identity) => Some(Some(identity)),
        }
    }
}

/// A TLS connection handed to the gRPC server.
#[derive(Debug)]
pub(crate) struct EdgeConnection {
    inner: TlsStream<TcpStream>,
    info: EdgeInfo,
    /// For a peer without a client certificate: when its connection ends.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The caps an unauthenticated connection counts against, released when it closes.
    _slots: Option<(OwnedSemaphorePermit, SourceSlot)>,
}

impl EdgeConnection {
    pub(crate) fn authenticated(inner: TlsStream<TcpStream>) -> Self {
        Self {
            info: EdgeInfo::of(&inner),
            inner,
            deadline: None,
            _slots: None,
        }
    }

    pub(crate) fn unauthenticated(
        inner: TlsStream<TcpStream>,
        lifetime: Duration,
        global: OwnedSemaphorePermit,
        per_source: SourceSlot,
    ) -> Self {
        Self {
            info: EdgeInfo::of(&inner),
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(lifetime))),
            _slots: Some((global, per_source)),
        }
    }

    /// True once the lifetime is over. Polling the timer also registers the task's waker, so an
    /// idle connection is woken, and closed, when its time is up.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }
}

fn lifetime_over() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection without a client certificate reached its lifetime",
    )
}

impl AsyncRead for EdgeConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for EdgeConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(lifetime_over()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for EdgeConnection {
    type ConnectInfo = EdgeInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_it_back() {
        let slots = SourceSlots::new(2);
        let host: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let first = slots.claim(host).unwrap();
        let _second = slots.claim(host).unwrap();
        assert!(slots.claim(host).is_none());
        assert!(slots.claim(other).is_some());
        drop(first);
        assert!(slots.claim(host).is_some());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
