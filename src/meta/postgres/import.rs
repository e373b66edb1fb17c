//! `migrate-meta`'s copy into PostgreSQL: everything a meta store holds,
//! written in one transaction, overwriting what is there.

use super::{expiry_of, secs, PgMetaStore};
use crate::meta::{MetaDump, MetaError};

impl PgMetaStore {
    /// Every upload record, tombstone, waiter, destination and owed event (for
    /// `migrate-meta` and tests).
    pub async fn import(&self, dump: &MetaDump) -> Result<(), MetaError> {
        let dump = dump.clone();
        self.run(move |pool| async move {
            let mut tx = pool.begin().await?;
            for info in &dump.uploads {
                let json = serde_json::to_string(info)
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO uploads (id, info, expires_at, finish_hook_pending, version)
                     VALUES ($1, $2::jsonb, $3, $4, $5)
                     ON CONFLICT (id) DO UPDATE SET info = EXCLUDED.info,
                       expires_at = EXCLUDED.expires_at,
                       finish_hook_pending = EXCLUDED.finish_hook_pending,
                       version = EXCLUDED.version,
                       hook_claimed_until = NULL, updated_at = now()",
                )
                .bind(info.id.as_str())
                .bind(json)
                .bind(expiry_of(info))
                .bind(info.finish_hook_pending)
                .bind(secs(info.version))
                .execute(&mut *tx)
                .await?;
            }
            for (id, at) in &dump.tombstones {
                sqlx::query(
                    "INSERT INTO tombstones (id, removed_at) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET removed_at = EXCLUDED.removed_at",
                )
                .bind(id.as_str())
                .bind(secs(*at))
                .execute(&mut *tx)
                .await?;
            }
            for (partial, final_id) in &dump.waiters {
                sqlx::query(
                    "INSERT INTO concat_waiters (partial_id, final_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind(partial.as_str())
                .bind(final_id.as_str())
                .execute(&mut *tx)
                .await?;
            }
            for (dest, id) in &dump.destinations {
                sqlx::query(
                    "INSERT INTO destinations (destination, upload_id) VALUES ($1, $2)
                     ON CONFLICT (destination) DO UPDATE SET upload_id = EXCLUDED.upload_id",
                )
                .bind(dest)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
            }
            for debt in &dump.event_debts {
                sqlx::query(
                    "INSERT INTO event_outbox (id, kind, body) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind,
                       body = EXCLUDED.body, claimed_until = NULL",
                )
                .bind(&debt.id)
                .bind(&debt.kind)
                .bind(&debt.body)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        })
        .await
    }
}
