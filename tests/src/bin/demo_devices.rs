//! Placeholder main job: boots three simulated devices on real swtpm processes and shows what
//! their TPMs hold (PCRs and EK certificates).

use std::process::ExitCode;

use trustchain_swtpm::{Bank, BootProfile, EkKind, SwtpmDevice, TestMakers};
use x509_parser::prelude::{FromDer, X509Certificate};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let makers = TestMakers::generate()?;
    let profiles = [
        ("gateway-1", BootProfile::default_linux()),
        (
            "gateway-2",
            BootProfile::default_linux().with_banks(&[Bank::Sha256, Bank::Sha1]),
        ),
        (
            "server-1",
            BootProfile::default_linux().with_kernel(b"vmlinuz-6.6.0-server"),
        ),
    ];
    for (label, profile) in profiles {
        let mut device = SwtpmDevice::start(&makers.trusted, label)?;
        device.boot(&profile)?;
        device.ima_measure("/usr/bin/trustchain-agent", b"agent binary")?;
        println!("== {label} ({})", device.tcti());
        for kind in [EkKind::Rsa2048, EkKind::EccP256] {
            let der = device.ek_certificate_der(kind)?;
            let (_, cert) = X509Certificate::from_der(&der)?;
            println!(
                "   EK {kind:?}: subject \"{}\", issuer \"{}\"",
                cert.subject(),
                cert.issuer()
            );
        }
        let pcrs = device.read_pcrs(Bank::Sha256, &(0..=10).collect::<Vec<_>>())?;
        for (index, value) in pcrs {
            println!("   PCR sha256:{index:<2} {}", hex::encode(value));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo: {error}");
            ExitCode::from(1)
        }
    }
}
