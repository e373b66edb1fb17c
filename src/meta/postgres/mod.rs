//! `MetaStore` and `LeaseStore` on PostgreSQL, for several server
//! instances sharing one database. Schema in `migrations/` (embedded and
//! applied at start, or by `tusker migrate`).
//!
//! Every query runs on a small runtime of its own, so the pool's
//! connections never depend on which actix worker happened to open them,
//! and is bounded by the store's query timeout: an unreachable or stalled
//! database answers [`MetaError::Unavailable`] in time for the request to
//! say so (503), and the pool reconnects by itself once it is back.

use super::lease::{Attempt, Lease, LeaseError, LeaseStore};
use super::{EventDebt, JobGuard, Lookup, MetaError, MetaStore};
use crate::model::{now_secs, UploadInfo};
use crate::protocol::UploadId;
use crate::runtime::SideRuntime;
use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod advisory;
mod errors;
mod import;
mod leases;

pub use errors::TimedOut;
use errors::{backend, classify};

/// Embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Channel on which instances ask each other to stop a request.
const STOP_CHANNEL: &str = "tusker_stop";

/// Default lifetime of a lease without a heartbeat.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// How long an instance keeps the claim on an owed post-finish hook
/// before another one may deliver it.
pub const DEFAULT_HOOK_CLAIM: Duration = Duration::from_secs(120);
/// Default bound of one call (query, transaction or lease operation).
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound of the schema migrations at start.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);

struct Inner {
    pool: PgPool,
    instance: String,
    lease_ttl: Duration,
    hook_claim: Duration,
    query_timeout: Duration,
    // Last field: dropped after the pool.
    rt: SideRuntime,
}

/// PostgreSQL-backed meta store and lease store.
#[derive(Clone)]
pub struct PgMetaStore {
    inner: Arc<Inner>,
}

/// `url` (a PostgreSQL URL) with its database name replaced by `name`,
/// query parameters kept: for tools and tests that create a database of
/// their own next to the one an operator named.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn parse_id(s: &str) -> Result<UploadId, MetaError> {
    UploadId::parse(s).map_err(|_| MetaError::Corrupt {
        key: s.to_owned(),
        reason: "not an upload id".into(),
    })
}

