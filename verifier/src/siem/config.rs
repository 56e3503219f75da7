//! The `[siem]` tables: where state changes and alerts are exported. Both sinks are off unless
//! their table is present. Shapes are checked when the configuration is loaded; the files named
//! (CA, client certificate, ECS file) are read or opened when the verifier starts.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemConfig {
    /// RFC 5424 messages over TLS (RFC 5425 framing) to a syslog receiver.
    #[serde(default)]
    pub syslog: Option<SyslogConfig>,
    /// One JSON object per line, in the Elastic Common Schema shape, appended to a file.
    #[serde(default)]
    pub ecs: Option<EcsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the receiver (RFC 5425's port is 6514).
    pub address: String,
    /// The name the receiver's certificate must carry (DNS name or IP address).
    pub server_name: String,
    /// PEM file of the CA certificate(s) the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate chain presented to receivers that ask for a client certificate.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM, mode 0600).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters. Default `trustchain-verifier`.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Syslog facility, 0 to 23. Default 13 (log audit).
    #[serde(default = "default_facility")]
    pub facility: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsConfig {
    /// The JSON-lines file, created if absent and appended to; each line is fsync'd before the
    /// export moves past it.
    pub path: PathBuf,
}

fn default_app_name() -> String {
    "trustchain-verifier".into()
}

fn default_facility() -> u8 {
    13
}

/// RFC 5424 PRINTUSASCII: %d33-126.
pub(crate) fn is_print_us_ascii(text: &str) -> bool {
    text.bytes().all(|b| (33..=126).contains(&b))
}

impl SiemConfig {
    /// Checks the shape of every key; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(syslog) = &self.syslog {
            syslog.validate()?;
        }
        if let Some(ecs) = &self.ecs
            && ecs.path.as_os_str().is_empty()
        {
            return Err("siem.ecs.path must not be empty".into());
        }
        Ok(())
    }
}

impl SyslogConfig {
    fn validate(&self) -> Result<(), String> {
        let port = self
            .address
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|port| port.parse::<u16>().ok());
        if port.is_none_or(|p| p == 0) {
            return Err(format!(
                "siem.syslog.address {:?} must be host:port",
                self.address
            ));
        }
        if rustls_pki_types::ServerName::try_from(self.server_name.as_str()).is_err() {
            return Err(format!(
                "siem.syslog.server_name {:?} is not a DNS name or IP address",
                self.server_name
            ));
        }
        if self.app_name.is_empty()
            || self.app_name.len() > 48
            || !is_print_us_ascii(&self.app_name)
        {
            return Err(format!(
                "siem.syslog.app_name {:?} must be 1 to 48 printable US-ASCII characters",
                self.app_name
            ));
        }
        if self.facility > 23 {
            return Err(format!(
                "siem.syslog.facility {} must be 0 to 23",
                self.facility
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("siem.syslog.client_cert and siem.syslog.client_key go together".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn syslog(extra: &str) -> Result<(), String> {
        let text = format!(
            "[syslog]\naddress = \"siem:6514\"\nserver_name = \"siem\"\nca_file = \"ca.pem\"\n{extra}"
        );
        toml::from_str::<SiemConfig>(&text).unwrap().validate()
    }

    #[test]
    fn absent_tables_turn_the_export_off_and_a_bad_key_is_named() {
        let off: SiemConfig = toml::from_str("").unwrap();
        assert!(off.syslog.is_none() && off.ecs.is_none());
        assert_eq!(syslog(""), Ok(()));
        for (extra, key) in [
            ("facility = 24", "siem.syslog.facility"),
            ("app_name = \"a b\"", "siem.syslog.app_name"),
            ("client_cert = \"c.pem\"", "siem.syslog.client_cert"),
        ] {
            let error = syslog(extra).unwrap_err();
            assert!(error.starts_with(key), "{error}");
        }
        let bad_address = SiemConfig {
            syslog: Some(SyslogConfig {
                address: "siem".into(),
                ..toml::from_str::<SiemConfig>(
                    "[syslog]\naddress = \"a:1\"\nserver_name = \"s\"\nca_file = \"c\"",
                )
                .unwrap()
                .syslog
                .unwrap()
            }),
            ecs: None,
        };
        assert!(
            bad_address
                .validate()
                .unwrap_err()
                .starts_with("siem.syslog.address")
        );
        assert!(toml::from_str::<SiemConfig>("[ecs]\npath = \"x\"\nfsync = 1").is_err());
    }

    #[test]
    fn the_commented_tables_of_the_documented_sample_parse_once_uncommented() {
        let sample = include_str!("../../../docs/verifier.example.toml");
        let start = sample.find("# [siem.syslog]").unwrap();
        let tables: String = sample[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.split_once(" = ").is_some())
            .map(|l| format!("{l}\n"))
            .collect();
        #[derive(Deserialize)]
        struct Sample {
            siem: SiemConfig,
        }
        let parsed: Sample = toml::from_str(&tables).unwrap();
        parsed.siem.validate().unwrap();
        let syslog = parsed.siem.syslog.unwrap();
        assert_eq!(syslog.facility, 13);
        assert!(syslog.client_key.is_some());
        assert!(parsed.siem.ecs.is_some());
    }
}
