//! The real binary: configuration precedence, `tusker config`, and
//! graceful shutdown on signals.

mod common;

use bytes::Bytes;
use common::proc::Spawn;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_tusker");

/// A command with a clean environment, so `TUSKER_*` variables of the
/// surrounding shell play no part.
fn tusker() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("RUST_LOG", "info");
    cmd
}

/// Runs `tusker config ...` and returns its output parsed as TOML.
fn effective(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let out = tusker()
        .arg("config")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run tusker config");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.parse().expect("tusker config prints TOML")
}

fn write_file(dir: &Path, text: &str) -> String {
    let path = dir.join("tusker.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn precedence_is_defaults_file_environment_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        r#"
listen = "127.0.0.1:2000"
base_path = "/from-file/"
max_body_size = "1MiB"
max_concurrent_uploads = 7
behind_proxy = true
cors_allow_origin = ["https://a.example", "https://b.example"]
shutdown_timeout = "5s"
"#,
    );
    // File over defaults.
    let c = effective(&["--config", &file], &[]);
    assert_eq!(c["listen"].as_str(), Some("127.0.0.1:2000"));
    assert_eq!(c["base_path"].as_str(), Some("/from-file/"));
    assert_eq!(c["max_body_size"].as_str(), Some("1MiB"));
    assert_eq!(c["max_concurrent_uploads"].as_integer(), Some(7));
    assert_eq!(c["behind_proxy"].as_bool(), Some(true));
    assert_eq!(c["cors_allow_origin"].as_array().map(Vec::len), Some(2));
    assert_eq!(c["shutdown_timeout"].as_str(), Some("5s"));
    assert_eq!(c["lock_timeout"].as_str(), Some("3s"), "defaults stay");

    // Environment over file (TUSKER_CONFIG names the file too).
    let c = effective(
        &[],
        &[
            ("TUSKER_CONFIG", file.as_str()),
            ("TUSKER_BASE_PATH", "/from-env/"),
            ("TUSKER_MAX_CONCURRENT_UPLOADS", "9"),
        ],
    );
    assert_eq!(c["base_path"].as_str(), Some("/from-env/"));
    assert_eq!(c["max_concurrent_uploads"].as_integer(), Some(9));
    assert_eq!(c["listen"].as_str(), Some("127.0.0.1:2000"));

    // Flags over environment.
    let c = effective(
        &["--config", &file, "--base-path", "/from-flag/"],
        &[("TUSKER_BASE_PATH", "/from-env/")],
    );
    assert_eq!(c["base_path"].as_str(), Some("/from-flag/"));
    assert_eq!(c["max_body_size"].as_str(), Some("1MiB"));

    // The printed configuration is itself a valid file with the same effect.
    let printed = tusker()
        .args(["config", "--config", &file])
        .output()
        .unwrap()
        .stdout;
    let again = write_file(dir.path(), std::str::from_utf8(&printed).unwrap());
    assert_eq!(
        effective(&["--config", &again], &[]),
        effective(&["--config", &file], &[])
    );
}

#[test]
fn config_redacts_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "s3_endpoint = \"http://minio:hunter2@minio:9000/\"\nstorage = \"s3://bucket/prefix\"\n",
    );
    let out = tusker()
        .args(["config", "--config", &file])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("s3_endpoint = \"http://minio:REDACTED@minio:9000/\""),
        "{text}"
    );
    assert!(text.contains("storage = \"s3://bucket/prefix\""), "{text}");
}

#[test]
fn bad_config_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("no_such_option = 1\n", "unknown option `no_such_option`"),
        ("max_body_size = \"lots\"\n", "max-body-size"),
        ("behind_proxy = \"yes\"\n", "behind_proxy"),
        ("listen = [", "not valid TOML"),
    ] {
        let file = write_file(dir.path(), text);
        let out = tusker()
            .args(["config", "--config", &file])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
    }
    let out = tusker()
        .args(["config", "--config", "/nonexistent/tusker.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

async fn bytes_received(c: &reqwest::Client, addr: &str) -> u64 {
    let Ok(res) = c.get(format!("http://{addr}/metrics")).send().await else {
        return 0;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("tusker_bytes_received_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test]
async fn sigterm_during_a_streaming_patch_keeps_the_received_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Spawn::in_dir(dir.path())
        .args(["--shutdown-timeout", "20s"])
        .start()
        .await;
    let addr = server.addr.to_string();
    let c = client();
    let endpoint = server.endpoint();
    let url = create(&c, &endpoint, 1 << 20).await;

    // A PATCH whose body arrives slowly and is still open at the signal.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let running = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.patch(&url)
                .header(TUS.0, TUS.1)
                .header(OCTET.0, OCTET.1)
                .header("Upload-Offset", "0")
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
        }
    });
    let sent = 3 * 65536u64;
    for i in 0..3 {
        tx.send(Ok(Bytes::from(bytes(65536, i)))).await.unwrap();
    }
    let arrived = eventually(Duration::from_secs(20), || async {
        bytes_received(&c, &addr).await >= sent
    })
    .await;
    assert!(arrived, "the server never received the first chunks");

    server.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = server.exit_status();
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert!(status.success(), "exit status {status:?}");
    if let Ok(res) = running.await.unwrap() {
        assert_eq!(res.status(), 204);
        assert_eq!(header(&res, "upload-offset"), Some(sent.to_string()));
    }
    drop(tx);
    drop(server);

    // After a restart the bytes received before the signal are there.
    let mut again = Spawn::in_dir(dir.path()).start().await;
    let url = url.replace(&endpoint, &again.endpoint());
    assert_eq!(offset(&c, &url).await, sent);
    again.signal("INT");
    let status = tokio::task::spawn_blocking(move || again.exit_status())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Spawn::in_dir(dir.path())
        .args(["--shutdown-timeout", "120s"])
        .start()
        .await;
    // A download that the client stops reading keeps a request running, so
    // the graceful shutdown would wait for it.
    let c = client();
    let endpoint = server.endpoint();
    let size = 64u64 << 20;
    let url = create(&c, &endpoint, size).await;
    let res = patch(&c, &url, 0, vec![7u8; size as usize]).await;
    assert_eq!(res.status(), 204);
    let path = url.replace(&format!("http://{}", server.addr), "");
    let mut conn = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: tusker\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 12];
    conn.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    tokio::task::spawn_blocking(move || {
        server.signal("TERM");
        server.wait_for_log("shutting down");
        server.signal("TERM");
        let status = server.exit_status();
        assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    })
    .await
    .unwrap();
    drop(conn);
}
