//! One real `swtpm` process: started in its own temp dir on free loopback ports, polled until it
//! answers, killed and reaped on drop.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::HarnessError;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 8;

/// A running swtpm.
#[derive(Debug)]
pub struct SwtpmProcess {
    child: Child,
    port: u16,
    state_dir: PathBuf,
}

/// A pseudo-random port in 20000..60000, different per call and per process.
fn candidate_port(attempt: usize) -> u16 {
    let mut bytes = [0u8; 2];
    let random = if aws_lc_rs::rand::fill(&mut bytes).is_ok() {
        u16::from_be_bytes(bytes)
    } else {
        (std::process::id() as u16).wrapping_add(attempt as u16 * 7919)
    };
    20000 + (random % 20000) * 2
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

impl SwtpmProcess {
    /// Starts swtpm with its state in `state_dir` (created if missing). Existing state is reused,
    /// which is how a device keeps its EK across a process restart.
    pub fn start(state_dir: &Path) -> Result<Self, HarnessError> {
        std::fs::create_dir_all(state_dir).map_err(|e| HarnessError::io("create", state_dir, e))?;
        let mut last_error = String::new();
        for attempt in 0..START_ATTEMPTS {
            let port = candidate_port(attempt);
            if !port_free(port) || !port_free(port + 1) {
                continue;
            }
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
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    HarnessError::Missing(format!(
                        "cannot run swtpm ({e}); install swtpm (scripts/setup.sh)"
                    ))
                })?;
            let mut process = Self {
                child,
                port,
                state_dir: state_dir.to_path_buf(),
            };
            match process.wait_ready() {
                Ok(()) => return Ok(process),
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(HarnessError::Start(format!(
            "swtpm did not start after {START_ATTEMPTS} attempts: {last_error}"
        )))
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                return Err(HarnessError::Start(format!(
                    "swtpm exited ({status}): {}",
                    stderr.trim()
                )));
            }
            let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port + 1);
            if TcpStream::connect_timeout(&address.into(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Start("swtpm did not answer in time".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TPM command port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control-channel port (power and reset).
    pub fn ctrl_port(&self) -> u16 {
        self.port + 1
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The TCTI string tss-esapi (and the agent) use to reach this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// TPM reset through the control channel (CMD_INIT): PCRs are cleared and the next
    /// TPM2_Startup(CLEAR) advances resetCount, as a power cycle does.
    pub fn reset(&self) -> Result<(), HarnessError> {
        let output = Command::new("swtpm_ioctl")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{}", self.ctrl_port()))
            .arg("-i")
            .output()
            .map_err(|e| HarnessError::Missing(format!("cannot run swtpm_ioctl ({e})")))?;
        if !output.status.success() {
            return Err(HarnessError::Tpm(format!(
                "swtpm_ioctl -i failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
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
