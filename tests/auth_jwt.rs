//! Built-in JWT authorization over real HTTP: the token matrix across every
//! verb of both protocols, owners, the `max_size` claim, query tokens and
//! the exempt endpoints.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "tusker-test-secret-0123456789abcdef";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn token(sub: &str) -> String {
    sign(json!({"sub": sub, "exp": now() + 600}))
}

fn b64url(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Every kind of token the server must refuse with 401.
fn bad_tokens() -> Vec<(&'static str, Option<String>)> {
    let t = now();
    let good = token("alice");
    let (head, rest) = good.split_once('.').unwrap();
    let sig = rest.rsplit('.').next().unwrap();
    vec![
        ("missing", None),
        (
            "expired",
            Some(sign(json!({"sub": "alice", "exp": t - 3600}))),
        ),
        (
            "not yet valid",
            Some(sign(
                json!({"sub": "alice", "exp": t + 7200, "nbf": t + 3600}),
            )),
        ),
        (
            "tampered",
            Some(format!(
                "{head}.{}.{sig}",
                b64url(&json!({"sub": "alice", "exp": t + 99999}))
            )),
        ),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                b64url(&json!({"alg": "none", "typ": "JWT"})),
                b64url(&json!({"sub": "alice", "exp": t + 600}))
            )),
        ),
        (
            "wrong key",
            Some(
                encode(
                    &Header::new(Algorithm::HS256),
                    &json!({"sub": "alice", "exp": t + 600}),
                    &EncodingKey::from_secret(b"some-other-secret-0123456789abcdef").unwrap(),
                )
                .unwrap(),
            ),
        ),
        ("no sub", Some(sign(json!({"exp": t + 600})))),
        ("no exp", Some(sign(json!({"sub": "alice"})))),
        ("garbage", Some("garbage".into())),
    ]
}

fn server(dir: &std::path::Path) -> TestServer {
    let mut c = config(dir);
    c.auth = tusker::auth::AuthConfig::from_args(Some(SECRET.into()), None, None, None);
    TestServer::start(c)
}

fn with(req: Req, token: Option<&str>) -> Req {
    match token {
        Some(t) => req.h("Authorization", format!("Bearer {t}")),
        None => req,
    }
}

/// Every request on an existing upload, in both protocols.
fn requests(url: &str) -> Vec<(&'static str, Req)> {
    let ietf = |m| Req::new(m, url).h("Upload-Draft-Interop-Version", "6");
    vec![
        ("tus HEAD", Req::new("HEAD", url).tus()),
        (
            "tus PATCH",
            Req::new("PATCH", url)
                .tus()
                .octet()
                .h("Upload-Offset", "0")
                .body(b"abc".to_vec()),
        ),
        (
            "tus PATCH by method override",
            Req::new("POST", url)
                .tus()
                .octet()
                .h("X-HTTP-Method-Override", "PATCH")
                .h("Upload-Offset", "0")
                .body(b"abc".to_vec()),
        ),
        ("tus DELETE", Req::new("DELETE", url).tus()),
        (
            "tus DELETE by method override",
            Req::new("POST", url)
                .tus()
                .h("X-HTTP-Method-Override", "DELETE"),
        ),
        ("GET", Req::new("GET", url)),
        ("IETF HEAD", ietf("HEAD")),
        (
            "IETF PATCH",
            ietf("PATCH")
                .h("Content-Type", "application/partial-upload")
                .h("Upload-Offset", "0")
                .h("Upload-Complete", "?0")
                .body(b"abc".to_vec()),
        ),
        ("IETF DELETE", ietf("DELETE")),
    ]
}

fn check_refusal(name: &str, resp: &Resp, status: u16) {
    assert_eq!(resp.status, status, "{name}: {resp:?}");
    for h in [
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "location",
    ] {
        assert!(resp.header(h).is_none(), "{name}: {h} revealed");
    }
    assert!(resp.body.is_empty(), "{name}: body {:?}", resp.text());
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{name}: {challenge:?}");
}

