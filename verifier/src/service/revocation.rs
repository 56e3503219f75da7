//! The deployment CA's revocation list: rebuilt from the device states and the revoked
//! operators, and handed to whoever enforces it (the TLS layer registers a [`CrlSink`]).

use std::sync::{Arc, Mutex};

use trustchain_ca::Authority;

use crate::clock::now_unix_millis;
use crate::device::DeviceState;
use crate::storage::Storage;

/// Takes each new CRL (DER); connections made afterwards are checked against it.
pub trait CrlSink: std::fmt::Debug + Send + Sync {
    fn set_crls(&self, crls: Vec<Vec<u8>>) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("deployment CA: {0}")]
    Ca(#[from] trustchain_ca::CaError),
    #[error("TLS: {0}")]
    Sink(String),
}

/// The CRL in force and where it goes.
#[derive(Debug, Default)]
pub struct Revocations {
    /// The last CRL built (DER), given to sinks registered later.
    current: Mutex<Vec<Vec<u8>>>,
    sinks: Mutex<Vec<Arc<dyn CrlSink>>>,
}

impl Revocations {
    /// Rebuilds the CRL from the devices that are decommissioned or quarantined and the revoked
    /// operators, and gives it to every sink: those certificates fail their next handshake.
    pub fn refresh(&self, storage: &dyn Storage, ca: &Authority) -> Result<(), RevocationError> {
        use trustchain_ca::revocation::{Reason, RevokedEntry};
        let entries: Vec<RevokedEntry> = storage
            .devices()?
            .into_iter()
            .filter_map(|d| {
                let reason = match d.state {
                    DeviceState::Decommissioned => Reason::Decommissioned,
                    DeviceState::Quarantined => Reason::Quarantined,
                    _ => return None,
                };
                Some(RevokedEntry {
                    serial_hex: d.client_certificate_serial_hex,
                    revoked_at_unix: d.state_changed_at_unix,
                    reason,
                })
            })
            .chain(ca.revoked_operators()?)
            .collect();
        let crls = vec![ca.crl(&entries, now_unix_millis().max(1) as u64)?];
        // Held while the sinks take it: two refreshes never hand them CRLs out of order.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *current = crls.clone();
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for sink in sinks {
            sink.set_crls(crls.clone()).map_err(RevocationError::Sink)?;
        }
        Ok(())
    }

    /// The CRL in force now (empty before the first refresh).
    pub fn current(&self) -> Vec<Vec<u8>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers a sink; it gets the CRL in force now, then every new one.
    pub fn register(&self, sink: Arc<dyn CrlSink>) -> Result<(), RevocationError> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        sink.set_crls(current.clone())
            .map_err(RevocationError::Sink)?;
        self.sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sink);
        Ok(())
    }
}
