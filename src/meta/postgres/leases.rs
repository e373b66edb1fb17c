//! Upload leases in PostgreSQL: one writer per upload across instances,
//! with expiry, heartbeats and stop requests over LISTEN/NOTIFY.

use super::*;

fn lease_err(e: MetaError) -> LeaseError {
    LeaseError::Backend(e.to_string())
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
        let mut listener = self
            .run(|pool| async move {
                let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                l.listen(STOP_CHANNEL).await?;
                Ok(l)
            })
            .await
            .map_err(lease_err)?;
        let handle = self
            .inner
            .rt
            .0
            .as_ref()
            .map(|rt| rt.handle().clone())
            .ok_or_else(|| LeaseError::Backend("PostgreSQL runtime is gone".into()))?;
        handle.spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    n = listener.recv() => n,
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
                        // `recv` reconnects on its next call.
                        tracing::warn!(error = %e, "stop-request listener lost its connection");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(rx)
    }
}
