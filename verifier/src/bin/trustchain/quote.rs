//! `trustchain quote verify`: what a TPM quote says, and whether each check holds.
//!
//! The parsing and every check are the library's (`evidence::quote`); this file loads files,
//! picks defaults an operator expects (scheme from the signature, signer among the usual parents)
//! and prints one line per check.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::quote::{self, PcrValues, VerifyingKey};
use trustchain_verifier::evidence::tpm::{
    AttestType, ENDORSEMENT_HIERARCHY, Encoding, OWNER_HIERARCHY, Public, PublicKey,
    SignatureScheme, TPM_GENERATED, hierarchy_qualified_name,
};
use x509_parser::prelude::FromDer as _;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify a quote (TPMS_ATTEST + TPMT_SIGNATURE) against an AK public key.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The AK: TPMT_PUBLIC or TPM2B_PUBLIC (binary), or a SubjectPublicKeyInfo (PEM or DER; its
    /// TPM Name is then unknown and qualifiedSigner is not checked).
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
    /// --json` prints), the inner object alone, or testdata's {"<name>": {"banks": {...}}}.
    /// Values outside the quote's selection are ignored (and counted). Not checked if absent.
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
    let banks = find_banks(&json).context("PCR file: expected an object of banks")?;
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

/// The object of banks in any of the accepted shapes.
fn find_banks(json: &serde_json::Value) -> Option<&serde_json::Map<String, serde_json::Value>> {
    let object = json.as_object()?;
    if let Some(inner) = object.get("pcrs").or_else(|| object.get("banks")) {
        return inner.as_object();
    }
    // testdata's expected_pcrs_from_quotes.json: one entry per log, each with "banks".
    let mut values = object.values();
    if let (Some(only), None) = (values.next(), values.next())
        && let Some(banks) = only.get("banks")
    {
        return banks.as_object();
    }
    Some(object)
}

/// The AK file: TPM formats first, then an SPKI (PEM or DER).
fn load_ak(path: &PathBuf) -> anyhow::Result<(Public, &'static str)> {
    let bytes = read(path)?;
    let tpm_error = match Public::parse_encoding(&bytes) {
        Ok((public, Encoding::TpmtPublic)) => return Ok((public, "TPMT_PUBLIC")),
        Ok((public, Encoding::Tpm2bPublic)) => return Ok((public, "TPM2B_PUBLIC")),
        Err(error) => error,
    };
    let der = if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: AK: bad PEM: {e}", path.display()))?;
        pem.contents
    } else if bytes.first() == Some(&0x30) {
        bytes
    } else {
        anyhow::bail!("{}: AK: {tpm_error}", path.display());
    };
    let public = public_from_spki(&der).with_context(|| {
        format!(
            "{}: AK: not a TPM public area nor a usable SPKI",
            path.display()
        )
    })?;
    Ok((public, "SubjectPublicKeyInfo"))
}

