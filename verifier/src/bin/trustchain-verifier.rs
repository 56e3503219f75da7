//! `trustchain-verifier`: the SOC verifier service.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("trustchain-verifier: the service is not built yet");
    ExitCode::from(2)
}
