//! The finished upload as an object: its headers and user metadata, the
//! bucket a pre-create hook chose, and downloads redirected to the bucket,
//! against a real S3 protocol server.
//!
//! Needs `TUSKER_TEST_S3_ENDPOINT` (e.g. a moto_server that `.ci/run`
//! starts), and `TUSKER_TEST_POSTGRES_URL` for several instances; without
//! them every test is ignored (CI runs them with `--include-ignored`).

mod common;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::pg_db::Db;
use common::s3::*;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tusker::config::TailStaging;

type Answer = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// A hook receiver on loopback answering every call with `answer(body)`.
struct Receiver {
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    fn start(answer: Answer) -> Receiver {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let answer = answer.clone();
                    App::new().default_service(web::to(move |body: web::Json<Value>| {
                        let reply = answer(&body);
                        async move { HttpResponse::Ok().json(reply) }
                    }))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .expect("bind");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).expect("test alive");
                server.await.expect("receiver runs");
            })
        });
        let (addr, handle) = rx.recv().expect("receiver started");
        Receiver {
            url: format!("http://{addr}/hooks"),
            handle,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn with_hooks(mut c: tusker::config::Config, url: &str) -> tusker::config::Config {
    c.hooks = Some(tusker::hooks::HookConfig {
        url: url.to_owned(),
        enabled: [tusker::hooks::HookType::PreCreate].into_iter().collect(),
        forward_headers: Vec::new(),
        timeout: Duration::from_secs(5),
        post_attempts: 1,
        progress_interval: Duration::from_secs(1),
    });
    c
}

/// `Upload-Metadata` for `pairs`.
fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", b64(v.as_bytes())))
        .collect::<Vec<_>>()
        .join(",")
}

/// A client of the S3 server's bucket, with the test credentials.
fn bucket_client(endpoint: &str, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_allow_http(true)
        .build()
        .expect("S3 client")
}

/// The headers and user metadata of an object, as the S3 server keeps
/// them (a signed HEAD Object).
async fn object_headers(endpoint: &str, bucket: &str, key: &str) -> Headers {
    use object_store::{Attribute, GetOptions, ObjectStore};
    let got = bucket_client(endpoint, bucket)
        .get_opts(
            &object_store::path::Path::from(key),
            GetOptions {
                head: true,
                ..GetOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("object {bucket}/{key}: {e}"));
    let mut out = Headers::default();
    for (attribute, value) in got.attributes.iter() {
        let name = match attribute {
            Attribute::ContentType => "content-type".to_owned(),
            Attribute::ContentDisposition => "content-disposition".to_owned(),
            Attribute::CacheControl => "cache-control".to_owned(),
            Attribute::Metadata(key) => format!("x-amz-meta-{key}"),
            _ => continue,
        };
        out.0.insert(name, value.as_ref().to_owned());
    }
    out
}

/// Object headers by lowercase name.
#[derive(Debug, Default)]
struct Headers(std::collections::BTreeMap<String, String>);

impl Headers {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

async fn object_exists(endpoint: &str, bucket: &str, key: &str) -> bool {
    use object_store::ObjectStoreExt;
    match bucket_client(endpoint, bucket)
        .head(&object_store::path::Path::from(key))
        .await
    {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("head {bucket}/{key}: {e}"),
    }
}

/// A tus upload of `data` with `Upload-Metadata: meta`, PATCHed in pieces
/// of `chunk` bytes.
async fn upload_with(
    c: &reqwest::Client,
    endpoint: &str,
    meta: &str,
    data: &[u8],
    chunk: usize,
) -> String {
    let url = create_with(
        c,
        endpoint,
        &[
            ("Upload-Length", &data.len().to_string()),
            ("Upload-Metadata", meta),
        ],
    )
    .await;
    upload_in_chunks(c, &url, 0, data, chunk).await;
    url
}

/// Whatever way the object was written (one PUT, multipart, assembled from
/// parts, an IETF creation), it carries Content-Type, Content-Disposition
/// and the other metadata keys as user metadata.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn objects_carry_their_uploads_metadata() {
    objects_carry_metadata_with(TailStaging::Bucket).await;
}

/// The same with tails staged in local files, whose finish writes the
/// object by its own path.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn objects_carry_their_uploads_metadata_with_local_tails() {
    objects_carry_metadata_with(TailStaging::Local).await;
}

