//! OPTIONS: what the server advertises, without requiring Tus-Resumable.

mod common;

use common::*;

const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation,concatenation-unfinished";

fn algorithms_include_required(v: &str) -> bool {
    let algs: Vec<&str> = v.split(',').collect();
    !v.contains(' ')
        && ["sha1", "sha256", "md5", "crc32"]
            .iter()
            .all(|a| algs.contains(a))
}

#[tokio::test]
async fn options_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let url = create(&c, &ep, 10).await;
    let advertised = || {
        Want::status(200)
            .is("tus-version", "1.0.0")
            .is("tus-extension", EXTENSIONS)
            .check(
                "tus-checksum-algorithm",
                "a comma list without spaces incl. sha1,sha256,md5,crc32",
                algorithms_include_required,
            )
            .no("tus-max-size")
    };
    run(
        &c,
        vec![
            row(
                "collection, no Tus-Resumable",
                Req::new("OPTIONS", &ep),
                advertised(),
            ),
            row(
                "collection, with Tus-Resumable",
                Req::new("OPTIONS", &ep).tus(),
                advertised(),
            ),
            row(
                "collection, unsupported Tus-Resumable is not a reason to fail",
                Req::new("OPTIONS", &ep).h("Tus-Resumable", "0.2.2"),
                advertised(),
            ),
            row(
                "collection without trailing slash",
                Req::new("OPTIONS", ep.trim_end_matches('/')),
                advertised(),
            ),
            row("upload URL", Req::new("OPTIONS", &url), advertised()),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn options_advertises_max_size_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_size = Some(1_000_000);
    let server = TestServer::start(cfg);
    let c = client();
    run(
        &c,
        vec![row(
            "Tus-Max-Size",
            Req::new("OPTIONS", &server.endpoint),
            Want::status(200)
                .is("tus-max-size", "1000000")
                .is("tus-extension", EXTENSIONS)
                .is("tus-version", "1.0.0"),
        )],
    )
    .await;
    server.stop().await;
}
