//! `trustchain trust-list` (sign and inspect trust lists offline) and `trustchain import`
//! (hand a trust list, manifest or policy to a running verifier over the operator's mTLS).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::{ApproveImportRequest, SignedDocument};
use trustchain_verifier::reference::documents::{TRUST_LIST_KIND, TrustList};
use trustchain_verifier::reference::signed::{self, TRUST_LIST_TYPE};

use crate::operator::OperatorArgs;
use crate::signing::SignArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Sign a trust list (JSON, format in docs/trust.md) with the trust-list authority's key
    /// (`trustchain-ca trust-list-key`).
    Sign(SignArgs),
    /// Show a signed trust list; with --authority, check its signature (exit 1 if it fails).
    Inspect {
        file: PathBuf,
        /// The authority's public key file (hex, `trust-list-authority.pub`).
        #[arg(long)]
        authority: Option<PathBuf>,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Sign(args) => {
            let (key, text) = args.read()?;
            let SignArgs { input, out, .. } = args;
            let list: TrustList = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a trust list", input.display()))?;
            anyhow::ensure!(
                list.kind == TRUST_LIST_KIND,
                "kind must be {TRUST_LIST_KIND:?}, not {:?}",
                list.kind
            );
            let document = signed::sign(&list, TRUST_LIST_TYPE, &key)?;
            std::fs::write(&out, document).with_context(|| format!("writing {}", out.display()))?;
            println!("{}: trust list v{} signed", out.display(), list.version);
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { file, authority } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let opened = signed::open(&text)?;
            println!("type: {}", opened.header.typ);
            println!("key id: {}", opened.header.kid);
            let payload: serde_json::Value = opened.payload_unchecked()?;
            println!("{}", serde_json::to_string_pretty(&payload)?);
            match authority {
                None => {
                    println!("signature: not checked (give --authority)");
                    Ok(ExitCode::SUCCESS)
                }
                Some(path) => {
                    let key = signed::public_key_from_hex(
                        &std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )?;
                    match opened.verify::<TrustList>(TRUST_LIST_TYPE, &key) {
                        Ok(_) => {
                            println!("signature: valid");
                            Ok(ExitCode::SUCCESS)
                        }
                        Err(error) => {
                            println!("signature: INVALID ({error})");
                            Ok(ExitCode::from(1))
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(subcommand)]
    what: Import,
}

#[derive(Debug, clap::Subcommand)]
pub enum Import {
    /// A signed trust list (JWS); refused unless signed by the verifier's trust-list authority
    /// and newer than the active one.
    TrustList { file: PathBuf },
    /// A signed reference manifest (JWS); used only while the trust list admits its signer for
    /// its supplier and product.
    Manifest { file: PathBuf },
    /// A policy: the JWS `trustchain policy sign` writes (TOML only where the verifier has
    /// `require_signed_policies = false`); refused unless newer than the active version.
    Policy { file: PathBuf },
    /// Approve a trust list or policy another policy-admin imported, which waits under the
    /// two-person rule (`[admin] two_person_imports`): by the SHA-256 its import printed.
    Approve {
        #[arg(long)]
        digest: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        comment: String,
    },
}

pub fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let (file, kind) = match &args.what {
        Import::TrustList { file } => (Some(file), "trust list"),
        Import::Manifest { file } => (Some(file), "manifest"),
        Import::Policy { file } => (Some(file), "policy"),
        Import::Approve { .. } => (None, "approved import"),
    };
    let document = match file {
        Some(file) => std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        None => Vec::new(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut admin = AdminClient::new(args.operator.connect().await?);
        let request = SignedDocument { document };
        let result = match args.what {
            Import::TrustList { .. } => admin.import_trust_list(request).await,
            Import::Manifest { .. } => admin.import_manifest(request).await,
            Import::Policy { .. } => admin.import_policy(request).await,
            Import::Approve { digest, comment } => {
                admin
                    .approve_import(ApproveImportRequest { digest, comment })
                    .await
            }
        };
        match result {
            Ok(response) => {
                let imported = response.into_inner();
                let outcome = if imported.pending {
                    "submitted"
                } else {
                    "imported"
                };
                println!(
                    "{kind} {outcome}: {} (sha256 {})",
                    imported.note, imported.digest
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(status) => {
                println!("{kind} refused: {}", status.message());
                Ok(ExitCode::from(1))
            }
        }
    })
}