async fn objects_carry_metadata_with(staging: TailStaging) {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = s3_config(dir.path(), &endpoint, &bucket);
    config.tail_staging = staging;
    let server = TestServer::start(config);
    let c = client();
    let meta = metadata(&[
        ("filename", "Vidéo finale.mp4"),
        ("filetype", "video/mp4"),
        ("owner", "alice"),
        ("caption", "crème brûlée"),
    ]);
    let disposition =
        "inline; filename=\"Vid_o finale.mp4\"; filename*=UTF-8''Vid%C3%A9o%20finale.mp4";

    let small = upload_with(&c, &server.endpoint, &meta, b"0123456789", 4).await;
    let big_data = bytes(12 * MIB + 3, 1);
    let big = upload_with(&c, &server.endpoint, &meta, &big_data, 5 * MIB).await;
    // A final upload from two partial ones; its own metadata counts.
    let mut parts = Vec::new();
    for piece in [&big_data[..6 * MIB], &big_data[6 * MIB..]] {
        let url = create_with(
            &c,
            &server.endpoint,
            &[
                ("Upload-Length", &piece.len().to_string()),
                ("Upload-Concat", "partial"),
                ("Upload-Metadata", &metadata(&[("filetype", "text/plain")])),
            ],
        )
        .await;
        upload_in_chunks(&c, &url, 0, piece, 3 * MIB).await;
        parts.push(path_of(&url));
    }
    let final_url = create_with(
        &c,
        &server.endpoint,
        &[
            ("Upload-Concat", &format!("final;{}", parts.join(" "))),
            ("Upload-Metadata", &meta),
        ],
    )
    .await;
    assert_eq!(download(&c, &final_url).await, big_data);

    for url in [&small, &big, &final_url] {
        let key = format!("uploads/{}", id_of(url));
        let res = object_headers(&endpoint, &bucket, &key).await;
        assert_eq!(
            res.get("content-type").as_deref(),
            Some("video/mp4"),
            "{key}"
        );
        assert_eq!(
            res.get("content-disposition").as_deref(),
            Some(disposition),
            "{key}"
        );
        assert_eq!(
            res.get("x-amz-meta-owner").as_deref(),
            Some("alice"),
            "{key}"
        );
        let caption = res.get("x-amz-meta-caption").expect("caption");
        // S3 decodes the RFC 2047 word and stores the text; a server that
        // keeps it as sent returns the word, which decodes to the same.
        assert!(
            caption == "crème brûlée" || caption == "=?UTF-8?B?Y3LDqG1lIGJyw7tsw6ll?=",
            "{caption:?}"
        );
        assert!(res.get("x-amz-meta-filename").is_none(), "{key}");
    }

    // IETF creation: the request's Content-Type and Content-Disposition
    // are the object's.
    let res = c
        .post(&server.endpoint)
        .header("Upload-Draft-Interop-Version", "9")
        .header("Upload-Complete", "?1")
        .header("Content-Type", "image/png")
        .header("Content-Disposition", "inline; filename=\"pic.png\"")
        .body(b"\x89PNG....".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    let ietf = location(&res);
    let res = object_headers(&endpoint, &bucket, &format!("uploads/{}", id_of(&ietf))).await;
    assert_eq!(res.get("content-type").as_deref(), Some("image/png"));
    assert_eq!(
        res.get("content-disposition").as_deref(),
        Some("inline; filename=\"pic.png\"")
    );
    assert_eq!(open_multipart_uploads(&endpoint, &bucket).await, 0);
    server.stop().await;
}

/// Metadata past S3's 2 KiB user-metadata limit: the keys that fit are
/// stored, the upload itself succeeds.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn metadata_past_the_limit_is_left_out_not_fatal() {
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(s3_config(dir.path(), &endpoint, &bucket));
    let c = client();
    let (a, b) = ("a".repeat(1500), "b".repeat(1000));
    let meta = metadata(&[("aaa", &a), ("bbb", &b), ("ccc", "fits")]);
    let data = bytes(6 * MIB, 2);
    let url = upload_with(&c, &server.endpoint, &meta, &data, 6 * MIB).await;
    assert_eq!(download(&c, &url).await, data);
    let res = object_headers(&endpoint, &bucket, &format!("uploads/{}", id_of(&url))).await;
    assert_eq!(res.get("x-amz-meta-aaa"), Some(a));
    assert!(res.get("x-amz-meta-bbb").is_none());
    assert_eq!(res.get("x-amz-meta-ccc").as_deref(), Some("fits"));
    server.stop().await;
}

