//! The real tusker binary as a child process: spawned on a data directory,
//! SIGKILLed (never a graceful stop) and restarted on the same state, and
//! watched from outside (its memory from /proc).
//!
//! The server listens on port 0 and the address is read from its
//! "tusker listening" log line, so no port is guessed and no other process
//! on the machine can take it between a probe and the bind.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a start (including sled's recovery after a kill) may take.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A tusker process; SIGKILLed and reaped when dropped.
pub struct Tusker {
    child: Option<Child>,
    /// Where it listens (changes on every restart).
    pub addr: SocketAddr,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log: PathBuf,
    wrapper: Vec<OsString>,
    /// Times this process was started.
    pub starts: usize,
}

/// How to start a tusker: flags and environment besides `--listen`, and the
/// log file (stderr, appended across restarts).
#[derive(Clone)]
pub struct Spawn {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    log: PathBuf,
    /// A program (and its arguments) the binary runs under; it must exec
    /// the binary with the arguments that follow, keeping its pid.
    wrapper: Vec<OsString>,
}

/// Memory of a process in bytes: resident now, and the peak so far.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

pub const MIB: u64 = 1024 * 1024;

/// Formats bytes as MiB for messages.
pub fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / MIB as f64)
}

impl Spawn {
    /// `--data-dir DIR/data` with the log at `DIR/tusker.log`.
    pub fn in_dir(dir: &Path) -> Spawn {
        Spawn::new(&dir.join("data"), &dir.join("tusker.log"))
    }

    /// `tusker --data-dir DATA_DIR --workers 2`, logging warnings and the
    /// server's own info lines to `log`.
    pub fn new(data_dir: &Path, log: &Path) -> Spawn {
        Spawn {
            args: vec![
                "--data-dir".into(),
                data_dir.into(),
                "--workers".into(),
                "2".into(),
            ],
            envs: vec![("RUST_LOG".into(), "warn,tusker=info".into())],
            log: log.to_owned(),
            wrapper: Vec::new(),
        }
    }

    /// Runs the binary under `program args…`, which must end by exec'ing
    /// it (`unshare … sh -c '…; exec "$@"'`, a shell that sets `ulimit`).
    pub fn wrapped<I, S>(mut self, program: &str, args: I) -> Spawn
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper = std::iter::once(program.into())
            .chain(args.into_iter().map(Into::into))
            .collect();
        self
    }

    /// Adds flags.
    pub fn args<I, S>(mut self, args: I) -> Spawn
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (a later value wins).
    pub fn env(mut self, key: &str, value: &str) -> Spawn {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Storage in `s3://BUCKET/PREFIX` on the test S3 server, 5 MiB parts,
    /// short retry pauses, and the dummy credentials a local server takes.
    pub fn s3(self, endpoint: &str, bucket: &str, prefix: &str) -> Spawn {
        self.args([
            "--storage".to_owned(),
            format!("s3://{bucket}/{prefix}"),
            "--s3-endpoint".to_owned(),
            endpoint.to_owned(),
            "--part-size".to_owned(),
            "5MiB".to_owned(),
            "--storage-retry-max-delay".to_owned(),
            "500ms".to_owned(),
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
    }

    /// Starts the process and waits until it serves requests.
    pub async fn start(self) -> Tusker {
        let mut t = Tusker {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            args: self.args,
            envs: self.envs,
            log: self.log,
            wrapper: self.wrapper,
            starts: 0,
        };
        t.launch().await;
        t
    }
}

impl Tusker {
    /// `http://ADDR/files/`
    pub fn endpoint(&self) -> String {
        format!("http://{}/files/", self.addr)
    }

    /// The URL of upload `id` on this process.
    pub fn url(&self, id: &str) -> String {
        format!("{}{id}", self.endpoint())
    }

    /// Everything the process (and its predecessors) logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` log lines, for assertion messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Panics (with the log) if the process died on its own.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("started");
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.child = None;
            panic!(
                "tusker died by itself ({status}); log:\n{}",
                self.log_tail(60)
            );
        }
    }

    /// Resident and peak resident memory, from /proc/PID/status (Linux);
    /// `None` elsewhere or when not running.
    pub fn memory(&self) -> Option<Memory> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map(|n| n * 1024)
        };
        Some(Memory {
            rss: kib("VmRSS:")?,
            hwm: kib("VmHWM:")?,
        })
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id while running (to SIGSTOP and SIGCONT it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends signal `sig` (`TERM`, `INT`, `STOP`…) to the process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {pid} failed");
    }

    /// Waits up to 30 s for the process to exit by itself and reaps it.
    pub fn exit_status(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("started");
        for _ in 0..600 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tusker did not exit; log:\n{}", self.log_tail(40));
    }

    /// Waits up to 30 s for a log line containing `needle`, written since
    /// the last start; returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        for _ in 0..600 {
            if let Some(line) = self.log_text().lines().rev().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no log line with {needle:?}; log:\n{}", self.log_tail(40));
    }

    /// SIGKILL, then reap. Does nothing when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs the process (if running) and starts it again with the same
    /// flags, data directory and storage; waits until it serves requests.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    async fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let from = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let bin = env!("CARGO_BIN_EXE_tusker");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        // Load tests create uploads faster than the default per-client
        // creation limit allows from one loopback address.
        cmd.args(["--listen", "127.0.0.1:0"])
            .env("TUSKER_MAX_CREATIONS_PER_CLIENT", "0")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn tusker"));
        self.starts += 1;
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        let addr = loop {
            if let Some(addr) = self.listening_since(from) {
                break addr;
            }
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                panic!("tusker exited with {status}; log:\n{}", self.log_tail(40));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tusker did not start; log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.addr = addr;
        // Listening is logged once the socket is bound; make sure requests
        // are served too.
        let c = super::client();
        let endpoint = self.endpoint();
        let up = super::eventually(START_LIMIT, || {
            let (c, endpoint) = (c.clone(), endpoint.clone());
            async move {
                c.request(reqwest::Method::OPTIONS, &endpoint)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        assert!(up, "tusker does not answer; log:\n{}", self.log_tail(40));
    }

    /// The address of the "tusker listening" line logged after byte `from`.
    fn listening_since(&self, from: u64) -> Option<SocketAddr> {
        let text = std::fs::read(&self.log).ok()?;
        let text = String::from_utf8_lossy(text.get(from as usize..)?);
        text.lines()
            .filter(|l| l.contains("tusker listening"))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse().ok())
            })
    }
}

impl Drop for Tusker {
    fn drop(&mut self) {
        self.kill();
    }
}