#[tokio::test]
async fn the_token_matrix_across_every_verb_and_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let c = client();
    let alice = token("alice");
    let created = with(Req::new("POST", &server.endpoint).tus(), Some(&alice))
        .h("Upload-Length", "6")
        .h("Upload-Metadata", "filename YS50eHQ=")
        .send(&c)
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let url = created.header("location").unwrap();

    for (token_name, bad) in bad_tokens() {
        for (verb, req) in requests(&url) {
            let resp = with(req, bad.as_deref()).send(&c).await;
            check_refusal(&format!("{verb} with {token_name} token"), &resp, 401);
        }
        for (verb, req) in [
            (
                "tus POST",
                Req::new("POST", &server.endpoint)
                    .tus()
                    .h("Upload-Length", "1"),
            ),
            (
                "IETF POST",
                Req::new("POST", &server.endpoint)
                    .h("Upload-Draft-Interop-Version", "6")
                    .h("Upload-Complete", "?1")
                    .body(b"x".to_vec()),
            ),
        ] {
            let resp = with(req, bad.as_deref()).send(&c).await;
            check_refusal(&format!("{verb} with {token_name} token"), &resp, 401);
        }
    }
    // A valid token of another subject: 403, nothing revealed.
    let bob = token("bob");
    for (verb, req) in requests(&url) {
        let resp = with(req, Some(&bob)).send(&c).await;
        check_refusal(&format!("{verb} as bob"), &resp, 403);
    }
    // Nothing changed: the owner sees the untouched upload.
    let resp = with(Req::new("HEAD", &url).tus(), Some(&alice))
        .send(&c)
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.offset(), Some(0));
    assert_eq!(resp.header("upload-metadata").unwrap(), "filename YS50eHQ=");

    // The owner writes, reads (header or query token) and deletes.
    let resp = with(
        Req::new("PATCH", &url)
            .tus()
            .octet()
            .h("Upload-Offset", "0")
            .body(b"abcdef".to_vec()),
        Some(&alice),
    )
    .send(&c)
    .await;
    assert_eq!(resp.status, 204, "{resp:?}");
    let resp = with(Req::new("GET", &url), Some(&alice)).send(&c).await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"abcdef"[..]));
    let resp = Req::new("GET", format!("{url}?access_token={alice}"))
        .send(&c)
        .await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"abcdef"[..]));
    // The query parameter is for GET and HEAD only.
    let resp = Req::new("DELETE", format!("{url}?access_token={alice}"))
        .tus()
        .send(&c)
        .await;
    check_refusal("DELETE with a query token", &resp, 401);
    let resp = with(Req::new("DELETE", &url).tus(), Some(&alice))
        .send(&c)
        .await;
    assert_eq!(resp.status, 204);
    server.stop().await;
}

#[tokio::test]
async fn exempt_endpoints_and_cors_need_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let c = client();
    let base = format!("http://{}", server.addr);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = Req::new("GET", format!("{base}{path}")).send(&c).await;
        assert_eq!(resp.status, 200, "{path}");
    }
    let resp = Req::new("OPTIONS", &server.endpoint).send(&c).await;
    assert_eq!(resp.status, 200);
    let resp = Req::new("OPTIONS", &server.endpoint)
        .h("Origin", "https://app.example")
        .h("Access-Control-Request-Method", "PATCH")
        .h(
            "Access-Control-Request-Headers",
            "authorization,upload-offset",
        )
        .send(&c)
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let allowed = resp
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    // A refusal to a browser carries CORS headers and exposes the challenge.
    let resp = Req::new("HEAD", format!("{}x", server.endpoint))
        .tus()
        .h("Origin", "https://app.example")
        .send(&c)
        .await;
    assert_eq!(resp.status, 401);
    let exposed = resp
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate"), "{exposed}");
    server.stop().await;
}

#[tokio::test]
async fn max_size_claim_and_final_owners() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let c = client();
    let small = sign(json!({"sub": "alice", "exp": now() + 600, "max_size": 10}));
    let post = |t: &str| with(Req::new("POST", &server.endpoint).tus(), Some(t));
    let resp = post(&small).h("Upload-Length", "11").send(&c).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    // A deferred upload stops at the claim.
    let resp = post(&small).h("Upload-Defer-Length", "1").send(&c).await;
    assert_eq!(resp.status, 201);
    let url = resp.header("location").unwrap();
    let resp = with(
        Req::new("PATCH", &url)
            .tus()
            .octet()
            .h("Upload-Offset", "0")
            .body(vec![1u8; 11]),
        Some(&small),
    )
    .send(&c)
    .await;
    assert_eq!(resp.status, 413, "{resp:?}");

    // A final's parts must all be the final's owner's.
    let (alice, bob) = (token("alice"), token("bob"));
    let partial = |t: &str| {
        post(t)
            .h("Upload-Length", "3")
            .h("Upload-Concat", "partial")
    };
    let pa = partial(&alice).send(&c).await.header("location").unwrap();
    let pb = partial(&bob).send(&c).await.header("location").unwrap();
    let resp = post(&bob)
        .h("Upload-Concat", format!("final;{pa} {pb}"))
        .send(&c)
        .await;
    check_refusal("bob's final over alice's partial", &resp, 403);
    let resp = post(&bob)
        .h("Upload-Concat", format!("final;{pb}"))
        .send(&c)
        .await;
    assert_eq!(resp.status, 201, "{resp:?}");
    server.stop().await;
}

/// Tokens never reach the log: not from the Authorization header, not from
/// `?access_token=`, not when refused.
#[tokio::test]
async fn tokens_are_never_logged() {
    logs::capture_with("tusker=debug");
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let c = client();
    let token = sign(json!({"sub": "logged", "exp": now() + 900, "jti": "unique-log-test"}));
    let url = with(Req::new("POST", &server.endpoint).tus(), Some(&token))
        .h("Upload-Length", "0")
        .send(&c)
        .await
        .header("location")
        .unwrap();
    let resp = Req::new("GET", format!("{url}?access_token={token}"))
        .send(&c)
        .await;
    assert_eq!(resp.status, 200);
    let expired = sign(json!({"sub": "logged", "exp": now() - 900}));
    let resp = Req::new("GET", format!("{url}?x=1&access_token={expired}"))
        .send(&c)
        .await;
    assert_eq!(resp.status, 401);
    server.stop().await;
    assert!(
        logs::count(&["request done"]) > 0,
        "the access log was captured"
    );
    let sig = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    for t in [&token, &expired] {
        assert_eq!(logs::count(&[&sig(t)]), 0, "a token signature was logged");
    }
}
