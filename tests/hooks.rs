//! Hooks against a real HTTP hook receiver on loopback.

mod common;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tusker::hooks::{HookConfig, HookType};

type Behaviour = Arc<dyn Fn(&Value) -> (u16, Value) + Send + Sync>;

/// One received hook call: its JSON body and the Authorization header.
#[derive(Clone, Debug)]
struct Call {
    body: Value,
    authorization: Option<String>,
}

impl Call {
    fn kind(&self) -> &str {
        self.body["Type"].as_str().unwrap_or_default()
    }
}

struct Receiver {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    fn start(behaviour: Behaviour) -> Receiver {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (tx, rx) = std::sync::mpsc::channel();
        let (c, b) = (calls.clone(), behaviour.clone());
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let (c, b) = (c.clone(), b.clone());
                    App::new().default_service(web::to(
                        move |req: HttpRequest, body: web::Json<Value>| {
                            let (c, b) = (c.clone(), b.clone());
                            async move {
                                let call = Call {
                                    body: body.into_inner(),
                                    authorization: req
                                        .headers()
                                        .get("authorization")
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_owned),
                                };
                                let behaviour = b.lock().unwrap().clone();
                                let (status, answer) = behaviour(&call.body);
                                c.lock().unwrap().push(call);
                                HttpResponse::build(
                                    actix_web::http::StatusCode::from_u16(status).unwrap(),
                                )
                                .json(answer)
                            }
                        },
                    ))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                server.await.unwrap();
            })
        });
        let (addr, handle) = rx.recv().unwrap();
        Receiver {
            url: format!("http://{addr}/hooks"),
            calls,
            behaviour,
            handle,
        }
    }

    fn accept_all() -> Receiver {
        Self::start(Arc::new(|_| (200, json!({}))))
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn kinds(&self, id: &str) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c.body["Event"]["Upload"]["ID"] == id)
            .map(|c| c.kind().to_owned())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn hooked(dir: &std::path::Path, url: &str, events: &[HookType]) -> tusker::config::Config {
    let mut c = config(dir);
    c.hooks = Some(HookConfig {
        url: url.to_owned(),
        enabled: events.iter().copied().collect(),
        forward_headers: vec!["Authorization".into()],
        timeout: Duration::from_secs(2),
        post_attempts: 3,
        progress_interval: Duration::from_millis(1),
    });
    c
}

fn id_of(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn events_arrive_in_order_with_tusd_payloads() {
    let receiver = Receiver::accept_all();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(hooked(dir.path(), &receiver.url, &HookType::DEFAULT));
    let c = client();
    let res = c
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header("Upload-Length", "300000")
        .header("Upload-Metadata", "filename YS5tcDQ=")
        .header("Authorization", "Bearer alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let url = location(&res);
    let id = id_of(&url);
    let data = bytes(300_000, 1);
    for (i, piece) in data.chunks(100_000).enumerate() {
        let res = c
            .patch(&url)
            .header(TUS.0, TUS.1)
            .header(OCTET.0, OCTET.1)
            .header("Upload-Offset", (i * 100_000).to_string())
            .header("Authorization", "Bearer alice")
            .body(piece.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            receiver.kinds(&id).contains(&"post-finish".to_owned())
        })
        .await,
        "no post-finish: {:?}",
        receiver.kinds(&id)
    );
    // Give stragglers a moment: none may follow post-finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kinds = receiver.kinds(&id);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("pre-create"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("post-finish"),
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| *k == "post-finish").count(), 1);
    assert!(kinds.contains(&"post-create".to_owned()));
    assert!(kinds.contains(&"post-receive".to_owned()));
    let pre_finish = kinds
        .iter()
        .position(|k| k == "pre-finish")
        .expect("pre-finish");
    assert!(
        kinds[pre_finish..].iter().all(|k| k != "post-receive"),
        "{kinds:?}"
    );

    let calls = receiver.calls();
    let finish = calls.iter().find(|c| c.kind() == "post-finish").unwrap();
    let upload = &finish.body["Event"]["Upload"];
    assert_eq!(upload["Size"], 300000);
    assert_eq!(upload["Offset"], 300000);
    assert_eq!(upload["SizeIsDeferred"], false);
    assert_eq!(upload["MetaData"]["filename"], "a.mp4");
    assert_eq!(upload["IsPartial"], false);
    assert_eq!(upload["Storage"]["Type"], "filestore");
    let create = calls.iter().find(|c| c.kind() == "pre-create").unwrap();
    assert_eq!(create.body["Event"]["HTTPRequest"]["Method"], "POST");
    assert_eq!(
        create.body["Event"]["HTTPRequest"]["Header"]["authorization"][0],
        "Bearer alice"
    );
    assert_eq!(
        create.authorization.as_deref(),
        Some("Bearer alice"),
        "forwarded header"
    );
    server.stop().await;
}

