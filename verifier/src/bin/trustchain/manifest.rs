//! `trustchain manifest`: write a reference manifest, sign it as a supplier, and inspect a signed
//! one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use trustchain_verifier::reference::documents::{
    BootKind, BootMeasurement, BootReferences, MANIFEST_KIND, TrustList,
};
use trustchain_verifier::reference::learn::{self, LearnIdentity};
use trustchain_verifier::reference::policy::parse_file_digest;
use trustchain_verifier::reference::{Manifest, signed};

use crate::signing::SignArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write an unsigned manifest from digests given on the command line and/or a known-good
    /// event log.
    Create(CreateArgs),
    /// Sign a manifest (JSON) with a supplier key, giving a JWS.
    Sign(SignArgs),
    /// Show a signed document's header and payload, and check its signature when given a key.
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long)]
    supplier: String,
    #[arg(long)]
    product: String,
    #[arg(long)]
    version: String,
    /// A boot application digest (PCR 4): `alg:hex`, or bare hex (algorithm by length).
    /// Repeatable.
    #[arg(long = "boot-app")]
    boot_apps: Vec<String>,
    /// Description of the boot application at the same position ("shim 15.8").
    #[arg(long = "description")]
    descriptions: Vec<String>,
    /// Take every boot measurement, command line and the Secure Boot state from this known-good
    /// event log (as `policy learn` does).
    #[arg(long)]
    from_eventlog: Option<PathBuf>,
    /// A kernel command line the component boots with (exact text). Repeatable.
    #[arg(long = "kernel-cmdline")]
    kernel_cmdlines: Vec<String>,
    /// A runtime file: `PATH=alg:hex`. Repeatable.
    #[arg(long = "file")]
    files: Vec<String>,
    /// Free text for people.
    #[arg(long, default_value = "")]
    about: String,
    /// Where to write the manifest (JSON).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The signed document (JWS compact serialisation).
    file: PathBuf,
    /// The signer's public key (uncompressed P-256 point, hex), or a file holding it: checks the
    /// signature.
    #[arg(long)]
    public_key: Option<String>,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create(args) => create(args),
        Command::Sign(args) => sign(args),
        Command::Inspect(args) => inspect(args),
    }
}

/// `alg:hex` or bare hex into (bank name, hex).
fn digest_argument(text: &str) -> anyhow::Result<(String, String)> {
    let (alg, bytes) =
        parse_file_digest(text).with_context(|| format!("{text:?} is not alg:hex or hex"))?;
    let bank = trustchain_verifier::evidence::digest::HashAlgorithm::from_name(&alg)
        .with_context(|| format!("{text:?}: unknown algorithm {alg:?}"))?;
    if bytes.len() != bank.size() {
        bail!(
            "{text:?}: a {} digest has {} bytes",
            bank.name(),
            bank.size()
        );
    }
    Ok((bank.name().to_string(), hex::encode(bytes)))
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    if args.descriptions.len() > args.boot_apps.len() {
        bail!("more --description than --boot-app");
    }
    let mut boot = BootReferences::default();
    if let Some(path) = &args.from_eventlog {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let identity = LearnIdentity {
            supplier: args.supplier.clone(),
            product: args.product.clone(),
            version: args.version.clone(),
            policy_name: "unused".to_string(),
        };
        let learned = learn::learn(&bytes, None, &identity)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for note in learned
            .notes
            .iter()
            .filter(|n| !n.starts_with("no IMA list"))
        {
            println!("note: {note}");
        }
        boot = learned.manifest.boot;
    }
    for (i, text) in args.boot_apps.iter().enumerate() {
        let (bank, hex_text) = digest_argument(text)?;
        boot.events.push(BootMeasurement {
            pcr: 4,
            kind: BootKind::BootApplication,
            description: args.descriptions.get(i).cloned().unwrap_or_default(),
            digests: BTreeMap::from([(bank, hex_text)]),
        });
    }
    for line in &args.kernel_cmdlines {
        if !boot.kernel_cmdlines.contains(line) {
            boot.kernel_cmdlines.push(line.clone());
        }
    }
    let mut runtime: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in &args.files {
        let (path, digest) = item
            .split_once('=')
            .with_context(|| format!("--file {item:?}: expected PATH=alg:hex"))?;
        if !path.starts_with('/') {
            bail!("--file {item:?}: the path must be absolute");
        }
        let (bank, hex_text) = digest_argument(digest)?;
        runtime
            .entry(path.to_string())
            .or_default()
            .push(format!("{bank}:{hex_text}"));
    }
    let manifest = Manifest {
        kind: MANIFEST_KIND.to_string(),
        supplier: args.supplier,
        product: args.product,
        version: args.version,
        issued_at: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default(),
        description: args.about,
        boot,
        runtime,
    };
    std::fs::write(&args.out, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "manifest {}: {} boot measurements, {} kernel command line(s), {} runtime files -> {}",
        manifest.id(),
        manifest.boot.events.len(),
        manifest.boot.kernel_cmdlines.len(),
        manifest.runtime.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let (key, text) = args.read()?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a manifest: {e}", args.input.display()))?;
    if manifest.kind != MANIFEST_KIND {
        bail!(
            "{}: kind {:?} is not {MANIFEST_KIND:?}",
            args.input.display(),
            manifest.kind
        );
    }
    let document = signed::sign(&manifest, signed::MANIFEST_TYPE, &key)?;
    std::fs::write(&args.out, document + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    let public = hex::decode(key.public_hex())?;
    println!(
        "signed {} with key {} -> {}",
        manifest.id(),
        signed::key_id(&public),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn public_key(argument: &str) -> anyhow::Result<Vec<u8>> {
    let text = if Path::new(argument).is_file() {
        std::fs::read_to_string(argument).with_context(|| format!("reading {argument}"))?
    } else {
        argument.to_string()
    };
    Ok(signed::public_key_from_hex(text.trim())?)
}

fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let document =
        signed::open(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    println!("header: {}", serde_json::to_string(&document.header)?);
    println!("kid: {}", document.header.kid);
    let payload: serde_json::Value = document
        .payload_unchecked()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    println!("payload:\n{}", serde_json::to_string_pretty(&payload)?);
    let Some(key) = &args.public_key else {
        println!("signature: not checked (no --public-key)");
        return Ok(ExitCode::SUCCESS);
    };
    let key = public_key(key)?;
    let kid = signed::key_id(&key);
    if kid != document.header.kid {
        println!(
            "note: the key's id {kid} is not the header's kid {}",
            document.header.kid
        );
    }
    // Check the signature and that the payload is the document its type says.
    let outcome = match document.header.typ.as_str() {
        signed::MANIFEST_TYPE => document
            .verify::<Manifest>(signed::MANIFEST_TYPE, &key)
            .map(|_| ()),
        signed::TRUST_LIST_TYPE => document
            .verify::<TrustList>(signed::TRUST_LIST_TYPE, &key)
            .map(|_| ()),
        signed::POLICY_TYPE => document
            .verify::<trustchain_verifier::reference::signed_policy::SignedPolicy>(
                signed::POLICY_TYPE,
                &key,
            )
            .map(|_| ()),
        other => {
            println!("signature: not checked (unknown document type {other:?})");
            return Ok(ExitCode::from(1));
        }
    };
    match outcome {
        Ok(()) => {
            println!("signature: valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("signature: INVALID ({error})");
            Ok(ExitCode::from(1))
        }
    }
}
