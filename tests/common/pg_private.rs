//! A PostgreSQL cluster of the test's own, for tests that stop or restart
//! the database under running tusker instances: `initdb` into a temporary
//! directory, `pg_ctl` on a free loopback port (its unix socket inside that
//! directory, trust auth), stopped and removed when dropped.
//!
//! The binaries are taken from `TUSKER_TEST_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/*/bin`, else `PATH`. `initdb` refuses to run as
//! root, so as root (CI) the directory is given to the `postgres` user and
//! every command runs as that user (`runuser`); a normal user runs them
//! directly.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The running (or stopped) private cluster.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The user the server runs as, when not the current one.
    run_as: Option<&'static str>,
    running: bool,
}

/// Where `initdb` and `pg_ctl` are.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TUSKER_TEST_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_default()
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PrivatePg {
    /// Creates the cluster and starts it; panics with the reason (and the
    /// server log) when it cannot.
    pub fn start() -> PrivatePg {
        let dir = tempfile::Builder::new()
            .prefix("tusker-pg")
            .tempdir()
            .expect("temp dir");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let run_as = (unsafe { libc::geteuid() } == 0).then_some("postgres");
        let mut pg = PrivatePg {
            dir,
            bin: bin_dir(),
            port: free_port(),
            run_as,
            running: false,
        };
        if let Some(user) = run_as {
            let ok = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(pg.dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot give {} to {user}", pg.dir.path().display());
        }
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        );
        // Appended by this (possibly root) process to a file the server's
        // user owns: ownership does not change.
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 300\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\n",
            pg.dir.path().display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("postgresql.conf");
        pg.start_again();
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log, for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs one of the PostgreSQL programs (as the server's user); panics
    /// with its output and the server log when it fails.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // The server's user may not be allowed into the current directory.
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {} ({e}); set TUSKER_TEST_PG_BIN", exe.display())
        });
        assert!(
            out.status.success(),
            "{program} failed ({}):\n{}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let (data, log, port) = (self.data_dir(), self.log(), format!("-p {}", self.port));
        let mut all: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-o".as_ref(),
            port.as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
        ];
        all.extend(
            args.iter()
                .map(|a| <str as AsRef<std::ffi::OsStr>>::as_ref(a)),
        );
        self.run("pg_ctl", &all);
    }

    /// Starts the server (again) on the same port and data; returns once
    /// it accepts connections.
    pub fn start_again(&mut self) {
        assert!(!self.running, "already running");
        self.pg_ctl(&["start"]);
        self.running = true;
    }

    /// Stops the server ("fast": connections are cut, sessions end).
    pub fn stop(&mut self) {
        if self.running {
            self.pg_ctl(&["stop", "-m", "fast"]);
            self.running = false;
        }
    }

    /// Stops the server and starts it again after `down`.
    pub fn restart_after(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.start_again();
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.running {
            // Best effort: the directory goes away with the TempDir anyway.
            let data = self.data_dir();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run(
                    "pg_ctl",
                    &[
                        "-D".as_ref(),
                        data.as_os_str(),
                        "stop".as_ref(),
                        "-m".as_ref(),
                        "immediate".as_ref(),
                    ],
                )
            }));
        }
    }
}