#[tokio::test]
async fn pre_create_rejects_and_changes_uploads() {
    let receiver = Receiver::start(Arc::new(|body: &Value| {
        let meta = &body["Event"]["Upload"]["MetaData"];
        match meta["filename"].as_str() {
            Some("forbidden.exe") => (
                200,
                json!({"RejectUpload": true, "HTTPResponse": {"StatusCode": 422, "Body": "no executables", "Header": {"X-Reason": "type"}}}),
            ),
            Some("rename") => (
                200,
                json!({"ChangeFileInfo": {"ID": "chosen-by-app", "MetaData": {"filename": "renamed.mp4", "owner": "alice"}}}),
            ),
            Some(dest) if dest.starts_with("dest:") => (
                200,
                json!({"ChangeFileInfo": {"Storage": {"Path": &dest[5..]}}}),
            ),
            _ => (200, json!({})),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(hooked(dir.path(), &receiver.url, &[HookType::PreCreate]));
    let c = client();
    let post = |meta: &str| {
        c.post(&server.endpoint)
            .header(TUS.0, TUS.1)
            .header("Upload-Length", "5")
            .header(
                "Upload-Metadata",
                format!("filename {}", base64_encode(meta)),
            )
            .send()
    };

    let res = post("forbidden.exe").await.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(header(&res, "x-reason").as_deref(), Some("type"));
    assert_eq!(res.text().await.unwrap(), "no executables");

    let res = post("rename").await.unwrap();
    assert_eq!(res.status(), 201);
    let url = location(&res);
    assert!(url.ends_with("/files/chosen-by-app"), "{url}");
    let head = c.head(&url).header(TUS.0, TUS.1).send().await.unwrap();
    let meta = header(&head, "upload-metadata").unwrap();
    assert!(
        meta.contains(&format!("filename {}", base64_encode("renamed.mp4"))),
        "{meta}"
    );
    assert!(
        meta.contains(&format!("owner {}", base64_encode("alice"))),
        "{meta}"
    );
    // The same id again is a conflict, not an overwrite.
    let res = post("rename").await.unwrap();
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().starts_with("ERR_UPLOAD_ID_TAKEN"));

    // A destination under the storage root.
    let res = post("dest:videos/2026/clip.mp4").await.unwrap();
    assert_eq!(res.status(), 201);
    let url = location(&res);
    assert_eq!(patch(&c, &url, 0, b"hello".to_vec()).await.status(), 204);
    let landed = dir.path().join("uploads/videos/2026/clip.mp4");
    assert_eq!(std::fs::read(&landed).unwrap(), b"hello");
    assert_eq!(download(&c, &url).await, b"hello");
    // Nobody else may land there, and nobody may escape the root.
    let res = post("dest:videos/2026/clip.mp4").await.unwrap();
    assert_eq!(res.status(), 409);
    assert!(res
        .text()
        .await
        .unwrap()
        .starts_with("ERR_DESTINATION_TAKEN"));
    let res = post("dest:../escape.mp4").await.unwrap();
    assert_eq!(res.status(), 500);
    assert!(res
        .text()
        .await
        .unwrap()
        .starts_with("ERR_HOOK_INVALID_DESTINATION"));
    server.stop().await;
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn unreachable_pre_hook_is_a_clear_500() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: bind, note the port, drop.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::start(hooked(
        dir.path(),
        &format!("http://127.0.0.1:{port}/"),
        &[HookType::PreCreate],
    ));
    let res = client()
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header("Upload-Length", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.text().await.unwrap().starts_with("ERR_HOOK_FAILED"));
    server.stop().await;
}

#[tokio::test]
async fn pre_terminate_and_pre_access_guard_uploads() {
    let receiver = Receiver::start(Arc::new(|body: &Value| {
        let kind = body["Type"].as_str().unwrap_or_default();
        let user = body["Event"]["HTTPRequest"]["Header"]["authorization"][0]
            .as_str()
            .unwrap_or("");
        match kind {
            "pre-terminate" if user != "Bearer admin" => (200, json!({"RejectTermination": true})),
            "pre-access" if user == "Bearer mallory" => (
                200,
                json!({"RejectUpload": true, "HTTPResponse": {"StatusCode": 403, "Body": "not yours"}}),
            ),
            _ => (200, json!({})),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(hooked(
        dir.path(),
        &receiver.url,
        &[
            HookType::PreTerminate,
            HookType::PreAccess,
            HookType::PostTerminate,
        ],
    ));
    let c = client();
    let url = create(&c, &server.endpoint, 10).await;
    let as_user = |method: reqwest::Method, user: &str| {
        c.request(method, &url)
            .header(TUS.0, TUS.1)
            .header("Authorization", format!("Bearer {user}"))
            .send()
    };
    let res = as_user(reqwest::Method::HEAD, "mallory").await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        as_user(reqwest::Method::HEAD, "alice")
            .await
            .unwrap()
            .status(),
        200
    );
    let res = as_user(reqwest::Method::DELETE, "alice").await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(offset(&c, &url).await, 0, "still there");
    assert_eq!(
        as_user(reqwest::Method::DELETE, "admin")
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        as_user(reqwest::Method::HEAD, "admin")
            .await
            .unwrap()
            .status(),
        410
    );
    let id = id_of(&url);
    assert!(
        eventually(Duration::from_secs(5), || async {
            receiver.kinds(&id).contains(&"post-terminate".to_owned())
        })
        .await
    );
    server.stop().await;
}

#[tokio::test]
async fn post_receive_can_stop_an_upload() {
    let receiver = Receiver::start(Arc::new(|body: &Value| {
        let too_big = body["Type"] == "post-receive"
            && body["Event"]["Upload"]["Offset"].as_u64().unwrap_or(0) > 1000;
        (200, json!({ "StopUpload": too_big }))
    }));
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(hooked(dir.path(), &receiver.url, &[HookType::PostReceive]));
    let c = client();
    let url = create(&c, &server.endpoint, 1_000_000).await;
    let mut offset_now = 0u64;
    let mut stopped = false;
    for _ in 0..50 {
        let res = patch(&c, &url, offset_now, bytes(2000, offset_now)).await;
        if res.status() == 400 || res.status() == 410 {
            stopped = true;
            break;
        }
        assert_eq!(res.status(), 204);
        offset_now += 2000;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped, "the upload was never stopped");
    let res = c.head(&url).header(TUS.0, TUS.1).send().await.unwrap();
    assert_eq!(res.status(), 410);
    server.stop().await;
}

#[tokio::test]
async fn post_finish_is_delivered_once_across_a_restart() {
    let receiver = Receiver::start(Arc::new(|body: &Value| {
        if body["Type"] == "post-finish" {
            (503, json!({}))
        } else {
            (200, json!({}))
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = hooked(dir.path(), &receiver.url, &[HookType::PostFinish]);
    if let Some(h) = cfg.hooks.as_mut() {
        h.post_attempts = 1;
    }
    let server = TestServer::start(cfg.clone());
    let c = client();
    let url = create(&c, &server.endpoint, 3).await;
    let id = id_of(&url);
    assert_eq!(patch(&c, &url, 0, b"abc".to_vec()).await.status(), 204);
    assert!(
        eventually(Duration::from_secs(5), || async {
            receiver.kinds(&id).len() == 1
        })
        .await
    );
    server.stop().await;

    // The receiver recovers; the restarted server owes the hook and pays.
    receiver.set(Arc::new(|_| (200, json!({}))));
    let server = TestServer::start(cfg.clone());
    assert!(
        eventually(Duration::from_secs(10), || async {
            receiver.kinds(&id).len() == 2
        })
        .await
    );
    server.stop().await;

    // Paid debts are not paid again.
    let server = TestServer::start(cfg);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.kinds(&id).len(), 2, "{:?}", receiver.kinds(&id));
    server.stop().await;
}

/// pre-access runs on every part of a final upload: a client refused on a
/// partial cannot read it through a final of its own.
#[tokio::test]
async fn pre_access_guards_every_part_of_a_final() {
    let receiver = Receiver::start(Arc::new(|body: &Value| {
        let user = body["Event"]["HTTPRequest"]["Header"]["authorization"][0]
            .as_str()
            .unwrap_or("");
        let owner = body["Event"]["Upload"]["MetaData"]["owner"]
            .as_str()
            .unwrap_or("");
        match body["Type"].as_str().unwrap_or_default() {
            "pre-access" if format!("Bearer {owner}") != user => (
                200,
                json!({"RejectUpload": true, "HTTPResponse": {"StatusCode": 403}}),
            ),
            _ => (200, json!({})),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(hooked(dir.path(), &receiver.url, &[HookType::PreAccess]));
    let c = client();
    // Alice's finished partial (owner "alice" in its metadata).
    let res = c
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header("Upload-Length", "5")
        .header("Upload-Concat", "partial")
        .header(
            "Upload-Metadata",
            format!("owner {}", base64_encode("alice")),
        )
        .send()
        .await
        .unwrap();
    let alices = res.headers()["location"].to_str().unwrap().to_owned();
    let res = c
        .patch(&alices)
        .header(TUS.0, TUS.1)
        .header(OCTET.0, OCTET.1)
        .header("Upload-Offset", "0")
        .header("Authorization", "Bearer alice")
        .body("alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = c
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header("Upload-Concat", format!("final;{alices}"))
        .header("Authorization", "Bearer bob")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "bob's final over alice's partial");
    assert!(res.headers().get("location").is_none());
    let res = c
        .post(&server.endpoint)
        .header(TUS.0, TUS.1)
        .header("Upload-Concat", format!("final;{alices}"))
        .header("Authorization", "Bearer alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "alice's own final");
    server.stop().await;
}

/// IETF PATCH on a finished upload checks access before it answers with
/// the offset of a completed upload; a failing receiver's answer shows
/// neither the offset nor the receiver's URL.
#[tokio::test]
async fn ietf_patch_on_a_finished_upload_checks_access_first() {
    let receiver = Receiver::start(Arc::new(|body: &Value| {
        match body["Type"].as_str().unwrap_or_default() {
            "pre-access" => (200, json!({"RejectUpload": true})),
            _ => (200, json!({})),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(hooked(dir.path(), &receiver.url, &[HookType::PreAccess]));
    let c = client();
    let url = create(&c, &server.endpoint, 0).await;
    for v in ["3", "6", "8"] {
        let res = c
            .patch(&url)
            .header("Upload-Draft-Interop-Version", v)
            .header("Content-Type", "application/partial-upload")
            .header("Upload-Offset", "0")
            .header("Upload-Complete", "?1")
            .header("Upload-Incomplete", "?0")
            .body("")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "interop {v}");
        assert!(res.headers().get("upload-offset").is_none(), "interop {v}");
    }
    server.stop().await;

    // The receiver is down: 500 ERR_HOOK_FAILED, no offset, no URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook_url = format!("http://127.0.0.1:{port}/secret-path?token=s3cr3t");
    let server = TestServer::start(hooked(dir.path(), &hook_url, &[HookType::PreAccess]));
    let url = format!("{}{}", server.endpoint, id_of(&url));
    let res = c
        .patch(&url)
        .header("Upload-Draft-Interop-Version", "6")
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", "0")
        .header("Upload-Complete", "?1")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.headers().get("upload-offset").is_none());
    let text = res.text().await.unwrap();
    assert!(text.starts_with("ERR_HOOK_FAILED"), "{text}");
    for secret in ["127.0.0.1", "secret-path", "s3cr3t", &port.to_string()] {
        assert!(!text.contains(secret), "{secret} in {text:?}");
    }
    server.stop().await;
}
