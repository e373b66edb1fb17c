//! Captures the server's `tracing` output in memory, so a test can check
//! what was logged. The subscriber is process-wide: tests that read the
//! log should not run at the same time as others that write the same lines.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn buffer() -> &'static Mutex<Vec<u8>> {
    BUFFER.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (warnings and up from tusker) once.
pub fn capture() {
    capture_with("tusker=warn");
}

/// Installs the capturing subscriber with `filter` (an `EnvFilter`
/// directive) once per process; the first call's filter wins.
pub fn capture_with(filter: &str) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Forgets what was captured so far.
pub fn clear() {
    buffer().lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Captured lines that contain every one of `needles`.
pub fn count(needles: &[&str]) -> usize {
    let buf = buffer().lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&buf)
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .count()
}
