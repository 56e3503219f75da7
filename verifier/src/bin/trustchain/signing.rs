//! The arguments every `sign` subcommand takes (a signer's key, the document, the JWS's path),
//! and the reading of the key and document they name.

use std::path::PathBuf;

use anyhow::Context as _;
use trustchain_verifier::audit::SigningKey;

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The signer's key: PKCS#8 DER, P-256.
    #[arg(long)]
    pub key: PathBuf,
    /// The document to sign (a policy's TOML, a manifest's or trust list's JSON).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Where to write the JWS.
    #[arg(long)]
    pub out: PathBuf,
}

impl SignArgs {
    /// The signing key and the document's text; errors name the file.
    pub fn read(&self) -> anyhow::Result<(SigningKey, String)> {
        let key_bytes =
            std::fs::read(&self.key).with_context(|| format!("reading {}", self.key.display()))?;
        let key = SigningKey::from_pkcs8(&key_bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.key.display()))?;
        let text = std::fs::read_to_string(&self.input)
            .with_context(|| format!("reading {}", self.input.display()))?;
        Ok((key, text))
    }
}
