//! Upload leases in PostgreSQL: one writer per upload across instances,
//! with expiry, heartbeats and stop requests over LISTEN/NOTIFY.

use super::*;
use sqlx::postgres::PgListener;

fn lease_err(e: MetaError) -> LeaseError {
    match e {
        MetaError::Unavailable(cause) => LeaseError::Unavailable(cause),
        e => LeaseError::Backend(Box::new(e)),
    }
}

/// Pauses between attempts to listen again after the listener lost its
/// connection: the first, and the longest.
const RELISTEN_MIN: Duration = Duration::from_millis(200);
const RELISTEN_MAX: Duration = Duration::from_secs(5);

/// A listener on the stop channel; call on the store's runtime.
async fn listen(pool: PgPool) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(&pool).await?;
    l.listen(STOP_CHANNEL).await?;
    Ok(l)
}

#[async_trait]
impl LeaseStore for PgMetaStore {
    fn instance(&self) -> &str {
        &self.inner.instance
    }

    fn ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    async fn try_acquire(&self, upload: &UploadId) -> Result<Attempt, LeaseError> {
        let token = uuid::Uuid::new_v4();
        let (key, me, ttl) = (
            upload.as_str().to_owned(),
            self.inner.instance.clone(),
            self.inner.lease_ttl.as_secs_f64(),
        );
        let tok = token.to_string();
        let outcome = self
            .run(move |pool| async move {
                // Two rounds at most: a lease released between the insert
                // and the look-up is simply tried again.
                for _ in 0..2 {
                    let won: Option<String> = sqlx::query_scalar(
                        "INSERT INTO leases (upload_id, holder, token, expires_at, heartbeat_at)
                         VALUES ($1, $2, $3, now() + $4::float8 * interval '1 second', now())
                         ON CONFLICT (upload_id) DO UPDATE SET holder = EXCLUDED.holder,
                           token = EXCLUDED.token, expires_at = EXCLUDED.expires_at,
                           heartbeat_at = now()
                         WHERE leases.expires_at < now() OR leases.holder = EXCLUDED.holder
                         RETURNING holder",
                    )
                    .bind(&key)
                    .bind(&me)
                    .bind(&tok)
                    .bind(ttl)
                    .fetch_optional(&pool)
                    .await?;
                    if won.is_some() {
                        return Ok(None);
                    }
                    let holder: Option<String> =
                        sqlx::query_scalar("SELECT holder FROM leases WHERE upload_id = $1")
                            .bind(&key)
                            .fetch_optional(&pool)
                            .await?;
                    if let Some(holder) = holder {
                        return Ok(Some(holder));
                    }
                }
                Ok(Some(String::new()))
            })
            .await
            .map_err(lease_err)?;
        Ok(match outcome {
            None => Attempt::Acquired(Lease {
                upload: upload.clone(),
                token,
            }),
            Some(holder) => Attempt::HeldBy(holder),
        })
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let (key, tok, ttl) = (
            lease.upload.as_str().to_owned(),
            lease.token.to_string(),
            self.inner.lease_ttl.as_secs_f64(),
        );
        let n = self
            .run(move |pool| async move {
                sqlx::query(
                    "UPDATE leases SET expires_at = now() + $3::float8 * interval '1 second',
                       heartbeat_at = now()
                     WHERE upload_id = $1 AND token = $2",
                )
                .bind(key)
                .bind(tok)
                .bind(ttl)
                .execute(&pool)
                .await
                .map(|r| r.rows_affected())
            })
            .await
            .map_err(lease_err)?;
        Ok(n == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let (key, tok) = (lease.upload.as_str().to_owned(), lease.token.to_string());
        self.run(move |pool| async move {
            sqlx::query("DELETE FROM leases WHERE upload_id = $1 AND token = $2")
                .bind(key)
                .bind(tok)
                .execute(&pool)
                .await
                .map(|_| ())
        })
        .await
        .map_err(lease_err)
    }

    async fn request_stop(&self, upload: &UploadId, holder: &str) -> Result<(), LeaseError> {
        let payload = format!("{holder} {}", upload.as_str());
        self.run(move |pool| async move {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(STOP_CHANNEL)
                .bind(payload)
                .execute(&pool)
                .await
                .map(|_| ())
        })
        .await
        .map_err(lease_err)
    }

    async fn stop_requests(&self) -> Result<tokio::sync::mpsc::Receiver<UploadId>, LeaseError> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let me = self.inner.instance.clone();
        let mut listener = Some(self.run(listen).await.map_err(lease_err)?);
        let (pool, limit) = (self.inner.pool.clone(), self.inner.query_timeout);
        self.handle().spawn(async move {
            let mut pause = RELISTEN_MIN;
            loop {
                let Some(l) = listener.as_mut() else {
                    // Lost: listen again on a fresh connection, with backoff
                    // while the database is away. Requests sent meanwhile
                    // are lost; their senders wait for the lease to expire.
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    match tokio::time::timeout(limit, listen(pool.clone())).await {
                        Ok(Ok(l)) => {
                            tracing::info!("stop-request listener connected again");
                            listener = Some(l);
                            pause = RELISTEN_MIN;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "stop-request listener cannot connect yet");
                            pause = (pause * 2).min(RELISTEN_MAX);
                        }
                        Err(_) => {
                            tracing::debug!("stop-request listener: no answer from PostgreSQL yet");
                            pause = (pause * 2).min(RELISTEN_MAX);
                        }
                    }
                    continue;
                };
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    n = l.recv() => n,
                };
                match next {
                    Ok(n) => {
                        let Some((holder, id)) = n.payload().split_once(' ') else {
                            continue;
                        };
                        if holder != me {
                            continue;
                        }
                        if let Ok(id) = UploadId::parse(id) {
                            if tx.send(id).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "stop-request listener lost its connection");
                        listener = None;
                    }
                }
            }
        });
        Ok(rx)
    }
}
