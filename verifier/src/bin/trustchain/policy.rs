//! `trustchain policy`: learn a draft policy and manifest from a known-good device, check logs
//! against a policy offline, and import Keylime runtime policies and measured-boot reference
//! states. The logic lives in `trustchain_verifier::reference`; this file reads files, calls it
//! and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::json;
use trustchain_verifier::evidence::eventlog::{self, ReplayOptions};
use trustchain_verifier::evidence::ima;
use trustchain_verifier::reference::documents::MANIFEST_KIND;
use trustchain_verifier::reference::learn::{self, LearnIdentity, Learned};
use trustchain_verifier::reference::runtime::AggregateCheck;
use trustchain_verifier::reference::{
    AdmittedManifest, Manifest, Policy, References, boot, keylime, signed,
};
use trustchain_verifier::verdict::Verdict;

use crate::signing::SignArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Learn a draft manifest and policy from a known-good device's boot log (and IMA list).
    /// Review them (the notes say what to look at), then sign the manifest.
    Learn(LearnArgs),
    /// Check a boot log (and IMA list) against a policy and manifests, offline. Exit 0 only if
    /// every rule passes.
    Check(CheckArgs),
    /// Convert a Keylime runtime policy and/or measured-boot reference state into a draft
    /// manifest (and policy).
    ImportKeylime(ImportArgs),
    /// Sign a policy (TOML) with a policy signer's key (`trustchain-ca supplier-key`, admitted
    /// in the trust list's `policy_signers`), giving the JWS `trustchain import policy` sends.
    Sign(SignArgs),
}

#[derive(Debug, clap::Args)]
pub struct LearnArgs {
    /// The device's UEFI event log (binary_bios_measurements).
    #[arg(long)]
    eventlog: PathBuf,
    /// The device's IMA list (ASCII or binary): every measured file goes on the allowlist.
    #[arg(long)]
    ima: Option<PathBuf>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where to write the draft manifest (JSON, unsigned).
    #[arg(long)]
    out_manifest: PathBuf,
    /// Where to write the draft policy (TOML).
    #[arg(long)]
    out_policy: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    /// The manifest's supplier.
    #[arg(long)]
    supplier: String,
    /// The manifest's product.
    #[arg(long)]
    product: String,
    /// The manifest's version.
    #[arg(long)]
    version: String,
    /// The policy's name (letters, digits, '-', '_', '.'); defaults to the product.
    #[arg(long)]
    name: Option<String>,
}

impl IdentityArgs {
    fn identity(&self) -> LearnIdentity {
        LearnIdentity {
            supplier: self.supplier.clone(),
            product: self.product.clone(),
            version: self.version.clone(),
            policy_name: self.name.clone().unwrap_or_else(|| self.product.clone()),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The policy (TOML).
    #[arg(long)]
    policy: PathBuf,
    /// The boot log to check.
    #[arg(long)]
    eventlog: PathBuf,
    /// An IMA list to check against the allowlist.
    #[arg(long)]
    ima: Option<PathBuf>,
    /// A manifest: unsigned JSON (a draft), or a signed JWS (`*.jws`), opened WITHOUT checking
    /// its signature (this is an offline check of content; the verifier checks signers against
    /// the trust list). Repeat for several.
    #[arg(long = "manifest")]
    manifests: Vec<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true)))]
pub struct ImportArgs {
    /// A Keylime runtime policy (JSON): digests become the manifest's runtime files, excludes the
    /// policy's ima.excludes.
    #[arg(long, group = "source")]
    runtime_policy: Option<PathBuf>,
    /// A Keylime measured-boot reference state (JSON, create_mb_refstate output).
    #[arg(long, group = "source")]
    mb_refstate: Option<PathBuf>,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where to write the draft manifest (JSON, unsigned).
    #[arg(long)]
    out_manifest: PathBuf,
    /// Where to write a draft policy admitting it (TOML).
    #[arg(long)]
    out_policy: Option<PathBuf>,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Learn(args) => run_learn(args),
        Command::Check(args) => run_check(args),
        Command::ImportKeylime(args) => run_import(args),
        Command::Sign(args) => run_sign(args),
    }
}

fn run_sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let (key, text) = args.read()?;
    let document = trustchain_verifier::reference::signed_policy::sign(&text, &key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.input.display()))?;
    std::fs::write(&args.out, document + "\n")
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?;
    let public = hex::decode(key.public_hex())?;
    println!(
        "signed {} with key {} -> {}",
        args.input.display(),
        signed::key_id(&public),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A parser's message on one line: TOML errors draw the offending line and a caret below it,
/// which `main` would print as several lines.
fn one_line(error: &dyn std::fmt::Display) -> String {
    error
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with('|')
                && !line
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .trim_start()
                    .starts_with('|')
        })
        .collect::<Vec<_>>()
        .join(": ")
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write_documents(
    learned: &Learned,
    manifest_path: &Path,
    policy_path: Option<&Path>,
) -> anyhow::Result<()> {
    let manifest = serde_json::to_string_pretty(&learned.manifest)?;
    std::fs::write(manifest_path, manifest + "\n")
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    println!(
        "manifest {} -> {}",
        learned.manifest.id(),
        manifest_path.display()
    );
    if let Some(path) = policy_path {
        let policy = learned.policy.to_toml()?;
        std::fs::write(path, policy).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "policy {} v{} -> {}",
            learned.policy.name,
            learned.policy.version,
            path.display()
        );
    }
    for note in &learned.notes {
        println!("note: {note}");
    }
    Ok(())
}

