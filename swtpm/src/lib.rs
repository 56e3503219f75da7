//! Real `swtpm` processes as simulated devices, for tests and the demo.
//!
//! # Layout
//! - `process`: one swtpm process on free loopback ports, polled until ready, killed in `Drop`.
//! - `maker`: test TPM makers (root + intermediate CA) issuing EK certificates; a trusted one and
//!   a rogue one.
//! - `device`: a provisioned device (EK certificates in NV), boots, IMA, tamper helpers, reboot.
//! - `boot`: boot profiles and the TCG crypto-agile event log they produce.
//! - `ima`: `ima-ng` entries in the ASCII measurement-list format.
//!
//! Nothing here holds a TPM connection open: swtpm serves one client at a time, and the agent under
//! test needs it too. Many devices run in parallel with no global lock.

pub mod boot;
pub mod device;
pub mod ima;
pub mod maker;
pub mod process;

pub use boot::{Bank, BootEvent, BootProfile};
pub use device::{EkKind, SwtpmDevice};
pub use ima::ImaEntry;
pub use maker::{TestMakers, TpmMaker};
pub use process::SwtpmProcess;

use std::path::{Path, PathBuf};

/// Harness failures. A test that cannot run its real parts fails with one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    #[error("{0}")]
    Missing(String),
    #[error("swtpm failed to start: {0}")]
    Start(String),
    #[error("TPM: {0}")]
    Tpm(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl HarnessError {
    pub(crate) fn io(operation: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }
}
