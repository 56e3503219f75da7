//! The Admin gRPC service: operators only. An agent certificate never opens an admin call, and
//! each call needs the operator role `permissions` names for it.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use trustchain_ca::Role;
use trustchain_ca::role::PeerIdentity;
use trustchain_proto::v1::{self, admin_server::Admin};

use super::auth;
use super::imports::{self, DocumentImport};
use super::permissions::{self, AdminCall};
use crate::attestation::state::Input;
use crate::device::{DeviceRecord, DeviceState, EventKind};
use crate::service::Service;

#[derive(Debug)]
pub struct AdminApi {
    service: Arc<Service>,
}

impl AdminApi {
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }
}

pub fn state_to_proto(state: DeviceState) -> v1::TrustState {
    match state {
        DeviceState::Enrolled => v1::TrustState::Enrolled,
        DeviceState::Trusted => v1::TrustState::Trusted,
        DeviceState::Untrusted => v1::TrustState::Untrusted,
        DeviceState::TimedOut => v1::TrustState::TimedOut,
        DeviceState::Quarantined => v1::TrustState::Quarantined,
        DeviceState::Decommissioned => v1::TrustState::Decommissioned,
    }
}

fn summary(service: &Service, device: &DeviceRecord) -> v1::DeviceSummary {
    v1::DeviceSummary {
        device_id: device.device_id.clone(),
        hostname: device.facts.hostname.clone(),
        tier: service.assigned_tier(device),
        state: state_to_proto(device.state) as i32,
        last_appraisal_unix: service.last_appraisal_unix(device),
        reason: device.state_reason.clone(),
    }
}

fn internal(error: impl std::fmt::Display) -> Status {
    super::status::internal("admin", error)
}

impl AdminApi {
    /// The caller, if its certificate's roles allow `call`. A refusal is PERMISSION_DENIED and
    /// an alert in the audit log naming the operator, the call and the missing role.
    fn permit<T>(&self, request: &Request<T>, call: AdminCall) -> Result<PeerIdentity, Status> {
        let caller = auth::require(request, Role::Operator)?;
        let Err(denied) = permissions::check(&caller, call) else {
            return Ok(caller);
        };
        let roles = trustchain_ca::OperatorRole::attribute_value(&caller.operator_roles);
        let detail = format!(
            "admin call {} refused for operator {:?} (certificate serial {}, roles {roles:?}): {denied}",
            call.name(),
            caller.name,
            caller.serial_hex,
        );
        tracing::warn!(caller = %crate::untrusted_text::Escaped(&caller.name), call = call.name(), "admin call refused");
        imports::audit(&self.service, EventKind::Alert, detail);
        Err(Status::permission_denied(format!(
            "this certificate may not call {}: {denied}",
            call.name()
        )))
    }

    /// Imports a trust document for an operator (see `imports`).
    fn import(
        &self,
        request: Request<v1::SignedDocument>,
        kind: DocumentImport,
    ) -> Result<Response<v1::ImportResult>, Status> {
        let call = match kind {
            DocumentImport::TrustList => AdminCall::ImportTrustList,
            DocumentImport::Manifest => AdminCall::ImportManifest,
            DocumentImport::Policy => AdminCall::ImportPolicy,
        };
        let operator = self.permit(&request, call)?;
        let bytes = request.into_inner().document;
        imports::import(&self.service, &operator, kind, bytes).map(Response::new)
    }

    fn device(&self, device_id: &str) -> Result<DeviceRecord, Status> {
        self.service
            .storage()
            .device(device_id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found("no such device"))
    }

    /// An operator action on a device, recorded with the operator's identity.
    fn act(
        &self,
        request: Request<v1::DeviceRequest>,
        call: AdminCall,
        input: Input,
    ) -> Result<Response<v1::DeviceDetail>, Status> {
        let operator = self.permit(&request, call)?;
        let message = request.into_inner();
        let device = self
            .service
            .operator_action(&message.device_id, input, &operator.name, &message.comment)
            .map_err(super::status::action)?;
        Ok(Response::new(self.detail(&device)))
    }

