//! Where the TPM is: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321` or `tabrmd:`,
//! parsed strictly so that a typo in the configuration fails at startup with a clear message
//! (tss-esapi's own parser ignores unknown keys and falls back to defaults).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use tss_esapi::tcti_ldr::TctiNameConf;

/// The kernel's resource manager: every client gets its own object and session space, so short
/// connections from the agent and other tools do not see each other's handles.
pub const DEFAULT_DEVICE: &str = "/dev/tpmrm0";
/// swtpm's default command port.
pub const DEFAULT_SWTPM_PORT: u16 = 2321;
const DEFAULT_SWTPM_HOST: &str = "127.0.0.1";
const MAX_LENGTH: usize = 512;

/// A parsed TCTI string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TctiConfig {
    /// A TPM character device (`device:` alone means [`DEFAULT_DEVICE`]).
    Device { path: PathBuf },
    /// swtpm's TCP protocol (`swtpm:` alone means 127.0.0.1:2321).
    Swtpm { host: String, port: u16 },
    /// The tpm2-abrmd resource manager over D-Bus.
    Tabrmd {
        bus_name: Option<String>,
        /// `system` or `session`.
        bus_type: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TctiConfigError {
    #[error(
        "TCTI {input:?}: unknown interface {interface:?}; use device:/dev/tpmrm0, \
         swtpm:host=H,port=P or tabrmd:"
    )]
    UnknownInterface { input: String, interface: String },
    #[error("TCTI {input:?}: {detail}")]
    Invalid { input: String, detail: String },
}

impl TctiConfig {
    /// The tss-esapi form of this configuration.
    pub fn name_conf(&self) -> Result<TctiNameConf, TctiConfigError> {
        let text = self.to_string();
        TctiNameConf::from_str(&text).map_err(|e| TctiConfigError::Invalid {
            input: text,
            detail: format!("rejected by tss-esapi: {e}"),
        })
    }

    /// True for swtpm: it has no resource manager and serves one client at a time.
    pub fn is_swtpm(&self) -> bool {
        matches!(self, TctiConfig::Swtpm { .. })
    }
}

impl fmt::Display for TctiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TctiConfig::Device { path } => write!(f, "device:{}", path.display()),
            TctiConfig::Swtpm { host, port } => write!(f, "swtpm:host={host},port={port}"),
            TctiConfig::Tabrmd { bus_name, bus_type } => {
                let options: Vec<String> = [("bus_name", bus_name), ("bus_type", bus_type)]
                    .into_iter()
                    .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={v}")))
                    .collect();
                write!(f, "tabrmd:{}", options.join(","))
            }
        }
    }
}

/// `key=value` pairs separated by commas; each key at most once and one of `allowed`.
fn options<'a>(
    input: &str,
    text: &'a str,
    allowed: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, TctiConfigError> {
    let invalid = |detail: String| TctiConfigError::Invalid {
        input: input.to_string(),
        detail,
    };
    let mut seen: Vec<(&str, &str)> = Vec::new();
    if text.is_empty() {
        return Ok(seen);
    }
    for part in text.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("{part:?} is not key=value")))?;
        if !allowed.contains(&key) {
            return Err(invalid(format!(
                "unknown option {key:?} (expected {})",
                allowed.join(", ")
            )));
        }
        if seen.iter().any(|(k, _)| *k == key) {
            return Err(invalid(format!("{key} given twice")));
        }
        if value.is_empty() {
            return Err(invalid(format!("{key} is empty")));
        }
        seen.push((key, value));
    }
    Ok(seen)
}

fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    // A DNS name: labels of letters, digits and hyphens, not starting or ending with a hyphen.
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl FromStr for TctiConfig {
    type Err = TctiConfigError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |detail: &str| TctiConfigError::Invalid {
            input: input.chars().take(64).collect(),
            detail: detail.to_string(),
        };
        if input.len() > MAX_LENGTH {
            return Err(invalid("too long"));
        }
        let (interface, rest) = input.split_once(':').unwrap_or((input, ""));
        match interface {
            "device" => {
                if rest.is_empty() {
                    return Ok(TctiConfig::Device {
                        path: PathBuf::from(DEFAULT_DEVICE),
                    });
                }
                if !rest.starts_with('/') {
                    return Err(invalid("the device path must be absolute"));
                }
                if rest.contains(',') || rest.contains('=') {
                    return Err(invalid(
                        "device: takes a path only, e.g. device:/dev/tpmrm0",
                    ));
                }
                Ok(TctiConfig::Device {
                    path: PathBuf::from(rest),
                })
            }
            "swtpm" => {
                let mut host = DEFAULT_SWTPM_HOST.to_string();
                let mut port = DEFAULT_SWTPM_PORT;
                for (key, value) in options(input, rest, &["host", "port"])? {
                    if key == "host" {
                        if !valid_host(value) {
                            return Err(invalid("host is neither an IP address nor a DNS name"));
                        }
                        host = value.to_string();
                    } else {
                        port = value
                            .parse::<u16>()
                            .ok()
                            .filter(|p| *p != 0)
                            .ok_or_else(|| invalid("port must be 1..65535"))?;
                    }
                }
                Ok(TctiConfig::Swtpm { host, port })
            }
            "tabrmd" => {
                let mut bus_name = None;
                let mut bus_type = None;
                for (key, value) in options(input, rest, &["bus_name", "bus_type"])? {
                    if key == "bus_name" {
                        let valid = value.contains('.')
                            && value.split('.').all(|part| {
                                !part.is_empty()
                                    && part
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                            });
                        if !valid {
                            return Err(invalid("bus_name must look like com.intel.tss2.Tabrmd"));
                        }
                        bus_name = Some(value.to_string());
                    } else {
                        if value != "system" && value != "session" {
                            return Err(invalid("bus_type must be system or session"));
                        }
                        bus_type = Some(value.to_string());
                    }
                }
                Ok(TctiConfig::Tabrmd { bus_name, bus_type })
            }
            "mssim" => Err(invalid(
                "mssim: is not supported (it does not speak swtpm's protocol); use swtpm:",
            )),
            other => Err(TctiConfigError::UnknownInterface {
                input: input.chars().take(64).collect(),
                interface: other.chars().take(32).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TctiConfig, TctiConfigError> {
        text.parse()
    }

    #[test]
    fn documented_forms_parse_and_round_trip() {
        for (text, expected) in [
            (
                "device:/dev/tpmrm0",
                TctiConfig::Device {
                    path: "/dev/tpmrm0".into(),
                },
            ),
            (
                "device",
                TctiConfig::Device {
                    path: DEFAULT_DEVICE.into(),
                },
            ),
            (
                "swtpm:host=127.0.0.1,port=2321",
                TctiConfig::Swtpm {
                    host: "127.0.0.1".into(),
                    port: 2321,
                },
            ),
            (
                "swtpm:port=40000,host=tpm.local",
                TctiConfig::Swtpm {
                    host: "tpm.local".into(),
                    port: 40000,
                },
            ),
            (
                "swtpm:",
                TctiConfig::Swtpm {
                    host: "127.0.0.1".into(),
                    port: 2321,
                },
            ),
            (
                "tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=session",
                TctiConfig::Tabrmd {
                    bus_name: Some("com.intel.tss2.Tabrmd".into()),
                    bus_type: Some("session".into()),
                },
            ),
            (
                "tabrmd",
                TctiConfig::Tabrmd {
                    bus_name: None,
                    bus_type: None,
                },
            ),
        ] {
            let parsed = parse(text).unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parse(&parsed.to_string()).unwrap(), parsed, "{text}");
            parsed.name_conf().unwrap();
        }
    }

    #[test]
    fn mistakes_are_refused_with_the_reason() {
        for (text, reason) in [
            ("swtpm:host=127.0.0.1,prot=2321", "unknown option"),
            ("swtpm:port=0", "port"),
            ("swtpm:port=70000", "port"),
            ("swtpm:port=", "empty"),
            ("swtpm:port=1,port=2", "twice"),
            ("swtpm:host=-bad", "host"),
            ("swtpm:host=a b", "host"),
            ("swtpm:hostonly", "key=value"),
            ("device:dev/tpmrm0", "absolute"),
            ("device:/dev/tpm0,x=1", "path only"),
            ("tabrmd:bus_type=bus", "system or session"),
            ("mssim:port=2321", "not supported"),
            ("tpm:/dev/tpm0", "unknown interface"),
            ("", "unknown interface"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
        assert!(parse(&"x".repeat(4096)).is_err());
    }
}
