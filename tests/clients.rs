//! Real tus clients end to end against the tusker binary: tus-js-client in
//! Node, tus-js-client in Chromium (cross-origin), the demo page in
//! Chromium, and tuspy. The suites live in tests/interop/ and run as child
//! processes; they need Node, npm packages, Chromium and a Python venv,
//! which `.ci/clients-setup` installs.
//!
//! Needs `TUSKER_TEST_CLIENTS=1`; without it every test is ignored (CI
//! runs them with `--include-ignored`). The S3 variants also run when
//! `TUSKER_TEST_S3_ENDPOINT` is set (the suites report them skipped
//! otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One suite at a time: they start servers and browsers of their own.
static SERIAL: Mutex<()> = Mutex::new(());

/// Panics unless the client suites were set up: the tests calling it are
/// ignored unless `TUSKER_TEST_CLIENTS` is set.
fn require_clients(name: &str) {
    assert_eq!(
        std::env::var("TUSKER_TEST_CLIENTS").as_deref(),
        Ok("1"),
        "{name}: set TUSKER_TEST_CLIENTS=1 after .ci/clients-setup"
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what}: {} is missing; run .ci/clients-setup first",
        path.display()
    );
}

/// Runs a suite with the binary and the S3 endpoint in its environment,
/// prints its output and asserts that it passed.
fn run(name: &str, mut cmd: Command) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = Path::new(env!("CARGO_BIN_EXE_tusker"));
    cmd.env("TUSKER_BIN", bin);
    // target/<profile>/tusker: screenshots go to target/.
    if let Some(target) = bin.parent().and_then(Path::parent) {
        cmd.env("TUSKER_ARTIFACTS_DIR", target);
    }
    match std::env::var("TUSKER_TEST_S3_ENDPOINT") {
        Ok(endpoint) => {
            cmd.env("TUSKER_TEST_S3_ENDPOINT", endpoint);
        }
        Err(_) => {
            eprintln!("{name}: TUSKER_TEST_S3_ENDPOINT is not set, S3 variants are skipped");
        }
    }
    eprintln!("{name}: running {cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{name}: cannot run {cmd:?}: {e}"));
    println!(
        "----- {name}: stdout -----\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "----- {name}: stderr -----\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed: {}", out.status);
}

fn node_suite(name: &str, file: &str) {
    let dir = repo().join("tests/interop/js");
    require(&dir.join("node_modules/tus-js-client"), "npm packages");
    let mut cmd = Command::new(std::env::var("TUSKER_TEST_NODE").unwrap_or_else(|_| "node".into()));
    cmd.current_dir(&dir).args([
        "--test",
        "--test-concurrency=1",
        "--test-reporter=spec",
        file,
    ]);
    run(name, cmd);
}

#[test]
#[ignore = "needs TUSKER_TEST_CLIENTS"]
fn tus_js_client_in_node() {
    require_clients("tus-js-client in Node");
    node_suite("tus-js-client in Node", "node.test.mjs");
}

#[test]
#[ignore = "needs TUSKER_TEST_CLIENTS"]
fn tus_js_client_in_chromium() {
    require_clients("tus-js-client in Chromium");
    node_suite("tus-js-client in Chromium", "browser.test.mjs");
}

#[test]
#[ignore = "needs TUSKER_TEST_CLIENTS"]
fn demo_page_in_chromium() {
    require_clients("demo page in Chromium");
    require(
        &repo().join("demo/node_modules/tus-js-client/dist/tus.min.js"),
        "the demo's npm packages",
    );
    node_suite("demo page in Chromium", "demo.test.mjs");
}

#[test]
#[ignore = "needs TUSKER_TEST_CLIENTS"]
fn tuspy() {
    require_clients("tuspy");
    let dir = repo().join("tests/interop/python");
    let python = std::env::var_os("TUSKER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join(".venv/bin/python"));
    require(&python, "the Python venv");
    let mut cmd = Command::new(python);
    cmd.current_dir(&dir)
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider", "."]);
    run("tuspy", cmd);
}
