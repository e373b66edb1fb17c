//! CPU time and peak RSS of a process, from /proc.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    (utime + stime) / TICKS
}

/// Resident memory of process `pid` now, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub struct Stats {
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

pub struct ProcWatch {
    pid: u32,
    cpu0: f64,
    reset: bool,
    sampled: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl ProcWatch {
    pub fn start(pid: u32) -> ProcWatch {
        // "5" resets VmHWM to the current RSS (needs root or ownership).
        let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let sampled = Arc::new(AtomicU64::new(status_kib(pid, "VmRSS:").unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (sampled, stop) = (sampled.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = status_kib(pid, "VmRSS:") {
                        sampled.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        ProcWatch {
            pid,
            cpu0: cpu_seconds(pid),
            reset,
            sampled,
            stop,
            sampler: Some(sampler),
        }
    }

    pub fn finish(mut self) -> Stats {
        let cpu_s = cpu_seconds(self.pid) - self.cpu0;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
        let sampled = self.sampled.load(Ordering::Relaxed);
        let hwm = if self.reset {
            status_kib(self.pid, "VmHWM:").unwrap_or(0)
        } else {
            0
        };
        Stats {
            cpu_s,
            peak_rss_kib: hwm.max(sampled),
        }
    }
}
