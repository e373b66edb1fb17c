//! `--demo`: the page's files are served from the demo directory under
//! /demo/, nothing else is; without the npm dependencies the binary refuses
//! to start and says what to run.

mod common;

use common::*;
use std::path::Path;

fn fake_demo(dir: &Path) {
    std::fs::write(dir.join("index.html"), "<!doctype html><title>demo</title>").unwrap();
    std::fs::write(dir.join("app.js"), "\"use strict\";").unwrap();
    std::fs::write(dir.join("style.css"), "body{}").unwrap();
    let dist = dir.join("node_modules/tus-js-client/dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("tus.min.js"), "var tus={};").unwrap();
}

#[tokio::test]
async fn serves_the_page_and_its_bundle_only() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    std::fs::create_dir(&demo).unwrap();
    fake_demo(&demo);
    std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
    let mut cfg = config(&dir.path().join("data"));
    cfg.demo_dir = Some(demo);
    let server = TestServer::start(cfg);
    let c = client();
    let base = format!("http://{}", server.addr);
    for (path, media) in [
        ("/demo/", "text/html"),
        ("/demo/app.js", "text/javascript"),
        ("/demo/style.css", "text/css"),
        ("/demo/vendor/tus.min.js", "text/javascript"),
    ] {
        let res = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let ct = header(&res, "content-type").unwrap();
        assert!(ct.starts_with(media), "{path}: {ct}");
        assert!(header(&res, "content-security-policy").is_some(), "{path}");
    }
    let res = c
        .get(format!("{base}/demo/config.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cfg: serde_json::Value = res.json().await.unwrap();
    assert_eq!(cfg["endpoint"], "/files/");
    for path in [
        "/demo/../secret.txt",
        "/demo/%2e%2e/secret.txt",
        "/demo/node_modules/tus-js-client/dist/tus.min.js",
        "/demo/index.html.bak",
    ] {
        let res = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(header(&res, "location").as_deref(), Some("/demo/"));
    // Uploads still work next to it.
    let url = upload(&c, &server.endpoint, b"hello").await;
    assert_eq!(download(&c, &url).await, b"hello");
    server.stop().await;
}

#[tokio::test]
async fn off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let res = client()
        .get(format!("http://{}/demo/", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    server.stop().await;
}

#[test]
fn refuses_to_start_without_npm_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    std::fs::create_dir(&demo).unwrap();
    std::fs::write(demo.join("index.html"), "<!doctype html>").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tusker"))
        .args(["--listen", "127.0.0.1:0", "--demo", "--demo-dir"])
        .arg(&demo)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run tusker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("npm ci --prefix"),
        "stderr names the fix: {stderr}"
    );
}
