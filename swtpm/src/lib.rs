//! Real `swtpm` processes as simulated devices, for tests and the demo.
//!
//! # Layout
//! - `process`: one swtpm process on free loopback ports (TPM port P, control port P + 1),
//!   polled until it answers, killed and reaped in `Drop`; speaks swtpm's control protocol for
//!   TPM resets and localities.
//! - `maker`: test TPM makers (root + intermediate CA, P-256) issuing EK certificates; a trusted
//!   one and a rogue one (`TestMakers`).
//! - `device`: a provisioned device (RSA-2048 and P-256 EK certificates in NV 0x01c00002 and
//!   0x01c0000a), boots, IMA, tamper helpers, reset and reboot.
//! - `boot`: boot profiles and the TCG crypto-agile event log they produce; a software replay.
//! - `ima`: `ima-ng` entries in the ASCII measurement-list format; the boot aggregate.
//!
//! A device lives in its own temp dir, removed on drop (after the process is killed):
//! ```text
//! DIR/tpm/                           swtpm state (EK seeds, NV)
//! DIR/tpm.log                        swtpm's stderr
//! DIR/binary_bios_measurements       the boot event log (as the kernel exposes it in securityfs)
//! DIR/ascii_runtime_measurements     the IMA measurement list
//! ```
//!
//! Nothing here holds a TPM connection open: swtpm serves one client at a time, and the agent
//! under test needs it too. Each operation connects, works and disconnects, under the device's
//! `access()` lock (which an in-process agent may share). Many devices run in parallel with no
//! global lock.
//!
//! ```no_run
//! # fn main() -> Result<(), trustchain_swtpm::HarnessError> {
//! use trustchain_swtpm::{Bank, BootProfile, SwtpmDevice, TestMakers};
//! let makers = TestMakers::generate()?;
//! let mut device = SwtpmDevice::start(&makers.trusted, "device-1")?;
//! device.boot(&BootProfile::default_linux().with_kernel(b"vmlinuz-6.6"))?;
//! device.ima_measure("/usr/bin/bash", b"bash")?;
//! let pcrs = device.read_pcrs(Bank::Sha256, &[0, 4, 7, 10])?;
//! # let _ = pcrs; Ok(()) }
//! ```

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
    /// A required program (swtpm) could not be run: the test must fail, not skip.
    #[error("cannot run {program} ({source}); install swtpm and swtpm-tools (scripts/setup.sh)")]
    Missing {
        program: &'static str,
        source: std::io::Error,
    },
    /// swtpm never answered, or exited (its stderr is in `detail`).
    #[error("swtpm failed to start: {detail}")]
    Start { detail: String },
    /// A tss-esapi call failed.
    #[error("TPM {operation}: {source}")]
    Tpm {
        operation: &'static str,
        source: tss_esapi::Error,
    },
    /// The TPM or swtpm answered, but not as expected.
    #[error("TPM {operation}: {detail}")]
    TpmResponse {
        operation: &'static str,
        detail: String,
    },
    /// A TPM or control-channel socket failed.
    #[error("swtpm {operation} on 127.0.0.1:{port}: {source}")]
    Channel {
        operation: &'static str,
        port: u16,
        source: std::io::Error,
    },
    #[error("certificate {operation}: {source}")]
    Certificate {
        operation: &'static str,
        source: rcgen::Error,
    },
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
    pub(crate) fn response(operation: &'static str, detail: impl Into<String>) -> Self {
        Self::TpmResponse {
            operation,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(operation: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }
}