fn decode(key: &str, value: &str) -> Result<UploadInfo, MetaError> {
    serde_json::from_str(value).map_err(|e| MetaError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// The expiry index value (finished uploads have one only under
/// `--expire-finished-after`).
fn expiry_of(info: &UploadInfo) -> Option<i64> {
    info.expires_at.map(secs)
}

impl PgMetaStore {
    /// Connects (lazily: the first query opens the first connection, and
    /// fails if the database is unreachable).
    pub async fn connect(url: &str) -> Result<Self, MetaError> {
        let rt = SideRuntime::start("tusker-pg", 2, None).map_err(backend)?;
        let url = url.to_owned();
        let pool = rt
            .handle()
            .spawn(async move {
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&url)
                    .await
            })
            .await
            .map_err(backend)?
            .map_err(|e| {
                MetaError::Backend(crate::error::caused("cannot connect to PostgreSQL", e))
            })?;
        Ok(PgMetaStore {
            inner: Arc::new(Inner {
                pool,
                instance: uuid::Uuid::new_v4().simple().to_string(),
                lease_ttl: DEFAULT_LEASE_TTL,
                hook_claim: DEFAULT_HOOK_CLAIM,
                query_timeout: DEFAULT_QUERY_TIMEOUT,
                rt,
            }),
        })
    }

    /// Sets the lease lifetime and the post-finish claim; call before
    /// sharing the store.
    pub fn with_timings(self, lease_ttl: Duration, hook_claim: Duration) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.lease_ttl = lease_ttl.max(Duration::from_secs(1));
                inner.hook_claim = hook_claim.max(Duration::from_secs(1));
                PgMetaStore {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => PgMetaStore { inner },
        }
    }

    /// Bounds every call (a request's queries, lease operations, the
    /// readiness ping) by `timeout`; call before sharing the store.
    pub fn with_query_timeout(self, timeout: Duration) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.query_timeout = timeout.max(Duration::from_millis(100));
                PgMetaStore {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => PgMetaStore { inner },
        }
    }

    /// Applies the embedded migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), MetaError> {
        self.run_within(MIGRATE_TIMEOUT, |pool| async move {
            MIGRATOR.run(&pool).await.map_err(sqlx::Error::from)
        })
        .await
        .map_err(|e| match e {
            MetaError::Unavailable(_) => e,
            e => MetaError::Backend(crate::error::caused("migrating the schema", e)),
        })
    }

    /// Runs a query future on the store's runtime, within the query timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, MetaError>
    where
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_within(self.inner.query_timeout, f).await
    }

    /// The store's runtime, where queries and the listener run.
    fn handle(&self) -> &tokio::runtime::Handle {
        self.inner.rt.handle()
    }

    /// [`PgMetaStore::run`] with its own bound. On timeout the query is
    /// dropped on the store's runtime (its connection is not reused).
    async fn run_within<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, MetaError>
    where
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let query = f(self.inner.pool.clone());
        self.handle()
            .spawn(async move { tokio::time::timeout(limit, query).await })
            .await
            .map_err(|e| MetaError::Backend(crate::error::caused("query task failed", e)))?
            .map_err(|_| MetaError::Unavailable(Box::new(TimedOut(limit))))?
            .map_err(classify)
    }

    /// Runs `sql` with a record's columns bound as `$1` id, `$2` the record
    /// (JSON), `$3` expiry, `$4` whether its post-finish hook is owed and
    /// `$5` `version`; returns the one row it yields.
    async fn write_record(
        &self,
        sql: &'static str,
        info: &UploadInfo,
        version: u64,
    ) -> Result<sqlx::postgres::PgRow, MetaError> {
        let json = serde_json::to_string(info).map_err(backend)?;
        let (id, expires, pending, version) = (
            info.id.as_str().to_owned(),
            expiry_of(info),
            info.finish_hook_pending,
            secs(version),
        );
        self.run(move |pool| async move {
            sqlx::query(sql)
                .bind(id)
                .bind(json)
                .bind(expires)
                .bind(pending)
                .bind(version)
                .fetch_one(&pool)
                .await
        })
        .await
    }

    /// Claims the row `sql` names by `$1` for the store's claim time (`$2`,
    /// in seconds): an owed hook or event, so one instance delivers it.
    /// True when this call claimed it.
    async fn claim_one(&self, sql: &'static str, key: String) -> Result<bool, MetaError> {
        let claim = self.inner.hook_claim.as_secs_f64();
        let n = self
            .run(move |pool| async move {
                sqlx::query(sql)
                    .bind(key)
                    .bind(claim)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected())
            })
            .await?;
        Ok(n == 1)
    }

    /// Claims at most `limit` (`$1`) unclaimed rows `sql` picks, for the
    /// store's claim time (`$2`, in seconds); the rows its `RETURNING`
    /// yields.
    async fn claim_batch(
        &self,
        sql: &'static str,
        limit: usize,
    ) -> Result<Vec<sqlx::postgres::PgRow>, MetaError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let claim = self.inner.hook_claim.as_secs_f64();
        self.run(move |pool| async move {
            sqlx::query(sql)
                .bind(limit)
                .bind(claim)
                .fetch_all(&pool)
                .await
        })
        .await
    }
}

