//! The command-line start shared by the long-run binaries (`trustchain-fault-run`,
//! `trustchain-footprint`): `--help`, the plan from the arguments, a runtime.

use std::process::ExitCode;

/// The argument after `name`, if any.
pub fn value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Prints `help` on `--help`/`-h`; otherwise reads the plan and starts a runtime. `Err` is the
/// exit code to end with: success after help, 2 for bad arguments, 1 if no runtime starts.
pub fn start<T>(
    tool: &str,
    help: &str,
    plan: impl FnOnce() -> anyhow::Result<T>,
) -> Result<(T, tokio::runtime::Runtime), ExitCode> {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{help}");
        return Err(ExitCode::SUCCESS);
    }
    let plan = match plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("{tool}: bad arguments: {error}");
            return Err(ExitCode::from(2));
        }
    };
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => Ok((plan, runtime)),
        Err(error) => {
            eprintln!("{tool}: {error}");
            Err(ExitCode::from(1))
        }
    }
}
