//! Concatenation and concatenation-unfinished.

mod common;

use common::*;

async fn partial(c: &reqwest::Client, ep: &str, len: usize) -> String {
    create_with(
        c,
        ep,
        &[
            ("Upload-Length", &len.to_string()),
            ("Upload-Concat", "partial"),
        ],
    )
    .await
}

async fn create_final(c: &reqwest::Client, ep: &str, parts: &[&str]) -> Resp {
    Req::new("POST", ep)
        .tus()
        .h("Upload-Concat", format!("final;{}", parts.join(" ")))
        .send(c)
        .await
}

#[tokio::test]
async fn final_of_finished_partials() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let (a, b) = (bytes(70_000, 1), bytes(33_333, 2));
    let pa = partial(&c, &ep, a.len()).await;
    let pb = partial(&c, &ep, b.len()).await;
    let pz = partial(&c, &ep, 0).await;
    // tus-js-client sends Upload-Concat: partial on PATCH too.
    let resp = Req::new("PATCH", &pa)
        .tus()
        .octet()
        .h("Upload-Offset", "0")
        .h("Upload-Concat", "partial")
        .body(a.clone())
        .send(&c)
        .await;
    check(
        "PATCH partial",
        &resp,
        &Want::status(204).is("upload-offset", a.len()),
    );
    assert_eq!(patch(&c, &pb, 0, b.clone()).await.status(), 204);
    check(
        "HEAD partial",
        &head(&c, &pa).await,
        &Want::status(200).is("upload-concat", "partial"),
    );

    // Absolute URLs (as tus-js-client sends) and a bare path mixed.
    let resp = create_final(&c, &ep, &[&pa, &path_of(&pb), &pz]).await;
    let total = a.len() + b.len();
    check(
        "final",
        &resp,
        &Want::status(201).is("upload-offset", total).has("location"),
    );
    let fin = resp.header("location").unwrap();
    let want_concat = format!("final;{} {} {}", path_of(&pa), path_of(&pb), path_of(&pz));
    check(
        "HEAD final",
        &head(&c, &fin).await,
        &Want::status(200)
            .is("upload-offset", total)
            .is("upload-length", total)
            .is("upload-concat", want_concat)
            .no("upload-expires"),
    );
    assert_eq!(download(&c, &fin).await, [a.clone(), b.clone()].concat());

    // The same partials can be reused, in another order.
    let resp = create_final(&c, &ep, &[&pb, &pa]).await;
    check(
        "final reversed",
        &resp,
        &Want::status(201).is("upload-offset", total),
    );
    assert_eq!(
        download(&c, &resp.header("location").unwrap()).await,
        [b, a].concat()
    );

    // A final upload takes no PATCH.
    let resp = Req::new("PATCH", &fin)
        .tus()
        .octet()
        .h("Upload-Offset", total)
        .body(b"x".to_vec())
        .send(&c)
        .await;
    check(
        "PATCH final",
        &resp,
        &Want::status(403).err("ERR_FINAL_UPLOAD_IMMUTABLE"),
    );
    let resp = Req::new("PATCH", &fin)
        .tus()
        .octet()
        .h("Upload-Offset", "0")
        .body(b"x".to_vec())
        .send(&c)
        .await;
    check(
        "PATCH final at 0",
        &resp,
        &Want::status(403).err("ERR_FINAL_UPLOAD_IMMUTABLE"),
    );
    check(
        "HEAD final after",
        &head(&c, &fin).await,
        &Want::status(200).is("upload-offset", total),
    );
    server.stop().await;
}

#[tokio::test]
async fn final_created_before_its_partials_finish() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let (a, b) = (bytes(50_000, 4), bytes(20_000, 5));
    let pa = partial(&c, &ep, a.len()).await;
    let pb = partial(&c, &ep, b.len()).await;
    assert_eq!(patch(&c, &pa, 0, a[..10_000].to_vec()).await.status(), 204);

    let resp = create_final(&c, &ep, &[&pa, &pb]).await;
    check("final early", &resp, &Want::status(201).no("upload-offset"));
    let fin = resp.header("location").unwrap();
    let total = a.len() + b.len();
    let unassembled = Want::status(200)
        .no("upload-offset")
        .is("upload-length", total)
        .check("upload-concat", "final;…", |v| v.starts_with("final;"));
    check("HEAD early", &head(&c, &fin).await, &unassembled);
    check(
        "GET early",
        &Req::new("GET", &fin).send(&c).await,
        &Want::status(409).err("ERR_UPLOAD_NOT_FINISHED"),
    );
    let resp = Req::new("PATCH", &fin)
        .tus()
        .octet()
        .h("Upload-Offset", "0")
        .body(b"x".to_vec())
        .send(&c)
        .await;
    check(
        "PATCH early final",
        &resp,
        &Want::status(403).err("ERR_FINAL_UPLOAD_IMMUTABLE"),
    );

    assert_eq!(patch(&c, &pb, 0, b.clone()).await.status(), 204);
    check("HEAD after one part", &head(&c, &fin).await, &unassembled);

    assert_eq!(
        patch(&c, &pa, 10_000, a[10_000..].to_vec()).await.status(),
        204
    );
    check(
        "HEAD after the last part",
        &head(&c, &fin).await,
        &Want::status(200)
            .is("upload-offset", total)
            .is("upload-length", total),
    );
    assert_eq!(download(&c, &fin).await, [a, b].concat());
    server.stop().await;
}

