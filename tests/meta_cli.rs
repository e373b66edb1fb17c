//! `tusker migrate` and `tusker migrate-meta` as an operator runs them: a
//! single node's sled state moves to PostgreSQL and the node, restarted on
//! `--meta postgres://…`, resumes its uploads.
//!
//! Needs `TUSKER_TEST_POSTGRES_URL`; without it the test is ignored (CI
//! runs it with `--include-ignored`).

mod common;

use common::pg_db::Db;
use common::*;
use sqlx::Connection;
use std::process::Command;

fn tusker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tusker"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run tusker")
}

#[tokio::test]
#[ignore = "needs TUSKER_TEST_POSTGRES_URL"]
async fn single_node_moves_from_sled_to_postgres() {
    let admin = common::pg_db::admin_url();
    let database = Db::create(&admin).await;
    let db = database.url.clone();

    // `tusker migrate` creates the schema.
    let out = tusker(&["migrate", "--meta", &db]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conn = sqlx::PgConnection::connect(&db).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(applied >= 1);
    let _ = conn.close().await;

    // A single node on sled with one upload half done, one finished and
    // one terminated.
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let data = bytes(300_000, 3);
    let server = TestServer::on(dir.path());
    let half = create(&c, &server.endpoint, data.len() as u64).await;
    let res = patch(&c, &half, 0, data[..100_000].to_vec()).await;
    assert_eq!(res.status(), 204);
    let done = upload(&c, &server.endpoint, &data).await;
    let gone = create(&c, &server.endpoint, 10).await;
    let res = c.delete(&gone).header(TUS.0, TUS.1).send().await.unwrap();
    assert_eq!(res.status(), 204);
    server.stop().await;

    let from = format!("sled:{}", dir.path().join("meta").display());
    let out = tusker(&["migrate-meta", "--from", &from, "--to", &db]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("uploads=2"), "{log}");
    assert!(log.contains("tombstones=1"), "{log}");

    // The same node on PostgreSQL (same data dir for the bytes).
    let mut config = config(dir.path());
    config.meta = Some(db.clone());
    let server = TestServer::start(config);
    let at = |url: &str| format!("{}{}", server.endpoint, id_of(url));
    assert_eq!(offset(&c, &at(&half)).await, 100_000);
    let res = patch(&c, &at(&half), 100_000, data[100_000..].to_vec()).await;
    assert_eq!(res.status(), 204);
    assert_eq!(download(&c, &at(&half)).await, data);
    assert_eq!(download(&c, &at(&done)).await, data);
    let res = c.head(at(&gone)).header(TUS.0, TUS.1).send().await.unwrap();
    assert_eq!(res.status(), 410);
    server.stop().await;

    // A source that is not sled, or missing, is refused.
    let out = tusker(&[
        "migrate-meta",
        "--from",
        "sled:/nonexistent/meta",
        "--to",
        &db,
    ]);
    assert!(!out.status.success());
    database.drop().await;
}