fn run_learn(args: LearnArgs) -> anyhow::Result<ExitCode> {
    let log = read(&args.eventlog)?;
    let ima = args.ima.as_deref().map(read).transpose()?;
    let learned = learn::learn(&log, ima.as_deref(), &args.identity.identity())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.eventlog.display()))?;
    println!(
        "learned {} boot measurements, {} kernel command line(s), {} runtime files; bank {}",
        learned.manifest.boot.events.len(),
        learned.manifest.boot.kernel_cmdlines.len(),
        learned.manifest.runtime.len(),
        learned.policy.boot.required_bank
    );
    write_documents(&learned, &args.out_manifest, Some(&args.out_policy))?;
    Ok(ExitCode::SUCCESS)
}

/// A manifest file for an offline check: a signed JWS is opened without a key (its signer shown
/// by key id), anything else is read as an unsigned JSON draft.
fn load_manifest(path: &Path) -> anyhow::Result<AdmittedManifest> {
    let bytes = read(path)?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    let is_jws =
        path.extension().is_some_and(|e| e == "jws") || !text.trim_start().starts_with('{');
    let (manifest, signer): (Manifest, String) = if is_jws {
        let document =
            signed::open(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if document.header.typ != signed::MANIFEST_TYPE {
            bail!(
                "{}: document type {:?} is not a manifest ({:?})",
                path.display(),
                document.header.typ,
                signed::MANIFEST_TYPE
            );
        }
        let manifest = document
            .payload_unchecked()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        (
            manifest,
            format!("kid {} (signature not checked)", document.header.kid),
        )
    } else {
        let manifest = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}: not a manifest: {e}", path.display()))?;
        (manifest, "unsigned".to_string())
    };
    if manifest.kind != MANIFEST_KIND {
        bail!(
            "{}: kind {:?} is not {MANIFEST_KIND:?}",
            path.display(),
            manifest.kind
        );
    }
    Ok(AdmittedManifest { manifest, signer })
}

fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let policy_text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?;
    let policy = Policy::from_toml(&policy_text)
        .map_err(|e| anyhow::anyhow!("{}: {}", args.policy.display(), one_line(&e)))?;
    let bank = policy.boot.bank()?;
    let log_bytes = read(&args.eventlog)?;
    let log = eventlog::parse(&log_bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.eventlog.display()))?;
    let ima_log = match &args.ima {
        Some(path) => {
            Some(ima::parse(&read(path)?).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let manifests = args
        .manifests
        .iter()
        .map(|path| load_manifest(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let signed_unchecked = manifests.iter().any(|m| m.signer.starts_with("kid "));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let refs = References::offline(policy, manifests, now);

    // Replay is informative here: without a quote there is nothing to compare it with.
    let replayed = eventlog::replay(&log, &ReplayOptions::default());
    let replayed_pcrs: Vec<u32> = replayed
        .0
        .get(&bank)
        .map(|pcrs| pcrs.keys().copied().collect())
        .unwrap_or_default();

    let mut verdict = Verdict::new();
    boot::check(&log, bank, &refs, &mut verdict);
    if let Some(list) = &ima_log {
        refs.allowlist
            .check(list, AggregateCheck::NotChecked, &mut verdict);
    }

    if args.json {
        let out = json!({
            "passed": verdict.passed(),
            "policy": {"name": refs.policy.name, "version": refs.policy.version},
            "bank": bank.name(),
            "boot_log": {"events": log.events.len(), "replayed_pcrs": replayed_pcrs},
            "ima_entries": ima_log.as_ref().map(|l| l.entries.len()),
            "manifests": refs.manifests.iter().map(|m| json!({"id": m.manifest.id(), "signer": m.signer})).collect::<Vec<_>>(),
            "passed_over": refs.passed_over,
            "failures": verdict.failures(),
            "notes": verdict.notes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "policy {} v{}, bank {}",
            refs.policy.name,
            refs.policy.version,
            bank.name()
        );
        println!(
            "boot log: {} events, replayed PCRs {:?} in {} (informative: no quote to compare)",
            log.events.len(),
            replayed_pcrs,
            bank.name()
        );
        if let Some(list) = &ima_log {
            println!("IMA list: {} entries", list.entries.len());
        }
        if refs.manifests.is_empty() {
            println!("manifests relied on: none");
        }
        for m in &refs.manifests {
            println!(
                "manifest relied on: {} (signer: {})",
                m.manifest.id(),
                m.signer
            );
        }
        for reason in &refs.passed_over {
            println!("passed over: {reason}");
        }
        if signed_unchecked {
            println!(
                "note: signed manifests were opened without checking their signatures; the \
                 verifier checks them against the trust list"
            );
        }
        for note in &verdict.notes {
            println!("note: {note}");
        }
        if verdict.passed() {
            println!("PASS: all rules passed");
        } else {
            println!("FAIL: {} reason(s)", verdict.failures().len());
            for failure in verdict.failures() {
                println!("- rule {}: {}", failure.rule, failure.subject);
                if !failure.detail.is_empty() {
                    println!("    {}", failure.detail);
                }
                if !failure.measured.is_empty() || !failure.expected.is_empty() {
                    println!("    measured: {}", failure.measured);
                    println!("    expected: {}", failure.expected);
                }
            }
        }
    }
    Ok(if verdict.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let runtime = match &args.runtime_policy {
        Some(path) => Some(
            keylime::import_runtime_policy(&read(path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let boot = match &args.mb_refstate {
        Some(path) => Some(
            keylime::import_mb_refstate(&read(path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let learned = keylime::draft(&args.identity.identity(), runtime, boot)?;
    println!(
        "imported {} boot measurements, {} kernel command line(s), {} runtime files, {} excludes",
        learned.manifest.boot.events.len(),
        learned.manifest.boot.kernel_cmdlines.len(),
        learned.manifest.runtime.len(),
        learned.policy.ima.excludes.len()
    );
    write_documents(&learned, &args.out_manifest, args.out_policy.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
