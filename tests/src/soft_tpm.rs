//! A software TPM model for the load generator: an ECC P-256 EK with a certificate from the test
//! maker, an ECC P-256 AK, PCRs, and the same TPMS_ATTEST / TPMT_SIGNATURE / TPMT_PUBLIC formats
//! a real TPM produces. Credential activation is done honestly (ECDH with the EK private key,
//! KDFe, integrity HMAC, AES-128-CFB), so the verifier's enrollment runs unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use aes::Aes128;
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use trustchain_swtpm::boot::{Bank, BootEvent};
use trustchain_swtpm::{BootProfile, ImaEntry, TpmMaker};
use trustchain_verifier::enrollment::credential::{kdf_a, kdf_e};
use trustchain_verifier::enrollment::ek_template::{EK_ATTRIBUTES, EK_AUTH_POLICY};
use trustchain_verifier::evidence::tpm::{ENDORSEMENT_HIERARCHY, Public, hierarchy_qualified_name};

fn tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// TPMT_PUBLIC of an ECC P-256 key.
fn ecc_public(
    attributes: u32,
    auth_policy: &[u8],
    symmetric: bool,
    scheme_ecdsa: bool,
    point: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0x0023u16.to_be_bytes()); // TPM_ALG_ECC
    out.extend_from_slice(&0x000bu16.to_be_bytes()); // nameAlg SHA-256
    out.extend_from_slice(&attributes.to_be_bytes());
    tpm2b(&mut out, auth_policy);
    if symmetric {
        out.extend_from_slice(&[0x00, 0x06, 0x00, 0x80, 0x00, 0x43]); // AES-128-CFB
    } else {
        out.extend_from_slice(&0x0010u16.to_be_bytes());
    }
    if scheme_ecdsa {
        out.extend_from_slice(&[0x00, 0x18, 0x00, 0x0b]); // ECDSA, SHA-256
    } else {
        out.extend_from_slice(&0x0010u16.to_be_bytes());
    }
    out.extend_from_slice(&0x0003u16.to_be_bytes()); // NIST P-256
    out.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf NULL
    tpm2b(&mut out, point.get(1..33).unwrap_or_default());
    tpm2b(&mut out, point.get(33..65).unwrap_or_default());
    out
}

/// (TPMS_ATTEST, TPMT_SIGNATURE, (PCR index, sha256 value) in selection order).
pub type SoftQuote = (Vec<u8>, Vec<u8>, Vec<(u32, Vec<u8>)>);

/// The enrollment request of a simulated gateway with this hostname.
pub fn enroll_request(tpm: &SoftTpm, hostname: &str) -> trustchain_proto::v1::EnrollRequest {
    trustchain_proto::v1::EnrollRequest {
        ek_certificate: tpm.ek_certificate.clone(),
        ek_intermediates: Vec::new(),
        ek_public: tpm.ek_public.clone(),
        ak_public: tpm.ak_public.clone(),
        facts: Some(trustchain_proto::v1::DeviceFacts {
            hostname: hostname.into(),
            device_class: "gateway".into(),
            ..Default::default()
        }),
    }
}

/// What an honest agent sends for `challenge`: a quote over the first bank's selection with
/// `nonce` in extraData (an honest agent passes the challenge's own), the SHA-256 PCR values,
/// the IMA entries from the asked offset, and the boot log if asked.
pub fn answer(
    tpm: &mut SoftTpm,
    challenge: &trustchain_proto::v1::Challenge,
    nonce: &[u8],
) -> anyhow::Result<trustchain_proto::v1::Evidence> {
    let pcrs: Vec<u32> = challenge
        .pcr_selection
        .first()
        .map(|bank| bank.pcrs.clone())
        .unwrap_or_default();
    let (quote, signature, values) = tpm.quote(nonce, &pcrs)?;
    let mut ima = String::new();
    for line in tpm
        .ima_log
        .iter()
        .skip(usize::try_from(challenge.ima_offset).unwrap_or(usize::MAX))
    {
        ima.push_str(line);
    }
    Ok(trustchain_proto::v1::Evidence {
        challenge_id: challenge.challenge_id,
        quote,
        signature,
        pcr_values: values
            .into_iter()
            .map(|(index, digest)| trustchain_proto::v1::PcrValue {
                hash_algorithm: 0x000b,
                index,
                digest,
            })
            .collect(),
        boot_log: if challenge.want_boot_log {
            tpm.boot_log.clone()
        } else {
            Vec::new()
        },
        boot_log_included: challenge.want_boot_log,
        ima_offset: challenge.ima_offset,
        ima_entries: ima.into_bytes(),
    })
}

