//! Fuzz harness support: tusker's pure header grammars (`src/protocol`),
//! compiled straight from the server's sources. The module is I/O-free and
//! only needs the small crates listed in Cargo.toml, so the instrumented
//! build stays quick enough for CI.

#[path = "../../src/protocol/mod.rs"]
pub mod protocol;

/// The input as text: libFuzzer hands out bytes, header values are text.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
