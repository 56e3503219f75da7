//! `trustchain-agent` (being written).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("trustchain-agent: not built yet");
    ExitCode::from(2)
}