/// Wraps an SPKI's key in a TPMT_PUBLIC (unrestricted signing key, scheme NULL) so the library
/// can verify with it. Its Name is meaningless: it is not the TPM's object.
fn public_from_spki(der: &[u8]) -> anyhow::Result<Public> {
    use x509_parser::public_key::PublicKey as SpkiKey;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
        .map_err(|e| anyhow::anyhow!("bad SubjectPublicKeyInfo: {e}"))?;
    let mut out = Vec::new();
    fn u16s(out: &mut Vec<u8>, words: &[u16]) {
        for word in words {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }
    let tpm2b = |out: &mut Vec<u8>, bytes: &[u8]| -> anyhow::Result<()> {
        out.extend_from_slice(&u16::try_from(bytes.len())?.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    };
    const SIGN: u32 = 1 << 18;
    match spki
        .parsed()
        .map_err(|e| anyhow::anyhow!("SPKI key: {e}"))?
    {
        SpkiKey::RSA(rsa) => {
            let modulus: Vec<u8> = rsa
                .modulus
                .iter()
                .copied()
                .skip_while(|b| *b == 0)
                .collect();
            let exponent = rsa
                .try_exponent()
                .map_err(|e| anyhow::anyhow!("RSA exponent: {e}"))?;
            let exponent = u32::try_from(exponent).context("RSA exponent too large")?;
            let bits = u16::try_from(modulus.len() * 8).context("RSA modulus too large")?;
            // type RSA, nameAlg SHA-256; attributes; empty authPolicy.
            u16s(&mut out, &[0x0001, 0x000b]);
            out.extend_from_slice(&SIGN.to_be_bytes());
            // authPolicy, symmetric NULL, scheme NULL, keyBits.
            u16s(&mut out, &[0, 0x0010, 0x0010, bits]);
            out.extend_from_slice(&exponent.to_be_bytes());
            tpm2b(&mut out, &modulus)?;
        }
        SpkiKey::EC(point) => {
            use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_NIST_EC_P521};
            let oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .context("EC key without a named curve")?;
            let (curve, size) = if oid == OID_EC_P256 {
                (0x0003u16, 32)
            } else if oid == OID_NIST_EC_P384 {
                (0x0004, 48)
            } else if oid == OID_NIST_EC_P521 {
                (0x0005, 66)
            } else {
                anyhow::bail!("EC curve {oid} is not supported");
            };
            let data = point.data();
            let coordinates = match data.split_first() {
                Some((0x04, rest)) if rest.len() == 2 * size => rest,
                _ => anyhow::bail!("EC point is not uncompressed for its curve"),
            };
            let (x, y) = coordinates.split_at(size);
            u16s(&mut out, &[0x0023, 0x000b]);
            out.extend_from_slice(&SIGN.to_be_bytes());
            // authPolicy, symmetric NULL, scheme NULL, curve, kdf NULL.
            u16s(&mut out, &[0, 0x0010, 0x0010, curve, 0x0010]);
            tpm2b(&mut out, x)?;
            tpm2b(&mut out, y)?;
        }
        _ => anyhow::bail!("only RSA and EC keys can sign quotes"),
    }
    Public::parse(&out).map_err(|e| anyhow::anyhow!("SPKI key: {e}"))
}

fn describe_key(public: &Public) -> String {
    match &public.key {
        PublicKey::Rsa { modulus, exponent } => {
            format!("RSA-{} (e={exponent})", modulus.len() * 8)
        }
        PublicKey::Ecc { curve, .. } => format!("ECC {curve:?}"),
    }
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
    let (ak, ak_format) = load_ak(&args.ak)?;
    let attest_bytes = read(&args.quote)?;
    let signature_bytes = read(&args.signature)?;
    // Malformed input stops here with one line naming the file, the offset and the problem.
    let (attest, signature) =
        quote::parse(&attest_bytes, &signature_bytes).map_err(|error| match &error {
            quote::QuoteError::Malformed {
                what: "signature", ..
            } => anyhow::anyhow!("{}: {error}", args.signature.display()),
            _ => anyhow::anyhow!("{}: {error}", args.quote.display()),
        })?;
    let spki_only = ak_format == "SubjectPublicKeyInfo";

    println!("AK               {} from a {ak_format}", describe_key(&ak));
    if !spki_only {
        println!("AK name          {}", hex::encode(ak.name()));
        println!("AK attributes    {}", ak.attributes);
    }
    println!("magic            0x{:08x}", attest.magic);
    println!(
        "type             0x{:04x} ({:?})",
        attest.attest_type.tag(),
        attest.attest_type
    );
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
    let pinned = match (&args.scheme, &args.hash) {
        (None, None) => "taken from the signature; --scheme/--hash pin it",
        (Some(_), Some(_)) => "pinned",
        _ => "partly pinned, the rest taken from the signature",
    };
    println!("expected scheme  {scheme}/{hash} ({pinned})");
    println!("checks:");

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
            Err(format!("0x{:08x} is not TPM_GENERATED", attest.magic))
        },
    );
    report.check(
        "type",
        if attest.attest_type == AttestType::Quote {
            Ok("ATTEST_QUOTE".into())
        } else {
            Err(format!("{:?}, not ATTEST_QUOTE", attest.attest_type))
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
        None if spki_only => report.skip(
            "qualifiedSigner",
            "the AK came as an SPKI, so its Name is unknown; pass --signer",
        ),
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
            let nonce =
                hex::decode(nonce.trim_start_matches("0x")).context("--nonce is not hex")?;
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
            let supplied = load_pcrs(path)?;
            // A log or a PCR dump covers more than one quote selects: keep what it signs.
            let mut values = PcrValues::default();
            for (bank, pcr) in q.selection.iter() {
                if let Some(value) = supplied.get(bank, pcr) {
                    values.insert(bank, pcr, value.to_vec());
                }
            }
            let ignored = supplied.0.len() - values.0.len();
            let note = if ignored == 0 {
                String::new()
            } else {
                format!("{ignored} supplied values outside the selection ignored")
            };
            report.check(
                "PCR digest",
                quote::check_pcr_digest(q, hash, &values)
                    .map(|()| note)
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
