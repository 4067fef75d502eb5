//! A private PostgreSQL cluster for one test: `initdb` into a temp dir,
//! `pg_ctl start` on a free loopback port with prepared transactions on,
//! trust authentication, and `pg_ctl stop` on drop. Queries go through
//! `psql`, so the cli tests share this module (`#[path]`) without a client
//! crate.
//!
//! The binaries come from `$CAIRN_PG_BINDIR`, else `pg_config --bindir`,
//! else the newest `/usr/lib/postgresql/*/bin`, else `PATH`;
//! `scripts/setup.sh` installs PostgreSQL where `initdb` is missing. When
//! running as root the cluster runs as the `postgres` user (`runuser`), as
//! PostgreSQL refuses to run as root.
//!
//! A panic here is a test failure, so unwrapping is fine.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A running cluster, stopped (fast) on drop.
#[derive(Debug)]
pub(crate) struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_PG_BINDIR") {
        return dir.into();
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    // On PATH, or a clear failure below.
    PathBuf::new()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// Creates and starts a cluster; panics, saying what to install, when
    /// PostgreSQL is missing.
    pub(crate) fn start() -> Self {
        let bin = bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg")
            .tempdir()
            .unwrap();
        if as_postgres {
            run_ok(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data();
        let out = cluster
            .tool("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run initdb from {:?} ({e}): install PostgreSQL (scripts/setup.sh does) \
                     or set CAIRN_PG_BINDIR",
                    cluster.bin
                )
            });
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        // A port picked free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            cluster.port = free_port();
            if cluster.try_start() {
                return cluster;
            }
        }
        panic!(
            "the PostgreSQL server did not start: {}",
            std::fs::read_to_string(cluster.log()).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A command running `name` from the cluster's bin dir, as `postgres`
    /// when we are root.
    fn tool(&self, name: &str) -> Command {
        let program = if self.bin.as_os_str().is_empty() {
            PathBuf::from(name)
        } else {
            self.bin.join(name)
        };
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn try_start(&self) -> bool {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c max_prepared_transactions=64 \
             -c unix_socket_directories={} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.tool("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-o", &options])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// The port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for the `postgres` database as user `postgres`.
    pub(crate) fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Runs `sql` with psql; its rows, one line each (`|` between columns).
    pub(crate) fn psql(&self, sql: &str) -> Vec<String> {
        let out = self
            .tool("psql")
            .args(self.psql_args(sql))
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql:?}: {}", text(&out));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn psql_args(&self, sql: &str) -> Vec<String> {
        [
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// The gids in `pg_prepared_xacts`.
    pub(crate) fn prepared(&self) -> Vec<String> {
        self.psql("SELECT gid FROM pg_prepared_xacts ORDER BY gid")
    }

    /// `pg_ctl stop -m immediate`: the server dies as in a crash.
    pub(crate) fn stop_immediate(&self) {
        run_ok(
            self.tool("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(self.data()),
        );
    }

    /// Starts the server again on the same port (after a stop).
    pub(crate) fn start_again(&self) {
        assert!(
            self.try_start(),
            "restart failed: {}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.data())
            .output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
}
