//! DELETE (termination): 204, then 410 on every verb; 404 for ids that
//! never existed; the bytes are removed.

mod common;

use common::*;

#[tokio::test]
async fn delete_then_gone_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let url = create(&c, &ep, 100).await;
    assert_eq!(patch(&c, &url, 0, bytes(10, 1)).await.status(), 204);
    let finished = upload(&c, &ep, &bytes(20, 2)).await;
    let overridden = create(&c, &ep, 5).await;
    let never = format!("{ep}0123456789abcdef0123456789abcdef");
    // Files hold bytes: the upload without any has none yet.
    assert_eq!(stored_files(dir.path()), {
        let mut ids = vec![id_of(&url), id_of(&finished)];
        ids.sort();
        ids
    });

    run(
        &c,
        vec![
            row(
                "DELETE unfinished",
                Req::new("DELETE", &url).tus(),
                Want::status(204),
            ),
            row(
                "HEAD after",
                Req::new("HEAD", &url).tus(),
                Want::status(410),
            ),
            row(
                "PATCH after",
                Req::new("PATCH", &url)
                    .tus()
                    .octet()
                    .h("Upload-Offset", "10")
                    .body(b"x".to_vec()),
                Want::status(410).err("ERR_UPLOAD_GONE"),
            ),
            row(
                "GET after",
                Req::new("GET", &url),
                Want::status(410).err("ERR_UPLOAD_GONE"),
            ),
            row(
                "DELETE again",
                Req::new("DELETE", &url).tus(),
                Want::status(410).err("ERR_UPLOAD_GONE"),
            ),
            row(
                "DELETE finished",
                Req::new("DELETE", &finished).tus(),
                Want::status(204),
            ),
            row(
                "GET finished after",
                Req::new("GET", &finished),
                Want::status(410).err("ERR_UPLOAD_GONE"),
            ),
            row(
                "X-HTTP-Method-Override: DELETE on a POST",
                Req::new("POST", &overridden)
                    .tus()
                    .h("X-HTTP-Method-Override", "DELETE"),
                Want::status(204),
            ),
            row(
                "HEAD after override",
                Req::new("HEAD", &overridden).tus(),
                Want::status(410),
            ),
            row(
                "DELETE never existed",
                Req::new("DELETE", &never).tus(),
                Want::status(404).err("ERR_UPLOAD_NOT_FOUND"),
            ),
            row(
                "HEAD never existed",
                Req::new("HEAD", &never).tus(),
                Want::status(404),
            ),
        ],
    )
    .await;
    assert!(
        stored_files(dir.path()).is_empty(),
        "bytes left: {:?}",
        stored_files(dir.path())
    );

    // The 204 has no body and no Upload-Offset.
    let url = create(&c, &ep, 1).await;
    let resp = Req::new("DELETE", &url).tus().send(&c).await;
    check(
        "204 shape",
        &resp,
        &Want::status(204).no("upload-offset").no("location"),
    );
    assert!(resp.body.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn gone_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let server = TestServer::on(dir.path());
    let url = create(&c, &server.endpoint, 10).await;
    let id = id_of(&url);
    check(
        "delete",
        &Req::new("DELETE", &url).tus().send(&c).await,
        &Want::status(204),
    );
    server.stop().await;
    let server = TestServer::on(dir.path());
    let url = format!("{}{id}", server.endpoint);
    check(
        "HEAD after restart",
        &head(&c, &url).await,
        &Want::status(410),
    );
    server.stop().await;
}
