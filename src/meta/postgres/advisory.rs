//! Background jobs that run on one instance at a time (the expiry sweep):
//! a PostgreSQL advisory lock per job, keyed by the job's name.

use super::{JobGuard, MetaError, PgMetaStore};
use sqlx::{Connection, PgConnection};

/// Holds an advisory lock on a dedicated connection; closing the
/// connection ends the session and so releases the lock.
struct AdvisoryLock {
    conn: Option<PgConnection>,
    /// The store's runtime, where the connection lives.
    rt: tokio::runtime::Handle,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.rt.spawn(async move {
                if let Err(e) = conn.close().await {
                    tracing::debug!(error = %e, "closing a job-lock connection");
                }
            });
        }
    }
}

/// Advisory lock key of a background job.
fn job_key(job: &str) -> i64 {
    let mut h = crc32fast::Hasher::new();
    h.update(b"tusker:");
    h.update(job.as_bytes());
    // A fixed high half keeps tusker's keys apart from small integers
    // other applications may use on the same database.
    (0x7475_736bi64 << 32) | i64::from(h.finalize())
}

impl PgMetaStore {
    /// `MetaStore::job_lock`: a session-level advisory lock, held on a
    /// connection taken out of the pool for as long as the guard lives.
    pub(super) async fn advisory_lock(&self, job: &str) -> Result<Option<JobGuard>, MetaError> {
        let key = job_key(job);
        let conn = self
            .run(move |pool| async move {
                let mut conn = pool.acquire().await?.detach();
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await?;
                if got {
                    Ok(Some(conn))
                } else {
                    conn.close().await?;
                    Ok(None)
                }
            })
            .await?;
        Ok(conn.map(|conn| {
            JobGuard::holding(AdvisoryLock {
                conn: Some(conn),
                rt: self.handle().clone(),
            })
        }))
    }
}