/// A pre-create hook that places uploads whose metadata says `bucket` in
/// that bucket, at `videos/<filename>` when a filename is given, with the
/// headers the metadata names.
fn placing_hook() -> Receiver {
    Receiver::start(Arc::new(|body: &Value| {
        let meta = &body["Event"]["Upload"]["MetaData"];
        let mut storage = serde_json::Map::new();
        for (from, to) in [
            ("bucket", "Bucket"),
            ("content-type", "ContentType"),
            ("cache-control", "CacheControl"),
            ("disposition", "ContentDisposition"),
        ] {
            if let Some(v) = meta[from].as_str() {
                storage.insert(to.into(), v.into());
            }
        }
        if let Some(name) = meta["filename"].as_str() {
            storage.insert("Key".into(), format!("videos/{name}").into());
        }
        json!({"ChangeFileInfo": {"Storage": storage}})
    }))
}

/// An upload a hook put in another allowed bucket lives there through
/// every step: chunks, GET (also after a restart), the object's headers,
/// concatenation with parts in both buckets, DELETE and expiry; a bucket
/// not allowed is refused with nothing created.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn a_hook_places_uploads_in_an_allowed_bucket() {
    let endpoint = s3::endpoint();
    let (main, media) = (bucket(&endpoint).await, bucket(&endpoint).await);
    let hook = placing_hook();
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = with_hooks(s3_config(dir.path(), &endpoint, &main), &hook.url);
        c.storage_options.s3_allowed_buckets = vec![media.clone()];
        c.expire_after = Some(Duration::from_secs(3));
        c.sweep_interval = Duration::from_millis(300);
        c
    };
    let server = TestServer::start(config());
    let c = client();

    let data = bytes(7 * MIB + 11, 3);
    let meta = metadata(&[
        ("bucket", &media),
        ("filename", "clip.webm"),
        ("content-type", "video/webm"),
        ("cache-control", "max-age=3600"),
    ]);
    let url = upload_with(&c, &server.endpoint, &meta, &data, MIB).await;
    assert_eq!(download(&c, &url).await, data);
    // tusker's own GET sends the hook's headers too.
    let res = c.get(&url).send().await.unwrap();
    assert_eq!(header(&res, "content-type").as_deref(), Some("video/webm"));
    assert_eq!(
        header(&res, "cache-control").as_deref(),
        Some("max-age=3600")
    );
    let key = "uploads/videos/clip.webm";
    let res = object_headers(&endpoint, &media, key).await;
    assert_eq!(res.get("content-type").as_deref(), Some("video/webm"));
    assert_eq!(res.get("cache-control").as_deref(), Some("max-age=3600"));
    assert_eq!(
        res.get("content-disposition").as_deref(),
        Some("inline; filename=\"clip.webm\"")
    );
    assert!(!object_exists(&endpoint, &main, key).await);
    assert!(keys(&endpoint, &main, "uploads/").await.is_empty());
    // The same key in the default bucket is another destination.
    let meta_main = metadata(&[("filename", "clip.webm")]);
    let same_key = upload_with(&c, &server.endpoint, &meta_main, b"other bytes", 64).await;
    assert!(object_exists(&endpoint, &main, key).await);

    // The record names the bucket: a restarted server finds it.
    server.stop().await;
    let server = TestServer::start(config());
    let url = format!("{}{}", server.endpoint, id_of(&url));
    let same_key = format!("{}{}", server.endpoint, id_of(&same_key));
    assert_eq!(download(&c, &url).await, data);
    assert_eq!(download(&c, &same_key).await, b"other bytes");

    // A final upload in the default bucket from a part in each bucket.
    let mut parts = Vec::new();
    for (i, piece) in [&data[..5 * MIB], &data[5 * MIB..]].iter().enumerate() {
        let meta = if i == 0 {
            metadata(&[("bucket", &media)])
        } else {
            String::new()
        };
        let part = create_with(
            &c,
            &server.endpoint,
            &[
                ("Upload-Length", &piece.len().to_string()),
                ("Upload-Concat", "partial"),
                ("Upload-Metadata", &meta),
            ],
        )
        .await;
        upload_in_chunks(&c, &part, 0, piece, 2 * MIB).await;
        parts.push(part);
    }
    assert!(object_exists(&endpoint, &media, &format!("uploads/{}", id_of(&parts[0]))).await);
    assert!(object_exists(&endpoint, &main, &format!("uploads/{}", id_of(&parts[1]))).await);
    let paths: Vec<String> = parts.iter().map(|p| path_of(p)).collect();
    let final_url = create_with(
        &c,
        &server.endpoint,
        &[("Upload-Concat", &format!("final;{}", paths.join(" ")))],
    )
    .await;
    assert_eq!(download(&c, &final_url).await, data);
    assert!(object_exists(&endpoint, &main, &format!("uploads/{}", id_of(&final_url))).await);

    // DELETE removes the object from its bucket.
    let res = Req::new("DELETE", &url).tus().send(&c).await;
    assert_eq!(res.status, 204);
    assert!(!object_exists(&endpoint, &media, key).await);
    assert!(
        object_exists(&endpoint, &main, key).await,
        "the default bucket's object stays"
    );

    // A type the hook set that GET does not serve as itself: stored on the
    // object as given, served by tusker as octet-stream.
    let html = metadata(&[("content-type", "text/html"), ("disposition", "attachment")]);
    let page = upload_with(&c, &server.endpoint, &html, b"<script>", 8).await;
    let res = c.get(&page).send().await.unwrap();
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        header(&res, "content-disposition").as_deref(),
        Some("attachment")
    );
    let res = object_headers(&endpoint, &main, &format!("uploads/{}", id_of(&page))).await;
    assert_eq!(res.get("content-type").as_deref(), Some("text/html"));
    assert_eq!(
        res.get("content-disposition").as_deref(),
        Some("attachment")
    );

    // Expiry aborts the multipart upload in its bucket.
    let stale = create_with(
        &c,
        &server.endpoint,
        &[
            ("Upload-Length", &(20 * MIB).to_string()),
            ("Upload-Metadata", &metadata(&[("bucket", &media)])),
        ],
    )
    .await;
    upload_in_chunks(&c, &stale, 0, &data[..6 * MIB], 6 * MIB).await;
    assert_eq!(open_multipart_uploads(&endpoint, &media).await, 1);
    let gone = eventually(Duration::from_secs(15), || async {
        head(&c, &stale).await.status == 410 && open_multipart_uploads(&endpoint, &media).await == 0
    })
    .await;
    assert!(
        gone,
        "the expired upload's multipart upload is aborted in its bucket"
    );
    assert!(keys(&endpoint, &media, "uploads/.tusker-staging/")
        .await
        .is_empty());

    // A bucket not allowed: 500 with a stable code, nothing created.
    let before_main = keys(&endpoint, &main, "").await;
    let before_media = keys(&endpoint, &media, "").await;
    for (meta, code) in [
        (
            metadata(&[("bucket", "not-allowed")]),
            "ERR_HOOK_BUCKET_NOT_ALLOWED",
        ),
        (
            metadata(&[("content-type", "video mp4")]),
            "ERR_HOOK_INVALID_STORAGE",
        ),
        (
            metadata(&[("cache-control", "no-cache\r\nX-Evil: 1")]),
            "ERR_HOOK_INVALID_STORAGE",
        ),
    ] {
        let res = Req::new("POST", &server.endpoint)
            .tus()
            .h("Upload-Length", 10)
            .h("Upload-Metadata", &meta)
            .send(&c)
            .await;
        assert_eq!(res.status, 500, "{res:?}");
        assert!(res.text().starts_with(code), "{res:?}");
        assert!(res.header("location").is_none());
    }
    assert_eq!(open_multipart_uploads(&endpoint, &main).await, 0);
    assert_eq!(open_multipart_uploads(&endpoint, &media).await, 0);
    assert_eq!(keys(&endpoint, &main, "").await, before_main);
    assert_eq!(keys(&endpoint, &media, "").await, before_media);
    server.stop().await;
}

