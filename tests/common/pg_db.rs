//! A throw-away PostgreSQL database on the server of
//! `TUSKER_TEST_POSTGRES_URL`, for tests that need a meta store of their own.
//! The integration tests and the library's unit tests (`meta/contract.rs`)
//! share this file; each provides `with_database` in the parent module.

use super::with_database;
use sqlx::Connection;

/// The server `TUSKER_TEST_POSTGRES_URL` names. Panics when it is not set:
/// a test that needs it is `#[ignore = "needs TUSKER_TEST_POSTGRES_URL"]`.
pub fn admin_url() -> String {
    std::env::var("TUSKER_TEST_POSTGRES_URL")
        .expect("TUSKER_TEST_POSTGRES_URL must name a PostgreSQL server")
}

/// A database made for one test; `drop` removes it (also while instances
/// still hold connections).
pub struct Db {
    admin: String,
    name: String,
    /// The database's URL, for `--meta`.
    pub url: String,
}

impl Db {
    /// Creates a database with a fresh name next to `admin`'s.
    pub async fn create(admin: &str) -> Db {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        Db {
            admin: admin.to_owned(),
            url: with_database(admin, &name),
            name,
        }
    }

    /// Removes the database, closing whatever connections it still has.
    pub async fn drop(self) {
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
    }
}