/// One simulated device.
pub struct SoftTpm {
    ek: PrivateKey,
    ek_point: Vec<u8>,
    pub ek_public: Vec<u8>,
    pub ek_certificate: Vec<u8>,
    ak: EcdsaKeyPair,
    pub ak_public: Vec<u8>,
    ak_qn: Vec<u8>,
    pcrs: BTreeMap<u32, Vec<u8>>,
    pub boot_log: Vec<u8>,
    /// The ASCII measurement list, a line each; lines are shared (see [`MeasuredFile`]).
    pub ima_log: Vec<Arc<str>>,
    clock: u64,
}

/// A file measurement computed once and taken by any number of simulated devices: a fleet runs
/// the same software, so every device measures the same files (the load generator would
/// otherwise spend a sixth of its CPU hashing and formatting identical entries per device).
#[derive(Debug, Clone)]
pub struct MeasuredFile {
    /// SHA-256 of the template data: what the kernel extends into PCR 10's sha256 bank.
    template_hash: Vec<u8>,
    line: Arc<str>,
}

impl MeasuredFile {
    pub fn new(path: &str, content: &[u8]) -> Self {
        let entry = ImaEntry::for_file(path, content);
        Self {
            template_hash: entry.template_hash(Bank::Sha256),
            line: entry.ascii_line().into(),
        }
    }
}

impl std::fmt::Debug for SoftTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftTpm").finish_non_exhaustive()
    }
}

