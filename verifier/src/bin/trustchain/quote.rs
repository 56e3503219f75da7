//! `trustchain quote verify`: what a TPM quote says, and whether each check holds.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::quote::{self, PcrValues, VerifyingKey};
use trustchain_verifier::evidence::tpm::{
    Attest, AttestType, ENDORSEMENT_HIERARCHY, OWNER_HIERARCHY, Public, Signature, SignatureScheme,
    TPM_GENERATED, hierarchy_qualified_name,
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify a quote (TPMS_ATTEST + TPMT_SIGNATURE) against an AK public key.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The AK as TPMT_PUBLIC or TPM2B_PUBLIC (binary).
    #[arg(long)]
    ak: PathBuf,
    /// The quote: TPMS_ATTEST bytes (TPM2B_ATTEST without its size).
    #[arg(long)]
    quote: PathBuf,
    /// The TPMT_SIGNATURE bytes.
    #[arg(long)]
    signature: PathBuf,
    /// The expected nonce (qualifying data), hex; "" for an empty one. Not checked if absent.
    #[arg(long)]
    nonce: Option<String>,
    /// PCR values as JSON: {"pcrs": {"sha256": {"0": "<hex>", ...}}} (what `trustchain eventlog
    /// --json` prints) or the inner object alone. Not checked if absent.
    #[arg(long)]
    pcrs: Option<PathBuf>,
    /// Pin the signature scheme (rsassa, rsapss, ecdsa). Default: what the signature says.
    #[arg(long)]
    scheme: Option<String>,
    /// Pin the signature hash (sha1, sha256, sha384, sha512). Default: what the signature says.
    #[arg(long)]
    hash: Option<String>,
    /// The expected qualifiedSigner, hex. Default: accept the AK's Name or its Qualified Name as
    /// a primary key of the endorsement or owner hierarchy, and say which.
    #[arg(long)]
    signer: Option<String>,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn load_pcrs(path: &PathBuf) -> anyhow::Result<PcrValues> {
    let json: serde_json::Value = serde_json::from_slice(&read(path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let banks = json
        .get("pcrs")
        .unwrap_or(&json)
        .as_object()
        .context("PCR file: expected an object of banks")?;
    let mut values = PcrValues::default();
    for (bank, pcrs) in banks {
        let alg = HashAlgorithm::from_name(bank)
            .with_context(|| format!("PCR file: unknown bank {bank:?}"))?;
        for (index, value) in pcrs
            .as_object()
            .context("PCR file: expected index -> hex")?
        {
            let index: u32 = index
                .parse()
                .with_context(|| format!("PCR file: index {index:?}"))?;
            let hex = value.as_str().context("PCR file: values are hex strings")?;
            values.insert(
                alg,
                index,
                hex::decode(hex.trim_start_matches("0x")).context("PCR file: bad hex")?,
            );
        }
    }
    Ok(values)
}

struct Report {
    all_hold: bool,
}

impl Report {
    fn check(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => println!(
                "  OK    {name}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            ),
            Err(detail) => {
                self.all_hold = false;
                println!("  FAIL  {name}: {detail}");
            }
        }
    }

    fn skip(&self, name: &str, why: &str) {
        println!("  --    {name}: not checked ({why})");
    }
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Verify(args) = command;
    let ak = Public::parse(&read(&args.ak)?)
        .map_err(|e| anyhow::anyhow!("{}: AK: {e}", args.ak.display()))?;
    let attest_bytes = read(&args.quote)?;
    let signature_bytes = read(&args.signature)?;
    let signature = Signature::parse(&signature_bytes)
        .map_err(|e| anyhow::anyhow!("{}: signature: {e}", args.signature.display()))?;
    let attest = Attest::parse(&attest_bytes)
        .map_err(|e| anyhow::anyhow!("{}: quote: {e}", args.quote.display()))?;

    println!("magic            0x{:08x}", attest.magic);
    println!("type             {:?}", attest.attest_type);
    println!("qualifiedSigner  {}", hex::encode(&attest.qualified_signer));
    println!("extraData        {}", hex::encode(&attest.extra_data));
    let clock = attest.clock_info;
    println!(
        "clockInfo        clock {} ms, resetCount {}, restartCount {}, safe {}",
        clock.clock, clock.reset_count, clock.restart_count, clock.safe
    );
    println!("firmwareVersion  0x{:016x}", attest.firmware_version);
    if let Some(q) = &attest.quote {
        println!("PCR selection    {}", q.selection);
        println!("pcrDigest        {}", hex::encode(&q.pcr_digest));
    }
    println!(
        "signature        {}/{}",
        signature.scheme(),
        signature.hash()
    );
    println!("checks:");

    let scheme = match &args.scheme {
        Some(s) => {
            SignatureScheme::from_name(s).with_context(|| format!("unknown scheme {s:?}"))?
        }
        None => signature.scheme(),
    };
    let hash = match &args.hash {
        Some(h) => HashAlgorithm::from_name(h).with_context(|| format!("unknown hash {h:?}"))?,
        None => signature.hash(),
    };
    let mut report = Report { all_hold: true };
    let key = match VerifyingKey::new(ak.clone(), scheme, hash) {
        Ok(key) => Some(key),
        Err(e) => {
            report.check("AK usable", Err(e.to_string()));
            None
        }
    };
    if let Some(key) = &key {
        report.check(
            "signature",
            quote::check_signature(&attest_bytes, &signature_bytes, key)
                .map(|()| format!("{scheme}/{hash} by the AK"))
                .map_err(|e| e.to_string()),
        );
    }
    report.check(
        "magic",
        if attest.magic == TPM_GENERATED {
            Ok("TPM_GENERATED".into())
        } else {
            Err(format!("0x{:08x}", attest.magic))
        },
    );
    report.check(
        "type",
        if attest.attest_type == AttestType::Quote {
            Ok("ATTEST_QUOTE".into())
        } else {
            Err(format!("{:?}", attest.attest_type))
        },
    );
    let signer = attest.qualified_signer.as_slice();
    match &args.signer {
        Some(expected) => {
            let expected = hex::decode(expected).context("--signer is not hex")?;
            report.check(
                "qualifiedSigner",
                if signer == expected {
                    Ok(String::new())
                } else {
                    Err("differs from --signer".into())
                },
            );
        }
        None => {
            let candidates = [
                ("the AK's Name", ak.name()),
                (
                    "QN under the endorsement hierarchy",
                    ak.qualified_name(&hierarchy_qualified_name(ENDORSEMENT_HIERARCHY)),
                ),
                (
                    "QN under the owner hierarchy",
                    ak.qualified_name(&hierarchy_qualified_name(OWNER_HIERARCHY)),
                ),
            ];
            match candidates.iter().find(|(_, c)| c.as_slice() == signer) {
                Some((what, _)) => report.check("qualifiedSigner", Ok((*what).to_string())),
                None => report.skip(
                    "qualifiedSigner",
                    "the AK's parent is unknown; pass --signer",
                ),
            }
        }
    }
    match &args.nonce {
        Some(nonce) => {
            let nonce = hex::decode(nonce).context("--nonce is not hex")?;
            report.check(
                "nonce",
                if attest.extra_data == nonce {
                    Ok(String::new())
                } else {
                    Err("extraData differs".into())
                },
            );
        }
        None => report.skip("nonce", "no --nonce"),
    }
    match (&args.pcrs, &attest.quote) {
        (Some(path), Some(q)) => {
            let values = load_pcrs(path)?;
            report.check(
                "PCR digest",
                quote::check_pcr_digest(q, hash, &values)
                    .map(|()| String::new())
                    .map_err(|e| e.to_string()),
            );
        }
        (None, _) => report.skip("PCR digest", "no --pcrs"),
        (Some(_), None) => report.check("PCR digest", Err("not a quote".into())),
    }
    Ok(if report.all_hold {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
