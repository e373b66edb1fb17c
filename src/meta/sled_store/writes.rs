//! Record writes without sled transactions, for the two writes every
//! upload makes (its creation, and each save of its offset).
//!
//! In sled 0.34 a transaction writes sled's log out twice before it returns
//! (it rolls the log buffer before and after taking its batch reservation:
//! each roll is a `pwrite` and a synchronous `sync_file_range`), and it
//! takes a lock that stops every other sled operation meanwhile. Single-key
//! operations only append to the log buffer: the writes of many requests go
//! to the disk together, in the one flush they share (see
//! [`super::GroupCommit`]).
//!
//! Without a transaction, the record and its expiry entry change in
//! separate steps. sled recovers its log in order, so a crash before the
//! flush leaves some first steps of a write and none after. The steps are
//! ordered so that no such prefix loses an index entry a record needs:
//! an entry is added before the record that needs it and removed after the
//! record that needed it has changed. What a prefix can leave is a *stale*
//! entry, which [`Open::expired_ids`] skips and, once it is
//! [`STALE_AFTER`] past its time, removes.
//!
//! The outbox (finished uploads owing a post-finish hook) is not treated
//! this way: a save that changes whether a hook is owed keeps the
//! transaction. Those saves are one per finished upload with hooks on.

use super::{decode, encode, expiry_key, sled_err, tx, Open};
use crate::meta::MetaError;
use crate::model::UploadInfo;
use crate::protocol::UploadId;
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

/// How long past its time a stale expiry entry is left alone: a write may
/// have added the entry and not yet changed the record (the entry's time
/// is in the future when it is added, so this only matters for a write
/// stalled for longer than the expiry period).
pub(super) const STALE_AFTER: u64 = 600;

/// The expiry entry a record needs: uploads with an expiry (unfinished
/// ones, and finished ones under `--expire-finished-after`).
fn expiry_entry(info: &UploadInfo) -> Option<Vec<u8>> {
    info.expires_at.map(|at| expiry_key(at, &info.id))
}

impl Open {
    /// `MetaStore::create`, before the flush.
    pub(super) fn insert_new(&self, info: &UploadInfo) -> Result<(), MetaError> {
        let key = info.id.as_str().as_bytes();
        let taken = || MetaError::AlreadyExists(info.id.clone());
        if self.tombstones.get(key).map_err(sled_err)?.is_some() {
            return Err(taken());
        }
        let value = encode(info)?;
        let entry = expiry_entry(info);
        if let Some(k) = &entry {
            self.expiry.insert(k.as_slice(), &[]).map_err(sled_err)?;
        }
        let none: Option<&[u8]> = None;
        if let Err(holder) = self
            .uploads
            .compare_and_swap(key, none, Some(value.as_slice()))
            .map_err(sled_err)?
        {
            // The entry added above goes, unless the holder needs the same.
            let holders = holder
                .current
                .as_deref()
                .and_then(|v| decode(key, v).ok())
                .and_then(|h| expiry_entry(&h));
            if let Some(k) = entry.filter(|k| holders.as_ref() != Some(k)) {
                self.expiry.remove(k).map_err(sled_err)?;
            }
            return Err(taken());
        }
        // A removal (a transaction, so wholly before or after each step
        // here) may have come between the check above and the insert: its
        // tombstone keeps the id from being used again.
        if self.tombstones.get(key).map_err(sled_err)?.is_some() {
            let _ = self
                .uploads
                .compare_and_swap(key, Some(value.as_slice()), none)
                .map_err(sled_err)?;
            if let Some(k) = entry {
                self.expiry.remove(k).map_err(sled_err)?;
            }
            return Err(taken());
        }
        Ok(())
    }