impl SoftTpm {
    pub fn new(maker: &TpmMaker, label: &str, profile: &BootProfile) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let ek = PrivateKey::generate(&agreement::ECDH_P256).map_err(|_| anyhow::anyhow!("EK"))?;
        let ek_point = ek
            .compute_public_key()
            .map_err(|_| anyhow::anyhow!("EK public"))?
            .as_ref()
            .to_vec();
        // The TCG default EK template L-2, as a real TPM's EK is (the verifier pins all of it).
        let ek_public = ecc_public(EK_ATTRIBUTES, &EK_AUTH_POLICY, true, false, &ek_point);
        let spki = Public::parse(&ek_public)?
            .spki_der()
            .ok_or_else(|| anyhow::anyhow!("EK SPKI"))?;
        let ek_certificate = maker.issue_ek_certificate(&spki, label, false)?;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("AK"))?;
        let ak = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("AK"))?;
        // fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign
        let ak_public = ecc_public(0x0005_0072, &[], false, true, ak.public_key().as_ref());
        let ek_qn = Public::parse(&ek_public)?
            .qualified_name(&hierarchy_qualified_name(ENDORSEMENT_HIERARCHY));
        let ak_qn = Public::parse(&ak_public)?.qualified_name(&ek_qn);
        let events: Vec<BootEvent> = profile.events();
        let boot_log = profile.encode_log(&events);
        let pcrs = trustchain_swtpm::boot::replay(&events, Bank::Sha256);
        let mut tpm = Self {
            ek,
            ek_point,
            ek_public,
            ek_certificate,
            ak,
            ak_public,
            ak_qn,
            pcrs,
            boot_log,
            ima_log: Vec::new(),
            clock: 1,
        };
        let aggregate: Vec<Vec<u8>> = (0..10).map(|i| tpm.pcr(i)).collect();
        tpm.measure(trustchain_swtpm::ima::boot_aggregate(&aggregate));
        Ok(tpm)
    }

    fn pcr(&self, index: u32) -> Vec<u8> {
        self.pcrs
            .get(&index)
            .cloned()
            .unwrap_or_else(|| vec![0u8; 32])
    }

    fn extend(&mut self, index: u32, digest: &[u8]) {
        let old = self.pcr(index);
        self.pcrs.insert(index, Bank::Sha256.extend(&old, digest));
    }

    fn measure(&mut self, entry: ImaEntry) {
        self.extend(10, &entry.template_hash(Bank::Sha256));
        self.ima_log.push(entry.ascii_line().into());
    }

    /// The kernel measured a file whose entry was computed once for the fleet.
    pub fn measure_shared(&mut self, file: &MeasuredFile) {
        self.extend(10, &file.template_hash);
        self.ima_log.push(file.line.clone());
    }

    /// The kernel measured a file.
    pub fn measure_file(&mut self, path: &str, content: &[u8]) {
        self.measure(ImaEntry::for_file(path, content));
    }

    /// Tamper: an unlogged digest into a PCR.
    pub fn extend_unlisted(&mut self, index: u32, data: &[u8]) {
        self.extend(index, &Bank::Sha256.hash(data));
    }

    /// TPM2_ActivateCredential, in software.
    pub fn activate_credential(
        &self,
        blob: &[u8],
        encrypted_secret: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let bad = || anyhow::anyhow!("activation failed");
        let x_len = usize::from(u16::from_be_bytes(
            encrypted_secret.get(0..2).ok_or_else(bad)?.try_into()?,
        ));
        let x = encrypted_secret.get(2..2 + x_len).ok_or_else(bad)?;
        let y = encrypted_secret.get(4 + x_len..).ok_or_else(bad)?;
        let mut point = vec![0x04];
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        let ek_x = self.ek_point.get(1..33).ok_or_else(bad)?.to_vec();
        let seed = agreement::agree(
            &self.ek,
            UnparsedPublicKey::new(&agreement::ECDH_P256, &point),
            bad(),
            |z| Ok(kdf_e(z, "IDENTITY", x, &ek_x, 256)),
        )?;
        let ak_name = Public::parse(&self.ak_public)?.name();
        let integrity = blob.get(2..34).ok_or_else(bad)?;
        let encrypted = blob.get(34..).ok_or_else(bad)?;
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&kdf_a(&seed, "INTEGRITY", &[], &[], 256))?;
        mac.update(encrypted);
        mac.update(&ak_name);
        mac.verify_slice(integrity).map_err(|_| bad())?;
        let mut plain = encrypted.to_vec();
        cfb_mode::Decryptor::<Aes128>::new_from_slices(
            &kdf_a(&seed, "STORAGE", &ak_name, &[], 128),
            &[0u8; 16],
        )
        .map_err(|_| bad())?
        .decrypt(&mut plain);
        Ok(plain.get(2..).ok_or_else(bad)?.to_vec())
    }

    /// TPM2_Quote over sha256 `pcrs`: (TPMS_ATTEST, TPMT_SIGNATURE, values).
    pub fn quote(&mut self, nonce: &[u8], pcrs: &[u32]) -> anyhow::Result<SoftQuote> {
        self.clock += 1000;
        let values: Vec<(u32, Vec<u8>)> = pcrs.iter().map(|p| (*p, self.pcr(*p))).collect();
        let concatenated: Vec<u8> = values.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let mut bitmap = [0u8; 3];
        for pcr in pcrs {
            if let Some(byte) = bitmap.get_mut((*pcr / 8) as usize) {
                *byte |= 1 << (pcr % 8);
            }
        }
        let mut attest = Vec::new();
        attest.extend_from_slice(&0xff54_4347u32.to_be_bytes());
        attest.extend_from_slice(&0x8018u16.to_be_bytes());
        tpm2b(&mut attest, &self.ak_qn);
        tpm2b(&mut attest, nonce);
        attest.extend_from_slice(&self.clock.to_be_bytes());
        attest.extend_from_slice(&1u32.to_be_bytes()); // resetCount
        attest.extend_from_slice(&0u32.to_be_bytes()); // restartCount
        attest.push(1); // safe
        attest.extend_from_slice(&0x2016_0511_0016_2800u64.to_be_bytes());
        attest.extend_from_slice(&1u32.to_be_bytes());
        attest.extend_from_slice(&0x000bu16.to_be_bytes());
        attest.push(3);
        attest.extend_from_slice(&bitmap);
        tpm2b(&mut attest, &Bank::Sha256.hash(&concatenated));
        let signature = self
            .ak
            .sign(&SystemRandom::new(), &attest)
            .map_err(|_| anyhow::anyhow!("sign"))?;
        let rs = signature.as_ref();
        let mut tpmt = Vec::new();
        tpmt.extend_from_slice(&0x0018u16.to_be_bytes());
        tpmt.extend_from_slice(&0x000bu16.to_be_bytes());
        tpm2b(&mut tpmt, rs.get(..32).unwrap_or_default());
        tpm2b(&mut tpmt, rs.get(32..).unwrap_or_default());
        Ok((attest, tpmt, values))
    }
}
