//! The Attestation gRPC service: agents only, each for its own device (the device id is the
//! common name of its client certificate, which the verifier issued).

use std::sync::Arc;

use futures::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use trustchain_ca::Role;
use trustchain_proto::v1::{self, attestation_server::Attestation};

use super::auth;
use crate::attestation::session::{Inbound, Refusal};
use crate::device::DeviceState;
use crate::service::Service;

type Unboxed = Result<v1::VerifierMessage, Status>;
/// What the session sends (`session::Outbound` says why it is boxed).
type Boxed = Box<Result<v1::VerifierMessage, Refusal>>;

// The channel's item is boxed on purpose (`session::Outbound`); only here is it unboxed, and the
// session's refusal becomes the status the agent sees.
#[allow(clippy::boxed_local)]
fn unbox(message: Boxed) -> Unboxed {
    (*message).map_err(super::status::refusal)
}

/// The agent's half of the gRPC stream, as the session reads it: an error ends it like a close.
struct AgentStream(Streaming<v1::AgentMessage>);

impl Inbound for AgentStream {
    async fn next_message(&mut self) -> Option<v1::AgentMessage> {
        self.0.message().await.ok().flatten()
    }
}

#[derive(Debug)]
pub struct AttestationApi {
    service: Arc<Service>,
}

impl AttestationApi {
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl Attestation for AttestationApi {
    type AttestStream = futures::stream::Map<ReceiverStream<Boxed>, fn(Boxed) -> Unboxed>;

    async fn attest(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttestStream>, Status> {
        let agent = auth::require(&request, Role::Agent)?;
        // Quotes are bound to this connection's TLS exporter: without it no quote could be
        // checked against the channel, so no stream opens (fail closed).
        let exporter = super::connection::EdgeInfo::of_request(&request)
            .and_then(super::connection::EdgeInfo::exporter)
            .ok_or_else(|| Status::failed_precondition("no channel binding"))?;
        let device = self
            .service
            .storage()
            .device(&agent.name)
            .map_err(|error| super::status::internal("attest", error))?
            .ok_or_else(|| Status::permission_denied("unknown device"))?;
        // Only the certificate issued at the latest enrollment opens a stream.
        if device.client_certificate_serial_hex != agent.serial_hex {
            return Err(Status::permission_denied("superseded certificate"));
        }
        if matches!(
            device.state,
            DeviceState::Decommissioned | DeviceState::Quarantined
        ) {
            return Err(Status::permission_denied("device may not attest"));
        }
        let (outbound, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(crate::attestation::session::run(
            self.service.clone(),
            agent.name,
            exporter,
            AgentStream(request.into_inner()),
            outbound,
            super::admin::state_to_proto,
        ));
        Ok(Response::new(
            ReceiverStream::new(rx).map(unbox as fn(Boxed) -> Unboxed),
        ))
    }
}
