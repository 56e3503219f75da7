//! One real `swtpm` process: started on free loopback ports, polled until it answers, killed and
//! reaped on drop. Also speaks swtpm's control protocol (TPM reset, locality) and sends raw TPM
//! commands where a TCTI cannot (TPM2_Startup at locality 3).
//!
//! Ports: the TPM port P is even and the control port is P + 1 (tpm2-tss's swtpm TCTI expects
//! that). Each process hands out pairs from a random starting point below Linux's ephemeral
//! range, bind-probes both, and retries if swtpm still fails to bind (another test binary won the
//! race). swtpm's stderr goes to `<state dir>.log`, read back when it fails to start.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::HarnessError;

/// How long a starting swtpm may take to answer on its control channel (2-core CI, loaded).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 12;
/// Bound on any single control-channel or raw TPM exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Port pairs come from [PORT_BASE, PORT_BASE + 2 * PORT_PAIRS), below the ephemeral range
/// (32768+), so outgoing connections never sit on them.
const PORT_BASE: u32 = 20_000;
const PORT_PAIRS: u32 = 6_000;
/// Largest raw TPM response accepted (TPM2 responses are at most a few KiB).
const MAX_RESPONSE: usize = 8 * 1024;

// swtpm control-channel commands (swtpm_ioctls(3)); big-endian u32 code, then the request.
const CMD_GET_CAPABILITY: u32 = 0x01;
const CMD_INIT: u32 = 0x02;
const CMD_SET_LOCALITY: u32 = 0x05;

const TPM_RC_SUCCESS: u32 = 0x000;
const TPM_RC_INITIALIZE: u32 = 0x100;

/// A running swtpm.
#[derive(Debug)]
pub struct SwtpmProcess {
    child: Child,
    port: u16,
    state_dir: PathBuf,
    stderr_log: PathBuf,
}

/// The next candidate pair: sequential within this test process (no two devices of one process
/// ever try the same pair), from a random start so parallel test binaries rarely meet.
fn candidate_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let mut bytes = [0u8; 4];
        let start = if aws_lc_rs::rand::fill(&mut bytes).is_ok() {
            u32::from_be_bytes(bytes)
        } else {
            std::process::id()
        };
        AtomicU32::new(start % PORT_PAIRS)
    });
    let pair = next.fetch_add(1, Ordering::Relaxed) % PORT_PAIRS;
    // PORT_BASE + 2 * PORT_PAIRS < u16::MAX, so this never truncates.
    u16::try_from(PORT_BASE + 2 * pair).unwrap_or(20_000)
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn connect(port: u16, io_timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&loopback(port), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    Ok(stream)
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let chunk = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(chunk.try_into().ok()?))
}