    /// `MetaStore::save` of `info` (already at its new version) over the
    /// record at version `expected`, before the flush.
    pub(super) fn replace(&self, info: &UploadInfo, expected: u64) -> Result<(), MetaError> {
        let key = info.id.as_str().as_bytes();
        let value = encode(info)?;
        let entry = expiry_entry(info);
        loop {
            let old_value = self
                .uploads
                .get(key)
                .map_err(sled_err)?
                .ok_or_else(|| MetaError::NotFound(info.id.clone()))?;
            let old = decode(key, &old_value)?;
            fenced(&old, info, expected)?;
            if old.finish_hook_pending != info.finish_hook_pending {
                return self.replace_with_outbox(info, &value, expected);
            }
            let old_entry = expiry_entry(&old);
            let moved = old_entry != entry;
            if let Some(k) = entry.as_ref().filter(|_| moved) {
                self.expiry.insert(k.as_slice(), &[]).map_err(sled_err)?;
            }
            let swapped = self
                .uploads
                .compare_and_swap(key, Some(&old_value), Some(value.as_slice()))
                .map_err(sled_err)?;
            if swapped.is_ok() {
                if let Some(k) = old_entry.filter(|_| moved) {
                    self.expiry.remove(k).map_err(sled_err)?;
                }
                return Ok(());
            }
            // Changed meanwhile: again, against what is there now (whose
            // version then refuses the write). An entry added above and
            // not needed after all is stale.
        }
    }

    /// A save that changes the outbox: one transaction over the record and
    /// both indexes.
    fn replace_with_outbox(
        &self,
        info: &UploadInfo,
        value: &[u8],
        expected: u64,
    ) -> Result<(), MetaError> {
        let key = info.id.as_str().as_bytes();
        tx(
            (&self.uploads, &self.expiry, &self.outbox).transaction(|(uploads, expiry, outbox)| {
                let old = uploads.get(key)?.ok_or_else(|| {
                    ConflictableTransactionError::Abort(MetaError::NotFound(info.id.clone()))
                })?;
                let old = decode(key, &old).map_err(ConflictableTransactionError::Abort)?;
                fenced(&old, info, expected).map_err(ConflictableTransactionError::Abort)?;
                if let Some(k) = expiry_entry(&old) {
                    expiry.remove(k)?;
                }
                if let Some(k) = expiry_entry(info) {
                    expiry.insert(k, &[])?;
                }
                if info.finish_hook_pending {
                    outbox.insert(key, &[])?;
                } else {
                    outbox.remove(key)?;
                }
                uploads.insert(key, value)?;
                Ok(())
            }),
        )
    }

    /// `MetaStore::expired`: ids whose record has the entry's expiry, oldest
    /// first; stale entries are skipped, and removed once [`STALE_AFTER`]
    /// past their time.
    pub(super) fn expired_ids(&self, now: u64, limit: usize) -> Result<Vec<UploadId>, MetaError> {
        let end = now.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self.expiry.range(..end.as_slice()) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item.map_err(sled_err)?;
            let (at, id) = parse_expiry_key(&k)?;
            let needed = match self.uploads.get(id.as_str()).map_err(sled_err)? {
                // A record that cannot be read is the sweeper's to report.
                Some(v) => {
                    decode(&k, &v).map_or(true, |r| expiry_entry(&r).as_deref() == Some(&*k))
                }
                None => false,
            };
            if needed {
                out.push(id);
            } else if at.saturating_add(STALE_AFTER) <= now {
                self.expiry.remove(&k).map_err(sled_err)?;
            }
        }
        Ok(out)
    }
}

/// Refuses a save of `new` over `old` unless `old` is still at version
/// `expected`, and a save that would lower the offset or unfinish it.
pub(super) fn fenced(old: &UploadInfo, new: &UploadInfo, expected: u64) -> Result<(), MetaError> {
    if old.version != expected || old.offset > new.offset || (old.finished && !new.finished) {
        return Err(MetaError::Stale(new.id.clone()));
    }
    Ok(())
}

/// The expiry time and the id of an expiry entry's key.
fn parse_expiry_key(k: &[u8]) -> Result<(u64, UploadId), MetaError> {
    let bad = || MetaError::Corrupt {
        key: format!("{k:?}"),
        reason: "bad expiry key".into(),
    };
    let (at, id) = k.split_first_chunk::<8>().ok_or_else(bad)?;
    let id = std::str::from_utf8(id)
        .ok()
        .and_then(|s| UploadId::parse(s).ok())
        .ok_or_else(bad)?;
    Ok((u64::from_be_bytes(*at), id))
}