    fn detail(&self, device: &DeviceRecord) -> v1::DeviceDetail {
        let failed_rules = match device.state {
            DeviceState::Untrusted | DeviceState::Quarantined => self
                .service
                .last_failed_verdict(&device.device_id)
                .map(|verdict| {
                    verdict
                        .failures()
                        .iter()
                        .map(|f| v1::FailedRule {
                            rule: f.rule.name().to_string(),
                            subject: f.subject.clone(),
                            measured: f.measured.clone(),
                            expected: f.expected.clone(),
                            detail: f.detail.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        v1::DeviceDetail {
            summary: Some(summary(&self.service, device)),
            failed_rules,
            last_result_jwt: self
                .service
                .last_result(&device.device_id)
                .unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn list_devices(
        &self,
        request: Request<v1::ListDevicesRequest>,
    ) -> Result<Response<v1::ListDevicesResponse>, Status> {
        self.permit(&request, AdminCall::ListDevices)?;
        let devices = self.service.storage().devices().map_err(internal)?;
        Ok(Response::new(v1::ListDevicesResponse {
            devices: devices.iter().map(|d| summary(&self.service, d)).collect(),
        }))
    }

    async fn get_device(
        &self,
        request: Request<v1::DeviceRequest>,
    ) -> Result<Response<v1::DeviceDetail>, Status> {
        self.permit(&request, AdminCall::GetDevice)?;
        let device = self.device(&request.get_ref().device_id)?;
        Ok(Response::new(self.detail(&device)))
    }

    async fn clear_device(
        &self,
        request: Request<v1::DeviceRequest>,
    ) -> Result<Response<v1::DeviceDetail>, Status> {
        self.act(request, AdminCall::ClearDevice, Input::OperatorCleared)
    }

    async fn decommission_device(
        &self,
        request: Request<v1::DeviceRequest>,
    ) -> Result<Response<v1::DeviceDetail>, Status> {
        self.act(request, AdminCall::DecommissionDevice, Input::Decommission)
    }

    async fn import_trust_list(
        &self,
        request: Request<v1::SignedDocument>,
    ) -> Result<Response<v1::ImportResult>, Status> {
        self.import(request, DocumentImport::TrustList)
    }

    async fn import_manifest(
        &self,
        request: Request<v1::SignedDocument>,
    ) -> Result<Response<v1::ImportResult>, Status> {
        self.import(request, DocumentImport::Manifest)
    }

    async fn import_policy(
        &self,
        request: Request<v1::SignedDocument>,
    ) -> Result<Response<v1::ImportResult>, Status> {
        self.import(request, DocumentImport::Policy)
    }

    async fn approve_import(
        &self,
        request: Request<v1::ApproveImportRequest>,
    ) -> Result<Response<v1::ImportResult>, Status> {
        let approver = self.permit(&request, AdminCall::ApproveImport)?;
        let message = request.into_inner();
        imports::approve(&self.service, &approver, &message.digest, &message.comment)
            .map(Response::new)
    }

    type ExportAuditStream = ReceiverStream<Result<v1::AuditRecord, Status>>;

    async fn export_audit(
        &self,
        request: Request<v1::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        self.permit(&request, AdminCall::ExportAudit)?;
        let from = request.get_ref().from_sequence;
        let lines = self.service.export_audit(from).map_err(internal)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for line in lines {
                let sequence = match &line {
                    crate::audit::AuditLine::Record { sequence, .. }
                    | crate::audit::AuditLine::Checkpoint { sequence, .. } => *sequence,
                    crate::audit::AuditLine::ExportEnd { last_sequence, .. } => *last_sequence,
                };
                let record = serde_json::to_vec(&line).unwrap_or_default();
                if tx
                    .send(Ok(v1::AuditRecord { sequence, record }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchStream = ReceiverStream<Result<v1::StateChange, Status>>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.permit(&request, AdminCall::Watch)?;
        let from = request.get_ref().from_sequence;
        // Subscribe first, then read the backlog: nothing falls between the two, and duplicates
        // are dropped by sequence.
        let mut live = self.service.subscribe();
        let backlog = self.service.state_changes_since(from).map_err(internal)?;
        let service = self.service.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut last = from.saturating_sub(1);
            for change in backlog {
                last = change.sequence;
                if tx.send(Ok(change_to_proto(change))).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(change) if change.sequence > last => {
                        last = change.sequence;
                        if tx.send(Ok(change_to_proto(change))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow a watcher: catch up from the audit log.
                        let Ok(missed) = service.state_changes_since(last + 1) else {
                            return;
                        };
                        for change in missed {
                            last = change.sequence;
                            if tx.send(Ok(change_to_proto(change))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn change_to_proto(change: crate::service::StateChange) -> v1::StateChange {
    v1::StateChange {
        sequence: change.sequence,
        device_id: change.device_id,
        previous: state_to_proto(change.previous) as i32,
        current: state_to_proto(change.current) as i32,
        reason: change.reason,
        result_jwt: change.result_jwt,
        at_unix_millis: change.at_unix_millis,
    }
}