/// With `--download-redirect`, GET of a finished upload answers 307 to a
/// presigned URL of its object; following it gives the same bytes, Range
/// included. HEAD stays the tus status request; unfinished uploads and
/// requests without access get what they get without the flag.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn downloads_redirect_to_the_bucket() {
    let endpoint = s3::endpoint();
    let (main, media) = (bucket(&endpoint).await, bucket(&endpoint).await);
    let hook = placing_hook();
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_hooks(s3_config(dir.path(), &endpoint, &main), &hook.url);
    config.storage_options.s3_allowed_buckets = vec![media.clone()];
    config.download_redirect = Some(Duration::from_secs(600));
    let server = TestServer::start(config);
    let c = client();
    let manual = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let big = bytes(11 * MIB + 5, 4);
    let meta = metadata(&[("filename", "a.mp4"), ("filetype", "video/mp4")]);
    let uploads = [
        (
            upload_with(&c, &server.endpoint, "", b"small bytes", 5).await,
            b"small bytes".to_vec(),
            main.clone(),
        ),
        (
            upload_with(&c, &server.endpoint, &meta, &big, 4 * MIB).await,
            big.clone(),
            main.clone(),
        ),
        (
            upload_with(
                &c,
                &server.endpoint,
                &metadata(&[("bucket", &media)]),
                &big,
                6 * MIB,
            )
            .await,
            big.clone(),
            media.clone(),
        ),
        (
            upload_with(&c, &server.endpoint, "", b"", 1).await,
            Vec::new(),
            main.clone(),
        ),
    ];
    for (url, data, bucket) in &uploads {
        let res = manual.get(url).send().await.unwrap();
        assert_eq!(res.status(), 307, "{url}");
        assert_eq!(header(&res, "cache-control").as_deref(), Some("no-store"));
        let to = header(&res, "location").expect("Location");
        assert!(
            to.starts_with(&format!("{endpoint}/{bucket}/uploads/")),
            "{to}"
        );
        assert!(to.contains("X-Amz-Signature="), "{to}");
        assert!(to.contains("X-Amz-Expires=600"), "{to}");
        // Following the redirect: the same bytes, whole and in ranges.
        assert_eq!(download(&c, url).await, *data, "{url}");
        if data.len() > 10 {
            let end = data.len() - 1;
            for (range, want) in [
                (
                    format!("bytes=3-{}", end.min(5 * MIB + 3)),
                    &data[3..=end.min(5 * MIB + 3)],
                ),
                ("bytes=-7".to_owned(), &data[data.len() - 7..]),
            ] {
                let res = c.get(url).header("Range", &range).send().await.unwrap();
                assert_eq!(res.status(), 206, "{url} {range}");
                assert_eq!(res.bytes().await.unwrap().as_ref(), want, "{url} {range}");
            }
        }
        // HEAD is the tus status request, never a redirect.
        let res = head(&manual, url).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.offset(), Some(data.len() as u64));
        assert!(res.header("location").is_none());
    }
    // The hook put the named file under videos/.
    let res = object_headers(&endpoint, &main, "uploads/videos/a.mp4").await;
    assert_eq!(res.get("content-type").as_deref(), Some("video/mp4"));

    // Unfinished: refused as without the flag.
    let unfinished = create(&c, &server.endpoint, 100).await;
    let res = manual.get(&unfinished).send().await.unwrap();
    assert_eq!(res.status(), 409);
    assert!(header(&res, "location").is_none());
    // Unknown: 404, no redirect.
    let res = manual
        .get(format!(
            "{}{}",
            server.endpoint, "0123456789abcdef0123456789abcdef"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    server.stop().await;
}

/// With JWT authorization, the redirect comes only after the access
/// checks: no token, or another subject's, gets no URL.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3_ENDPOINT"]
async fn redirects_only_after_access_checks() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    const SECRET: &str = "tusker-test-secret-0123456789abcdef";
    let token = |sub: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": sub, "exp": exp}),
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let endpoint = s3::endpoint();
    let bucket = bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = s3_config(dir.path(), &endpoint, &bucket);
    config.auth = tusker::auth::AuthConfig::from_args(Some(SECRET.into()), None, None, None);
    config.download_redirect = Some(Duration::from_secs(60));
    let server = TestServer::start(config);
    let manual = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let alice = format!("Bearer {}", token("alice"));
    let res = manual
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header("Authorization", &alice)
        .header("Upload-Length", "5")
        .header(OCTET.0, OCTET.1)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let url = location(&res);
    let res = manual.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(header(&res, "location").is_none());
    let res = manual
        .get(&url)
        .header("Authorization", format!("Bearer {}", token("mallory")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(header(&res, "location").is_none());
    let res = manual
        .get(&url)
        .header("Authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 307);
    let to = header(&res, "location").expect("Location");
    // The presigned URL needs no token of ours.
    let res = manual.get(&to).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello");
    server.stop().await;
}

/// Two instances on one PostgreSQL meta store: an upload one of them put
/// in another bucket is continued, downloaded (redirected into that
/// bucket) and terminated by the other.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL and TUSKER_TEST_S3_ENDPOINT"]
async fn several_instances_find_an_upload_in_its_bucket() {
    let pg = common::pg_db::admin_url();
    let endpoint = s3::endpoint();
    let (main, media) = (bucket(&endpoint).await, bucket(&endpoint).await);
    let db = Db::create(&pg).await;
    let hook = placing_hook();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let servers: Vec<TestServer> = dirs
        .iter()
        .map(|d| {
            let mut c = with_hooks(s3_config(d.path(), &endpoint, &main), &hook.url);
            c.meta = Some(db.url.clone());
            c.storage_options.s3_allowed_buckets = vec![media.clone()];
            c.download_redirect = Some(Duration::from_secs(60));
            TestServer::start(c)
        })
        .collect();
    let c = client();
    let data = bytes(9 * MIB + 1, 5);
    let on_a = create_with(
        &c,
        &servers[0].endpoint,
        &[
            ("Upload-Length", &data.len().to_string()),
            ("Upload-Metadata", &metadata(&[("bucket", &media)])),
        ],
    )
    .await;
    upload_in_chunks(&c, &on_a, 0, &data[..3 * MIB], 3 * MIB).await;
    let on_b = format!("{}{}", servers[1].endpoint, id_of(&on_a));
    upload_in_chunks(&c, &on_b, 3 * MIB, &data[3 * MIB..], 2 * MIB).await;
    assert_eq!(download(&c, &on_b).await, data);
    assert_eq!(download(&c, &on_a).await, data);
    let key = format!("uploads/{}", id_of(&on_a));
    assert!(object_exists(&endpoint, &media, &key).await);
    assert!(!object_exists(&endpoint, &main, &key).await);
    let res = Req::new("DELETE", &on_b).tus().send(&c).await;
    assert_eq!(res.status, 204);
    assert!(!object_exists(&endpoint, &media, &key).await);
    for s in servers {
        s.stop().await;
    }
    db.drop().await;
}

/// An s3s-fs server (`TUSKER_TEST_S3S_FS` names its binary), which checks
/// SigV4 signatures as S3 does, on a free loopback port with one bucket;
/// killed when dropped.
struct S3sFs {
    endpoint: String,
    child: std::process::Child,
    _root: tempfile::TempDir,
}

impl S3sFs {
    async fn start(bucket: &str) -> S3sFs {
        let binary = std::env::var("TUSKER_TEST_S3S_FS")
            .expect("TUSKER_TEST_S3S_FS must name an s3s-fs binary for this test");
        let root = tempfile::tempdir().unwrap();
        // s3s-fs: a bucket is a directory under its root.
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "test", "--secret-key", "test"])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(10), || async {
            client().get(&endpoint).send().await.is_ok()
        })
        .await;
        assert!(up, "s3s-fs listens on {endpoint}");
        S3sFs {
            endpoint,
            child,
            _root: root,
        }
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Against a server that verifies signatures: the presigned URL of a
/// redirect gets the same bytes, Range included, and a URL whose
/// signature was altered, or that expired, gets nothing.
#[tokio::test]
#[ignore = "needs TUSKER_TEST_S3S_FS"]
async fn redirects_are_signed_for_a_verifying_server() {
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        std::env::set_var(k, v);
    }
    let s3 = S3sFs::start("signed").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = s3_config(dir.path(), &s3.endpoint, "signed");
    config.download_redirect = Some(Duration::from_secs(2));
    let server = TestServer::start(config);
    let c = client();
    let manual = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let data = bytes(6 * MIB + 9, 6);
    let meta = metadata(&[("filename", "b.bin"), ("owner", "carol")]);
    for body in [&data[..], b"tiny"] {
        let url = upload_with(&c, &server.endpoint, &meta, body, 4 * MIB).await;
        assert_eq!(download(&c, &url).await, body);
        let res = c
            .get(&url)
            .header("Range", "bytes=1-2")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.bytes().await.unwrap().as_ref(), &body[1..3]);
        let res = manual.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 307);
        let to = header(&res, "location").expect("Location");
        let at = to.find("X-Amz-Signature=").expect("signed") + "X-Amz-Signature=".len();
        let flipped = if &to[at..=at] == "0" { "1" } else { "0" };
        let forged = format!("{}{flipped}{}", &to[..at], &to[at + 1..]);
        let res = manual.get(&forged).send().await.unwrap();
        assert_eq!(res.status(), 403, "an altered signature is refused");
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let res = manual.get(&to).send().await.unwrap();
        assert_eq!(res.status(), 403, "an expired URL is refused");
    }
    server.stop().await;
}
