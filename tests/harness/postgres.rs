//! A private PostgreSQL 15 cluster (Debian's `postgresql`, installed by scripts/setup) for one
//! test: its own data directory, socket and loopback port, trust authentication, started and
//! stopped with `pg_ctl` as the `postgres` user (PostgreSQL refuses to run as root). It can be
//! stopped and started again on the same directory and port, to test a store that outlives its
//! server; drop stops it and removes everything, pass or fail. The packaged service is unused.

use super::free_port;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// `initdb` takes about a second here; a loaded 2-core machine running other tests is slower.
const INITDB_TIMEOUT: Duration = Duration::from_secs(60);
/// `pg_ctl -w` waits at most this long for the server to accept (or refuse) connections.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct PgCluster {
    pub port: u16,
    /// Holds the data directory (`data/`), the socket and the server log; mode 1777 so that the
    /// `postgres` user may write in it.
    dir: tempfile::TempDir,
    running: bool,
}

impl PgCluster {
    /// A fresh cluster, running.
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("rollwatch-pg-")
            .tempdir()
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod 1777 the cluster's dir");
        let mut cluster = PgCluster {
            port: free_port(),
            dir,
            running: false,
        };
        let data = cluster.data();
        run(
            Command::new("timeout")
                .arg(INITDB_TIMEOUT.as_secs().to_string())
                .args(["runuser", "-u", "postgres", "--"])
                .arg(format!("{BIN}/initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]),
            "initdb",
        );
        cluster.resume();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped server again, same directory and port.
    pub fn resume(&mut self) {
        let dir = self.dir.path().display().to_string();
        run(
            self.pg_ctl()
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .arg("-o")
                .arg(format!(
                    "-k {dir} -p {} -c listen_addresses=127.0.0.1 -c fsync=off",
                    self.port
                ))
                .arg("start"),
            "pg_ctl start",
        );
        self.running = true;
    }

    /// Stops the server (fast: open sessions are ended, as when a server is shut down).
    pub fn stop(&mut self) {
        self.stop_with("fast");
    }

    fn stop_with(&mut self, mode: &str) {
        if self.running {
            run(self.pg_ctl().args(["-m", mode, "stop"]), "pg_ctl stop");
            self.running = false;
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(format!("{BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", &PG_CTL_TIMEOUT.as_secs().to_string()]);
        c
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            // Immediate: nothing of a test database needs a clean shutdown.
            let _ = self.pg_ctl().args(["-m", "immediate", "stop"]).output();
        }
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
