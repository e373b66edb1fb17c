//! The real tusker binary as a child process, for tests that watch its
//! memory (VmRSS / VmHWM from /proc) or its connections from outside.

use super::client;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running tusker binary; killed and reaped when dropped.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

/// Memory of a process in bytes: resident now, and the peak so far.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

impl Binary {
    /// Starts the binary on a free loopback port with `--data-dir dir/data`,
    /// two workers and `args`; its log goes to `dir/tusker.log`. Waits
    /// until it answers OPTIONS.
    pub async fn start(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("address")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let log = dir.join("tusker.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tusker"));
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--workers", "2"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tusker");
        let mut bin = Binary { child, addr, log };
        let c = client();
        let url = bin.endpoint();
        for _ in 0..400 {
            if let Some(status) = bin.child.try_wait().expect("try_wait") {
                panic!("tusker exited with {status}: {}", bin.log_text());
            }
            if let Ok(r) = c.request(reqwest::Method::OPTIONS, &url).send().await {
                if r.status() == 200 {
                    return bin;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tusker did not come up: {}", bin.log_text());
    }

    /// `http://ADDR/files/`
    pub fn endpoint(&self) -> String {
        format!("http://{}/files/", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident and peak resident memory, from /proc/PID/status (Linux);
    /// `None` elsewhere.
    pub fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
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
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const MIB: u64 = 1024 * 1024;

/// Formats bytes as MiB for messages.
pub fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / MIB as f64)
}
