//! `trustchain-ca` (being written).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("trustchain-ca: not built yet");
    ExitCode::from(2)
}
