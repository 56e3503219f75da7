//! `trustchain-ca`: the deployment PKI's command line.
//!
//! ```text
//! trustchain-ca init --dir DIR [--organization NAME]
//! trustchain-ca issue-verifier --dir DIR --out PREFIX [--dns NAME]... [--ip ADDR]...
//! trustchain-ca issue-operator --dir DIR --out PREFIX --name NAME --role ROLE [--role ROLE]...
//! trustchain-ca revoke-operator --dir DIR --cert OPERATOR.pem
//! ```
//! Issued keys are written with mode 0600 next to their certificates (`PREFIX.pem`,
//! `PREFIX.key.pem`); the CA chain is `DIR/issuing.pem` + `DIR/root.pem`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use trustchain_ca::files::{write_public, write_secret};
use trustchain_ca::{Authority, IssuedCertificate, OperatorRole};

/// TrustChain deployment CA: creates the CA and issues the verifier's and operators' certificates.
/// Agents get theirs from the verifier at enrollment, from a CSR, so their keys never leave them.
#[derive(Debug, Parser)]
#[command(name = "trustchain-ca", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new CA (root + issuing CA) in an empty directory.
    Init {
        /// Directory for the CA's keys (0600) and certificates.
        #[arg(long)]
        dir: PathBuf,
        /// Organization name in the CA certificates.
        #[arg(long, default_value = "TrustChain Deployment")]
        organization: String,
    },
    /// Issue the verifier's TLS server certificate and key.
    IssueVerifier {
        #[arg(long)]
        dir: PathBuf,
        /// Output prefix: writes PREFIX.pem and PREFIX.key.pem.
        #[arg(long)]
        out: PathBuf,
        /// DNS names the verifier is reached by (repeatable).
        #[arg(long = "dns", default_value = "localhost")]
        dns: Vec<String>,
        /// IP addresses the verifier is reached by (repeatable).
        #[arg(long = "ip", default_value = "127.0.0.1")]
        ips: Vec<IpAddr>,
    },
    /// Issue an operator's TLS client certificate and key (for the `trustchain` CLI).
    IssueOperator {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The operator's name, recorded in the audit log with each action.
        #[arg(long)]
        name: String,
        /// What the certificate allows (repeatable, at least one): `viewer` reads (devices,
        /// history, watch, audit export); `operator` also clears and decommissions devices;
        /// `policy-admin` also imports trust lists, manifests and policies and approves imports.
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<OperatorRole>,
    },
    /// Revoke an operator's certificate (one this CA issued): it goes on the CRL the verifier
    /// serves with, and the verifier refuses it on every admin call from then on, open
    /// connections included. Recorded in DIR/revoked-operators.json.
    RevokeOperator {
        #[arg(long)]
        dir: PathBuf,
        /// The operator's certificate (PEM or DER), as `issue-operator` wrote it.
        #[arg(long, required_unless_present = "serial", conflicts_with = "serial")]
        cert: Option<PathBuf>,
        /// Or its serial number (hex, as `issue-operator` printed it), when the file is lost.
        #[arg(long)]
        serial: Option<String>,
    },
    /// Make the trust-list authority's signing key (`trustchain trust-list sign --key`): writes
    /// DIR/trust-list-authority.pk8 (0600) and .pub, the file the verifier's
    /// `trust_list_authority` setting names.
    TrustListKey {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Make a supplier's manifest-signing key (`trustchain manifest sign --key`): writes
    /// DIR/NAME.pk8 (0600) and DIR/NAME.pub, the public key a trust list admits with a scope.
    SupplierKey {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

fn parse_role(name: &str) -> Result<OperatorRole, String> {
    OperatorRole::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = OperatorRole::ALL.iter().map(|r| r.name()).collect();
        format!("unknown role {name:?}; one of {}", known.join(", "))
    })
}

fn write_issued(prefix: &Path, issued: &IssuedCertificate) -> anyhow::Result<()> {
    let cert = prefix.with_extension("pem");
    write_public(&cert, issued.pem.as_bytes())?;
    if let Some(key) = &issued.key_pem {
        write_secret(&prefix.with_extension("key.pem"), key.as_bytes())?;
    }
    println!("{} (serial {})", cert.display(), issued.serial_hex);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { dir, organization } => {
            let ca = Authority::create(&dir, &organization)?;
            println!("created CA in {}", ca.dir().display());
        }
        Command::IssueVerifier { dir, out, dns, ips } => {
            let ca = Authority::load(&dir).context("loading the CA")?;
            write_issued(&out, &ca.issue_verifier(&dns, &ips)?)?;
        }
        Command::IssueOperator {
            dir,
            out,
            name,
            roles,
        } => {
            let ca = Authority::load(&dir).context("loading the CA")?;
            write_issued(&out, &ca.issue_operator(&name, &roles)?)?;
        }
        Command::RevokeOperator { dir, cert, serial } => {
            use trustchain_ca::revocation::Reason;
            let ca = Authority::load(&dir).context("loading the CA")?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let (serial, added) = match (cert, serial) {
                (Some(path), _) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    ca.revoke_operator_certificate(&bytes, Reason::KeyCompromise, now)?
                }
                (None, Some(serial)) => {
                    let added = ca.revoke_operator_serial(&serial, Reason::KeyCompromise, now)?;
                    (serial, added)
                }
                (None, None) => anyhow::bail!("--cert or --serial is required"),
            };
            if added {
                println!("operator certificate {serial} revoked");
            } else {
                println!("operator certificate {serial} was already revoked");
            }
        }
        Command::TrustListKey { dir } => {
            let files = trustchain_ca::signing_key::create(&dir, "trust-list-authority")?;
            println!(
                "{} (public key {}: {})",
                files.private_key.display(),
                files.public_key.display(),
                files.public_hex
            );
        }
        Command::SupplierKey { dir, name } => {
            let files = trustchain_ca::signing_key::create(&dir, &name)?;
            println!(
                "{} (public key {}: {})",
                files.private_key.display(),
                files.public_key.display(),
                files.public_hex
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trustchain-ca: {error:#}");
            ExitCode::from(1)
        }
    }
}
