//! A throwaway PostgreSQL server for the tests: Debian's `postgresql` package (`initdb` and
//! `pg_ctl` from /usr/lib/postgresql/<version>/bin, installed by scripts/setup.sh), a cluster in
//! a temporary directory, listening on a free loopback port (and a socket in that directory),
//! stopped in `Drop`. No mock: the verifier talks to a real server.
//!
//! A test that cannot start it fails, naming what is missing: it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The database and role the tests use.
pub const DATABASE: &str = "trustchain";
pub const USER: &str = "trustchain";

/// A running PostgreSQL server, stopped and deleted when dropped.
#[derive(Debug)]
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The directory of `initdb` and `pg_ctl`: Debian keeps them out of PATH, per major version.
fn server_binaries() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("TRUSTCHAIN_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL server binaries not found in /usr/lib/postgresql: run scripts/setup.sh \
             (it installs Debian's postgresql package)",
        )?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/<version>/bin/pg_ctl: run scripts/setup.sh")
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// initdb and the server refuse to run as root; the tests run as root in CI containers, so the
/// server runs as the `postgres` user the package creates, when we are root.
fn as_server_user(bin: &Path, program: &str) -> Command {
    // SAFETY-free check of the effective uid through /proc (no libc call).
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false);
    if root {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

impl TestPostgres {
    /// Starts a new server with an empty `trustchain` database owned by the `trustchain` role.
    pub fn start() -> anyhow::Result<Self> {
        let bin = server_binaries()?;
        let dir = tempfile::Builder::new().prefix("trustchain-pg").tempdir()?;
        // The server user must be able to enter the directory and own the data directory.
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        run(
            as_server_user(&bin, "initdb")
                .args(["-D"])
                .arg(&data)
                .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]),
            "initdb",
        )?;
        let port = crate::verifier_process::free_port()?;
        // Loopback only; fsync stays on (the crash tests rely on committed meaning durable), a
        // socket in the temporary directory (not /var/run/postgresql, which may not exist).
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c max_connections=300 -c shared_buffers=64MB",
            dir.path().display()
        );
        run(
            as_server_user(&bin, "pg_ctl")
                .args(["-D"])
                .arg(&data)
                .args(["-l"])
                .arg(dir.path().join("server.log"))
                .args(["-o", &options, "-w", "-t", "60", "start"]),
            "pg_ctl start",
        )?;
        let server = Self { dir, bin, port };
        server.create_database()?;
        Ok(server)
    }

    fn create_database(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created = Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                .arg(DATABASE)
                .stdin(Stdio::null())
                .output()?;
            if created.status.success() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "createdb failed: {}",
                String::from_utf8_lossy(&created.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The libpq connection string of the test database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={DATABASE}",
            self.port
        )
    }

    /// The server's log so far (for a failing test's message).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        log.get(start..).unwrap_or_default().to_string()
    }

    /// A client connection for a test's own assertions on the database.
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .context("connecting to the test PostgreSQL")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Stops the server now (fast shutdown), as `Drop` does.
    pub fn stop(&self) {
        let _ = as_server_user(&self.bin, "pg_ctl")
            .args(["-D"])
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
