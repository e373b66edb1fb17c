//! Expiration: unfinished uploads disappear after `expire_after`, bytes
//! included; finished uploads stay.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn unfinished_uploads_expire_and_their_bytes_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.expire_after = Some(Duration::from_secs(2));
    cfg.sweep_interval = Duration::from_millis(500);
    let server = TestServer::start(cfg);
    let c = client();
    let ep = server.endpoint.clone();

    // Unfinished, with bytes (creation-with-upload, so one request).
    let resp = Req::new("POST", &ep)
        .tus()
        .octet()
        .h("Upload-Length", "100")
        .body(bytes(40, 1))
        .send(&c)
        .await;
    check(
        "unfinished",
        &resp,
        &Want::status(201).is("upload-offset", "40").check(
            "upload-expires",
            "an IMF-fixdate",
            is_imf_fixdate,
        ),
    );
    let unfinished = resp.header("location").unwrap();
    // Finished at creation: never expires.
    let resp = Req::new("POST", &ep)
        .tus()
        .octet()
        .h("Upload-Length", "5")
        .body(b"kept!".to_vec())
        .send(&c)
        .await;
    check("finished", &resp, &Want::status(201).no("upload-expires"));
    let finished = resp.header("location").unwrap();
    // A partial and the final waiting for it.
    let part = create_with(
        &c,
        &ep,
        &[("Upload-Length", "10"), ("Upload-Concat", "partial")],
    )
    .await;
    let fin = Req::new("POST", &ep)
        .tus()
        .h("Upload-Concat", format!("final;{part}"))
        .send(&c)
        .await;
    check("final", &fin, &Want::status(201));
    let fin = fin.header("location").unwrap();

    let file = dir.path().join("uploads").join(id_of(&unfinished));
    let gone = eventually(Duration::from_secs(20), || {
        let (c, unfinished, part, fin, file) = (
            c.clone(),
            unfinished.clone(),
            part.clone(),
            fin.clone(),
            file.clone(),
        );
        async move {
            let mut all = !file.exists();
            for url in [&unfinished, &part, &fin] {
                let s = head(&c, url).await.status;
                all &= s == 410 || s == 404;
            }
            all
        }
    })
    .await;
    assert!(gone, "still there: files {:?}", stored_files(dir.path()));

    for url in [&unfinished, &part, &fin] {
        let s = head(&c, url).await.status;
        assert!(s == 410 || s == 404, "{url}: {s}");
        let resp = Req::new("PATCH", url)
            .tus()
            .octet()
            .h("Upload-Offset", "0")
            .body(b"x".to_vec())
            .send(&c)
            .await;
        assert!(
            resp.status == 410 || resp.status == 404,
            "PATCH {url}: {resp:?}"
        );
        assert_eq!(resp.header("tus-resumable").as_deref(), Some("1.0.0"));
    }
    // The finished upload and its bytes stay.
    assert_eq!(download(&c, &finished).await, b"kept!");
    assert_eq!(stored_files(dir.path()), vec![id_of(&finished)]);
    server.stop().await;
}