#[tokio::test]
async fn two_finals_waiting_on_one_partial_both_complete() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let (a, b) = (bytes(1000, 6), bytes(2000, 7));
    let pa = partial(&c, &ep, a.len()).await;
    let pb = partial(&c, &ep, b.len()).await;
    assert_eq!(patch(&c, &pb, 0, b.clone()).await.status(), 204);
    let f1 = create_final(&c, &ep, &[&pa, &pb])
        .await
        .header("location")
        .unwrap();
    let f2 = create_final(&c, &ep, &[&pb, &pa])
        .await
        .header("location")
        .unwrap();
    assert_eq!(patch(&c, &pa, 0, a.clone()).await.status(), 204);
    assert_eq!(download(&c, &f1).await, [a.clone(), b.clone()].concat());
    assert_eq!(download(&c, &f2).await, [b, a].concat());
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_partial_removes_the_final_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::on(dir.path());
    let c = client();
    let ep = server.endpoint.clone();
    let pa = partial(&c, &ep, 10).await;
    let pb = partial(&c, &ep, 10).await;
    let fin = create_final(&c, &ep, &[&pa, &pb])
        .await
        .header("location")
        .unwrap();
    check(
        "delete part",
        &Req::new("DELETE", &pa).tus().send(&c).await,
        &Want::status(204),
    );
    let status = head(&c, &fin).await.status;
    assert!(
        status == 410 || status == 404,
        "final after its part was deleted: {status}"
    );
    assert!(!stored_files(dir.path()).contains(&id_of(&fin)));
    // Its other part is unaffected and a final naming the deleted part is refused.
    assert_eq!(offset(&c, &pb).await, 0);
    let resp = create_final(&c, &ep, &[&pa, &pb]).await;
    check(
        "final naming a deleted part",
        &resp,
        &Want::status(400).err("ERR_CONCAT_PART_NOT_FOUND"),
    );
    server.stop().await;
}

#[tokio::test]
async fn invalid_finals_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_size = Some(100);
    let server = TestServer::start(cfg);
    let c = client();
    let ep = server.endpoint.clone();
    let p60a = partial(&c, &ep, 60).await;
    let p60b = partial(&c, &ep, 60).await;
    let p10 = partial(&c, &ep, 10).await;
    let regular = create(&c, &ep, 10).await;
    let fin = create_final(&c, &ep, &[&p10])
        .await
        .header("location")
        .unwrap();
    let before = stored_files(dir.path());
    let unknown = format!("{ep}0123456789abcdef0123456789abcdef");
    let post = |v: String| Req::new("POST", &ep).tus().h("Upload-Concat", v);
    let rows = vec![
        row(
            "names a regular upload",
            post(format!("final;{p10} {regular}")),
            Want::status(400).err("ERR_CONCAT_PART_NOT_PARTIAL"),
        ),
        row(
            "names a final upload",
            post(format!("final;{fin}")),
            Want::status(400).err("ERR_CONCAT_PART_NOT_PARTIAL"),
        ),
        row(
            "names an unknown upload",
            post(format!("final;{p10} {unknown}")),
            Want::status(400).err("ERR_CONCAT_PART_NOT_FOUND"),
        ),
        row(
            "no parts",
            post("final;".into()),
            Want::status(400).err("ERR_INVALID_CONCAT"),
        ),
        row(
            "not a concat value",
            post("both".into()),
            Want::status(400).err("ERR_INVALID_CONCAT"),
        ),
        row(
            "final without ;",
            post(format!("final {p10}")),
            Want::status(400).err("ERR_INVALID_CONCAT"),
        ),
        row(
            "URL outside the base path",
            post(format!(
                "final;http://{}/other/{}",
                server.addr,
                id_of(&p10)
            )),
            Want::status(400).err("ERR_INVALID_CONCAT"),
        ),
        row(
            "relative path",
            post(format!("final;files/{}", id_of(&p10))),
            Want::status(400).err("ERR_INVALID_CONCAT"),
        ),
        row(
            "traversal in a part URL",
            post(format!("final;{ep}../files/{}", id_of(&p10))),
            Want::status(400).err("ERR_INVALID_CONCAT"),
        ),
        row(
            "URL with a query",
            post(format!("final;{p10}?x=1")),
            Want::status(400).err("ERR_INVALID_CONCAT"),
        ),
        row(
            "sum over the max size",
            post(format!("final;{p60a} {p60b}")),
            Want::status(413).err("ERR_MAX_SIZE_EXCEEDED"),
        ),
        // The client MUST NOT send Upload-Length on a final upload, not
        // even the right sum.
        row(
            "final with Upload-Length equal to the sum",
            post(format!("final;{p10}")).h("Upload-Length", "10"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
        ),
        row(
            "final with a different Upload-Length",
            post(format!("final;{p10}")).h("Upload-Length", "11"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
        ),
        row(
            "final with a malformed Upload-Length",
            post(format!("final;{p10}")).h("Upload-Length", "ten"),
            Want::status(400).err("ERR_INVALID_UPLOAD_LENGTH"),
        ),
        row(
            "final with a body",
            post(format!("final;{p10}")).octet().body(b"x".to_vec()),
            Want::status(403).err("ERR_FINAL_UPLOAD_IMMUTABLE"),
        ),
    ];
    for r in rows {
        let resp = r.req.send(&c).await;
        check(r.name, &resp, &r.want);
        assert!(resp.header("location").is_none(), "[{}]", r.name);
        assert_eq!(
            stored_files(dir.path()),
            before,
            "[{}] created something",
            r.name
        );
    }
    server.stop().await;
}
