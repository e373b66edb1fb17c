//! Everything a sled store holds, read for `tusker migrate-meta`.

use super::{blocking, decode, sled_err, SledMetaStore};
use crate::meta::{MetaDump, MetaError};
use crate::protocol::UploadId;

impl SledMetaStore {
    /// Everything stored, for `tusker migrate-meta`.
    pub async fn dump(&self) -> Result<MetaDump, MetaError> {
        self.with(|open| {
            blocking(open, |s| {
                let id_of = |k: &[u8]| -> Result<UploadId, MetaError> {
                    std::str::from_utf8(k)
                        .ok()
                        .and_then(|v| UploadId::parse(v).ok())
                        .ok_or_else(|| MetaError::Corrupt {
                            key: String::from_utf8_lossy(k).into_owned(),
                            reason: "not an upload id".into(),
                        })
                };
                let mut dump = MetaDump::default();
                for item in s.uploads.iter() {
                    let (k, v) = item.map_err(sled_err)?;
                    dump.uploads.push(decode(&k, &v)?);
                }
                for item in s.tombstones.iter() {
                    let (k, v) = item.map_err(sled_err)?;
                    let at = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
                    dump.tombstones.push((id_of(&k)?, at));
                }
                for item in s.waiters.iter() {
                    let (k, _) = item.map_err(sled_err)?;
                    let Some(split) = k.iter().position(|b| *b == 0) else {
                        continue;
                    };
                    dump.waiters
                        .push((id_of(&k[..split])?, id_of(&k[split + 1..])?));
                }
                for item in s.destinations.iter() {
                    let (k, v) = item.map_err(sled_err)?;
                    dump.destinations
                        .push((String::from_utf8_lossy(&k).into_owned(), id_of(&v)?));
                }
                dump.event_debts = s.event_debts(usize::MAX)?;
                Ok(dump)
            })
        })
        .await
    }
}