impl SwtpmProcess {
    /// Starts swtpm with its state in `state_dir` (created if missing). Existing state is reused,
    /// which is how a device keeps its EK across a process restart.
    pub fn start(state_dir: &Path) -> Result<Self, HarnessError> {
        std::fs::create_dir_all(state_dir).map_err(|e| HarnessError::io("create", state_dir, e))?;
        // swtpm wants absolute paths (relative ones break once it changes directory).
        let state_dir = std::fs::canonicalize(state_dir)
            .map_err(|e| HarnessError::io("canonicalize", state_dir, e))?;
        let stderr_log = state_dir.with_extension("log");
        let mut last_error = String::from("no free port pair found");
        for _ in 0..START_ATTEMPTS {
            let port = candidate_port();
            if !port_free(port) || !port_free(port + 1) {
                continue;
            }
            let stderr = std::fs::File::create(&stderr_log)
                .map_err(|e| HarnessError::io("create", &stderr_log, e))?;
            let child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", state_dir.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                // A file, not a pipe: nobody drains a pipe, and a full one would block swtpm.
                .stderr(stderr)
                .spawn()
                .map_err(|source| HarnessError::Missing {
                    program: "swtpm",
                    source,
                })?;
            let mut process = Self {
                child,
                port,
                state_dir: state_dir.clone(),
                stderr_log: stderr_log.clone(),
            };
            match process.wait_ready() {
                Ok(()) => return Ok(process),
                // Dropping `process` kills and reaps the failed attempt.
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(HarnessError::Start {
            detail: format!("no success in {START_ATTEMPTS} attempts; last: {last_error}"),
        })
    }

    fn exited(&mut self) -> Option<HarnessError> {
        let status = self.child.try_wait().ok().flatten()?;
        let stderr = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        Some(HarnessError::Start {
            detail: format!("swtpm exited ({status}): {}", stderr.trim()),
        })
    }

    /// Ready when our child is alive and its control channel answers GET_CAPABILITY. The child
    /// is checked again afterwards: a swtpm that lost the bind race exits within milliseconds,
    /// and the port may then belong to someone else's swtpm.
    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(exit) = self.exited() {
                return Err(exit);
            }
            let probe = self.ctrl(CMD_GET_CAPABILITY, &[], 8, Duration::from_secs(1));
            if probe.is_ok() {
                std::thread::sleep(Duration::from_millis(30));
                return match self.exited() {
                    Some(exit) => Err(exit),
                    None => Ok(()),
                };
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Start {
                    detail: format!(
                        "swtpm on port {} did not answer within {READY_TIMEOUT:?}",
                        self.port
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TPM command port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control-channel port (power, reset, locality).
    pub fn ctrl_port(&self) -> u16 {
        self.port + 1
    }

    /// Where swtpm keeps its state (the EK seeds live here).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The TCTI string tss-esapi (and the agent) use to reach this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// One control-channel exchange on its own connection: `code` and `request` out, exactly
    /// `response_len` bytes back, within `timeout` per read or write.
    fn ctrl(
        &self,
        code: u32,
        request: &[u8],
        response_len: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, HarnessError> {
        let failed = |source| HarnessError::Channel {
            operation: "control command",
            port: self.ctrl_port(),
            source,
        };
        let mut stream = connect(self.ctrl_port(), timeout).map_err(failed)?;
        let mut message = code.to_be_bytes().to_vec();
        message.extend_from_slice(request);
        stream.write_all(&message).map_err(failed)?;
        let mut response = vec![0u8; response_len];
        stream.read_exact(&mut response).map_err(failed)?;
        Ok(response)
    }

    /// A control command whose response is a single result code.
    fn ctrl_result(
        &self,
        code: u32,
        request: &[u8],
        operation: &'static str,
    ) -> Result<(), HarnessError> {
        let response = self.ctrl(code, request, 4, IO_TIMEOUT)?;
        match be_u32(&response, 0) {
            Some(TPM_RC_SUCCESS) => Ok(()),
            result => Err(HarnessError::response(
                operation,
                format!("swtpm result {result:x?}"),
            )),
        }
    }

    /// Sets the locality of subsequent TPM commands (tpm2-tss's swtpm TCTI sets it back to 0
    /// before its own commands).
    pub fn set_locality(&self, locality: u8) -> Result<(), HarnessError> {
        self.ctrl_result(CMD_SET_LOCALITY, &[locality], "set locality")
    }

    /// Sends one raw TPM command on its own connection and returns the response code and bytes.
    pub fn raw_command(&self, command: &[u8]) -> Result<(u32, Vec<u8>), HarnessError> {
        let failed = |source| HarnessError::Channel {
            operation: "raw TPM command",
            port: self.port,
            source,
        };
        let mut stream = connect(self.port, IO_TIMEOUT).map_err(failed)?;
        stream.write_all(command).map_err(failed)?;
        let mut header = [0u8; 10];
        stream.read_exact(&mut header).map_err(failed)?;
        let size = be_u32(&header, 2)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| (10..=MAX_RESPONSE).contains(s))
            .ok_or_else(|| {
                HarnessError::response("raw command", format!("bad header {header:02x?}"))
            })?;
        let mut response = header.to_vec();
        response.resize(size, 0);
        if let Some(rest) = response.get_mut(10..) {
            stream.read_exact(rest).map_err(failed)?;
        }
        let code = be_u32(&header, 6).unwrap_or(u32::MAX);
        Ok((code, response))
    }

    /// TPM reset, as a power cycle: `_TPM_Init` through the control channel, then
    /// TPM2_Startup(CLEAR) sent from `locality`. PCRs are cleared (PCR 0 starts at 3 when the
    /// startup locality is 3) and resetCount advances. The locality is back at 0 afterwards.
    pub fn reset_at_locality(&self, locality: u8) -> Result<(), HarnessError> {
        if locality > 4 {
            return Err(HarnessError::Unsupported(format!("locality {locality}")));
        }
        let result = self.reset_inner(locality);
        let restored = self.set_locality(0);
        result.and(restored)
    }

    fn reset_inner(&self, locality: u8) -> Result<(), HarnessError> {
        self.set_locality(locality)?;
        self.ctrl_result(CMD_INIT, &0u32.to_be_bytes(), "TPM init")?;
        // TPM2_Startup(TPM_SU_CLEAR): tag NO_SESSIONS, size 12, TPM_CC_Startup.
        let startup = [
            0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x44, 0x00, 0x00,
        ];
        match self.raw_command(&startup)? {
            // INITIALIZE: something already started the TPM (a swtpm that does it on init).
            (TPM_RC_SUCCESS | TPM_RC_INITIALIZE, _) => Ok(()),
            (code, _) => Err(HarnessError::response(
                "TPM2_Startup after reset",
                format!("response code {code:#x}"),
            )),
        }
    }

    /// TPM reset from locality 0 (see [`SwtpmProcess::reset_at_locality`]).
    pub fn reset(&self) -> Result<(), HarnessError> {
        self.reset_at_locality(0)
    }

    /// Stops the process (state stays on disk).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SwtpmProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
