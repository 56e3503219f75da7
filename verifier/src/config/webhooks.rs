//! `[[webhooks]]`: where alerts are POSTed, and how the connection is secured.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://host:port/path`. `http://` only with `allow_insecure_http = true`.
    pub url: String,
    /// PEM file of the CA(s) the receiver's certificate must chain to. Required for `https://`:
    /// the system's roots are never used, so a certificate any public CA issued for the name
    /// is not enough.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the verifier's client certificate chain, for receivers that require one.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// PEM file of that certificate's private key (both or neither).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Accepts a plain `http://` URL (alerts then travel unencrypted; the signature header
    /// still proves their origin). Default false.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// One delivery attempt's time limit, seconds (1 to 300). Default 10.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// The retry delay doubles from 250 ms up to this, seconds (1 to 3600). Default 30.
    #[serde(default = "default_max_retry_delay")]
    pub max_retry_delay_seconds: u64,
}

fn default_timeout() -> u64 {
    10
}
fn default_max_retry_delay() -> u64 {
    30
}

impl WebhookConfig {
    /// A webhook with the defaults (tests and tools build them in code).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            client_certificate: None,
            client_key: None,
            allow_insecure_http: false,
            timeout_seconds: default_timeout(),
            max_retry_delay_seconds: default_max_retry_delay(),
        }
    }

    /// Checks the keys that need no file; `index` names the entry in errors.
    pub fn validate(&self, index: usize) -> Result<(), String> {
        let key = |name: &str| format!("webhooks[{index}].{name}");
        let lower = self.url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            if self.ca_file.is_none() {
                return Err(format!(
                    "{} is required for {:?}: the receiver's certificate is checked against it",
                    key("ca_file"),
                    self.url
                ));
            }
        } else if lower.starts_with("http://") {
            if !self.allow_insecure_http {
                return Err(format!(
                    "{} {:?} is plain HTTP: use https://, or set {} = true",
                    key("url"),
                    self.url,
                    key("allow_insecure_http")
                ));
            }
        } else {
            return Err(format!(
                "{} {:?} must start with https://",
                key("url"),
                self.url
            ));
        }
        if self.client_certificate.is_some() != self.client_key.is_some() {
            return Err(format!(
                "{} and {} go together",
                key("client_certificate"),
                key("client_key")
            ));
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            return Err(format!("{} must be 1 to 300", key("timeout_seconds")));
        }
        if !(1..=3600).contains(&self.max_retry_delay_seconds) {
            return Err(format!(
                "{} must be 1 to 3600",
                key("max_retry_delay_seconds")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_the_explicit_switch_and_https_a_ca() {
        let plain = WebhookConfig::new("http://siem.internal/alerts");
        let err = plain.validate(0).unwrap_err();
        assert!(err.contains("webhooks[0].allow_insecure_http"), "{err}");
        let allowed = WebhookConfig {
            allow_insecure_http: true,
            ..plain
        };
        allowed.validate(0).unwrap();
        let https = WebhookConfig::new("https://siem.internal/alerts");
        assert!(
            https
                .validate(1)
                .unwrap_err()
                .contains("webhooks[1].ca_file")
        );
        let https = WebhookConfig {
            ca_file: Some("/etc/siem-ca.pem".into()),
            ..https
        };
        https.validate(1).unwrap();
        assert!(WebhookConfig::new("ftp://x").validate(2).is_err());
    }
}