#[async_trait]
impl MetaStore for PgMetaStore {
    async fn create(&self, info: &UploadInfo) -> Result<(), MetaError> {
        let inserted: i64 = self
            .write_record(
                "WITH ins AS (
                   INSERT INTO uploads (id, info, expires_at, finish_hook_pending, version)
                   SELECT $1::text, $2::jsonb, $3::int8, $4::bool, $5::int8
                   WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE id = $1::text)
                   ON CONFLICT (id) DO NOTHING
                   RETURNING 1)
                 SELECT count(*) FROM ins",
                info,
                info.version,
            )
            .await?
            .try_get(0)
            .map_err(backend)?;
        if inserted == 0 {
            return Err(MetaError::AlreadyExists(info.id.clone()));
        }
        Ok(())
    }

    async fn get(&self, id: &UploadId) -> Result<Option<Lookup>, MetaError> {
        let key = id.as_str().to_owned();
        let row = self
            .run(move |pool| async move {
                sqlx::query(
                    "SELECT (SELECT info::text FROM uploads WHERE id = $1),
                            EXISTS (SELECT 1 FROM tombstones WHERE id = $1),
                            (SELECT version FROM uploads WHERE id = $1)",
                )
                .bind(key)
                .fetch_one(&pool)
                .await
            })
            .await?;
        let info: Option<String> = row.try_get(0).map_err(backend)?;
        let gone: bool = row.try_get(1).map_err(backend)?;
        let version: Option<i64> = row.try_get(2).map_err(backend)?;
        match info {
            Some(v) => {
                // The column is what writes compare against.
                let mut info = decode(id.as_str(), &v)?;
                info.version = version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                Ok(Some(Lookup::Live(Box::new(info))))
            }
            None if gone => Ok(Some(Lookup::Gone)),
            None => Ok(None),
        }
    }

    async fn save(&self, info: &mut UploadInfo) -> Result<(), MetaError> {
        let expected = info.version;
        info.version = expected.saturating_add(1);
        // One statement: the compare-and-set on the version, and the
        // guards that no write lowers the offset or unfinishes an upload.
        // The second column sees the row as it was before the update.
        let outcome = self
            .write_record(
                "WITH upd AS (
                   UPDATE uploads SET info = $2::jsonb, expires_at = $3,
                     finish_hook_pending = $4,
                     hook_claimed_until = CASE WHEN $4 THEN hook_claimed_until END,
                     version = $5 + 1, updated_at = now()
                   WHERE id = $1 AND version = $5
                     AND (info->>'offset')::int8 <= ($2::jsonb->>'offset')::int8
                     AND (NOT COALESCE((info->>'finished')::bool, false)
                          OR COALESCE(($2::jsonb->>'finished')::bool, false))
                   RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM upd),
                        EXISTS (SELECT 1 FROM uploads WHERE id = $1)",
                info,
                expected,
            )
            .await
            .and_then(|row| {
                let saved: bool = row.try_get(0).map_err(backend)?;
                let live: bool = row.try_get(1).map_err(backend)?;
                Ok((saved, live))
            });
        match outcome {
            Ok((true, _)) => Ok(()),
            other => {
                info.version = expected;
                match other {
                    Ok((false, true)) => Err(MetaError::Stale(info.id.clone())),
                    Ok(_) => Err(MetaError::NotFound(info.id.clone())),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn remove(&self, info: &UploadInfo) -> Result<(), MetaError> {
        let (key, now, version) = (
            info.id.as_str().to_owned(),
            secs(now_secs()),
            secs(info.version),
        );
        let removed = self
            .run(move |pool| async move {
                let mut tx = pool.begin().await?;
                let deleted = sqlx::query("DELETE FROM uploads WHERE id = $1 AND version = $2")
                    .bind(&key)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    let live: bool =
                        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM uploads WHERE id = $1)")
                            .bind(&key)
                            .fetch_one(&mut *tx)
                            .await?;
                    if live {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                }
                sqlx::query(
                    "INSERT INTO tombstones (id, removed_at) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET removed_at = EXCLUDED.removed_at",
                )
                .bind(&key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await.map(|_| true)
            })
            .await?;
        match removed {
            true => Ok(()),
            false => Err(MetaError::Stale(info.id.clone())),
        }
    }

    async fn expired(&self, now: u64, limit: usize) -> Result<Vec<UploadId>, MetaError> {
        let (now, limit) = (secs(now), i64::try_from(limit).unwrap_or(i64::MAX));
        let ids: Vec<String> = self
            .run(move |pool| async move {
                sqlx::query_scalar(
                    "SELECT id FROM uploads WHERE expires_at <= $1
                     ORDER BY expires_at, id LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&pool)
                .await
            })
            .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }

    async fn prune_tombstones(&self, before: u64) -> Result<usize, MetaError> {
        let before = secs(before);
        let ttl = self.inner.lease_ttl.as_secs_f64();
        let n = self
            .run(move |pool| async move {
                // Leases of crashed instances linger until pruned here.
                sqlx::query(
                    "DELETE FROM leases WHERE expires_at < now() - $1::float8 * interval '1 second'",
                )
                .bind(ttl)
                .execute(&pool)
                .await?;
                sqlx::query("DELETE FROM tombstones WHERE removed_at < $1")
                    .bind(before)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected())
            })
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn add_concat_waiters(
        &self,
        final_id: &UploadId,
        partials: &[UploadId],
    ) -> Result<(), MetaError> {
        let final_id = final_id.as_str().to_owned();
        let partials: Vec<String> = partials.iter().map(|p| p.as_str().to_owned()).collect();
        self.run(move |pool| async move {
            sqlx::query(
                "INSERT INTO concat_waiters (partial_id, final_id)
                 SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
            )
            .bind(partials)
            .bind(final_id)
            .execute(&pool)
            .await
            .map(|_| ())
        })
        .await
    }

    async fn concat_waiters(&self, partial: &UploadId) -> Result<Vec<UploadId>, MetaError> {
        let partial = partial.as_str().to_owned();
        let ids: Vec<String> = self
            .run(move |pool| async move {
                sqlx::query_scalar(
                    "SELECT final_id FROM concat_waiters WHERE partial_id = $1 ORDER BY final_id",
                )
                .bind(partial)
                .fetch_all(&pool)
                .await
            })
            .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }

    async fn remove_concat_waiters(
        &self,
        final_id: &UploadId,
        partials: &[UploadId],
    ) -> Result<(), MetaError> {
        let final_id = final_id.as_str().to_owned();
        let partials: Vec<String> = partials.iter().map(|p| p.as_str().to_owned()).collect();
        self.run(move |pool| async move {
            sqlx::query(
                "DELETE FROM concat_waiters WHERE final_id = $2 AND partial_id = ANY($1::text[])",
            )
            .bind(partials)
            .bind(final_id)
            .execute(&pool)
            .await
            .map(|_| ())
        })
        .await
    }

    async fn claim_destination(&self, destination: &str, id: &UploadId) -> Result<bool, MetaError> {
        let (dest, key) = (destination.to_owned(), id.as_str().to_owned());
        let holder: String = self
            .run(move |pool| async move {
                // The no-op update makes RETURNING yield the current holder.
                sqlx::query_scalar(
                    "INSERT INTO destinations (destination, upload_id) VALUES ($1, $2)
                     ON CONFLICT (destination) DO UPDATE SET destination = EXCLUDED.destination
                     RETURNING upload_id",
                )
                .bind(dest)
                .bind(key)
                .fetch_one(&pool)
                .await
            })
            .await?;
        Ok(holder == id.as_str())
    }

    async fn release_destination(&self, destination: &str, id: &UploadId) -> Result<(), MetaError> {
        let (dest, key) = (destination.to_owned(), id.as_str().to_owned());
        self.run(move |pool| async move {
            sqlx::query("DELETE FROM destinations WHERE destination = $1 AND upload_id = $2")
                .bind(dest)
                .bind(key)
                .execute(&pool)
                .await
                .map(|_| ())
        })
        .await
    }

    async fn pending_finish_hooks(&self, limit: usize) -> Result<Vec<UploadId>, MetaError> {
        let rows = self
            .claim_batch(
                "UPDATE uploads SET hook_claimed_until = now() + $2::float8 * interval '1 second'
                 WHERE id IN (
                   SELECT id FROM uploads
                   WHERE finish_hook_pending
                     AND (hook_claimed_until IS NULL OR hook_claimed_until < now())
                   ORDER BY id LIMIT $1
                   FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                limit,
            )
            .await?;
        let mut ids = rows
            .iter()
            .map(|row| parse_id(&row.try_get::<String, _>(0).map_err(backend)?))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    async fn claim_finish_hook(&self, id: &UploadId) -> Result<bool, MetaError> {
        self.claim_one(
            "UPDATE uploads SET hook_claimed_until = now() + $2::float8 * interval '1 second'
             WHERE id = $1 AND finish_hook_pending
               AND (hook_claimed_until IS NULL OR hook_claimed_until < now())",
            id.as_str().to_owned(),
        )
        .await
    }

    async fn add_event_debt(&self, debt: &EventDebt) -> Result<(), MetaError> {
        let debt = debt.clone();
        self.run(move |pool| async move {
            sqlx::query(
                "INSERT INTO event_outbox (id, kind, body) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, body = EXCLUDED.body,
                   claimed_until = NULL",
            )
            .bind(debt.id)
            .bind(debt.kind)
            .bind(debt.body)
            .execute(&pool)
            .await
            .map(|_| ())
        })
        .await
    }

    async fn claim_event_debt(&self, id: &str) -> Result<bool, MetaError> {
        self.claim_one(
            "UPDATE event_outbox
             SET claimed_until = now() + $2::float8 * interval '1 second'
             WHERE id = $1 AND (claimed_until IS NULL OR claimed_until < now())",
            id.to_owned(),
        )
        .await
    }

    async fn pending_event_debts(&self, limit: usize) -> Result<Vec<EventDebt>, MetaError> {
        let rows = self
            .claim_batch(
                "UPDATE event_outbox
                 SET claimed_until = now() + $2::float8 * interval '1 second'
                 WHERE id IN (
                   SELECT id FROM event_outbox
                   WHERE claimed_until IS NULL OR claimed_until < now()
                   ORDER BY created_at, id LIMIT $1
                   FOR UPDATE SKIP LOCKED)
                 RETURNING id, kind, body, extract(epoch FROM created_at)::float8",
                limit,
            )
            .await?;
        let mut debts = Vec::with_capacity(rows.len());
        for row in &rows {
            let created: f64 = row.try_get(3).map_err(backend)?;
            debts.push((
                created,
                EventDebt {
                    id: row.try_get(0).map_err(backend)?,
                    kind: row.try_get(1).map_err(backend)?,
                    body: row.try_get(2).map_err(backend)?,
                },
            ));
        }
        // RETURNING keeps no order: oldest first again.
        debts.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(debts.into_iter().map(|(_, d)| d).collect())
    }

    async fn clear_event_debt(&self, id: &str) -> Result<(), MetaError> {
        let id = id.to_owned();
        self.run(move |pool| async move {
            sqlx::query("DELETE FROM event_outbox WHERE id = $1")
                .bind(id)
                .execute(&pool)
                .await
                .map(|_| ())
        })
        .await
    }

    async fn job_lock(&self, job: &str) -> Result<Option<JobGuard>, MetaError> {
        self.advisory_lock(job).await
    }

    async fn ping(&self) -> Result<(), MetaError> {
        self.run(|pool| async move { sqlx::query("SELECT 1").execute(&pool).await.map(|_| ()) })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t_1"),
            "postgres://u@h:5432/t_1"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "t_1"),
            "postgres://u@h/t_1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t_1"), "postgres://h/t_1");
    }
}
