//! Creating an upload: the size and space checks, the pre-create hook's
//! say (a veto, or another id, metadata and destination), storage prepared
//! before the record is written, and the post-create hooks once it is.
//! Final uploads of the concatenation extension are built in `concat.rs`.

use super::lock::{Contend, UploadLock};
use super::{hook_dispatch, validate_destination, Engine, UploadError};
use crate::data::DataStore;
use crate::hooks::{HookType, RequestInfo};
use crate::meta::MetaError;
use crate::model::{now_secs, Concat, UploadInfo};
use crate::protocol::UploadId;

/// A creation request after header parsing.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    /// An id reserved by the caller (e.g. already announced to the client
    /// in an interim response); `None` generates one.
    pub id: Option<UploadId>,
    /// `None` means deferred length.
    pub length: Option<u64>,
    /// Raw `Upload-Metadata` as sent (already validated).
    pub metadata: Option<String>,
    pub concat: NewConcat,
}

/// Concatenation role requested at creation.
#[derive(Debug, Clone, Default)]
pub enum NewConcat {
    #[default]
    None,
    Partial,
    Final(Vec<UploadId>),
}

impl Engine {
    /// Creates an upload (the bytes, if any, follow through `append`).
    /// The pre-create hook may reject it, or change its id, metadata and
    /// destination.
    pub async fn create(
        &self,
        new: NewUpload,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError> {
        let (info, _) = self.create_held(new, ctx, Hold::No).await?;
        Ok(info)
    }

    /// [`Engine::create`]; unless `hold` is [`Hold::No`], the upload's lock
    /// is also returned when its id was generated here, taken before its
    /// record was written: nothing else can have changed the record since,
    /// so the caller may append to the record in hand without reading it
    /// back.
    pub(crate) async fn create_held(
        &self,
        new: NewUpload,
        ctx: &RequestInfo,
        hold: Hold,
    ) -> Result<(UploadInfo, Option<Held<'_>>), UploadError> {
        if let Some(length) = new.length {
            self.check_size(length, ctx)?;
            self.check_space(length).await?;
        }
        // An id whose storage the data store prepared ahead of time goes
        // back to it if creation stops before the record is written.
        let mut lent = Lent {
            data: self.data.as_ref(),
            id: new.id.is_none().then(|| self.data.fresh_id()).flatten(),
        };
        let mut info = UploadInfo {
            metadata: new.metadata,
            concat: match &new.concat {
                NewConcat::None => Concat::None,
                NewConcat::Partial => Concat::Partial,
                NewConcat::Final(parts) => Concat::Final {
                    parts: parts.clone(),
                },
            },
            expires_at: self.expiry_from_now(),
            owner: ctx.auth.as_ref().map(|a| a.subject.clone()),
            ..UploadInfo::new(
                new.id
                    .clone()
                    .or_else(|| lent.id.clone())
                    .unwrap_or_else(UploadId::generate),
                new.length,
                now_secs(),
            )
        };
        // A random id made here for this request (122 random bits) cannot
        // be taken; one announced earlier or chosen by the hook can.
        let id_changed = self.pre_create(&mut info, new.id.is_some(), ctx).await?;
        let fresh_id = new.id.is_none() && !id_changed;
        // Storage is prepared before the record is written: make sure an id
        // that may be taken is free first, so a reused id never touches
        // another upload's bytes. (The record's insert checks every id.)
        let taken = match fresh_id {
            true => Ok(None),
            false => self.meta.get(&info.id).await,
        };
        // Nobody else knows a generated id yet: its lock is free.
        let held = match hold != Hold::No && fresh_id {
            true => Some(Held {
                lock: self.lock(&info.id, Contend::Wait).await?,
                // Nobody hears of the upload before the caller answers
                // (unless a post-create hook is sent), and an upload that
                // is not finished at once is saved again by the append.
                deferred: hold == Hold::LockDeferred
                    && !self.notifies(HookType::PostCreate)
                    && info.length != Some(0)
                    && matches!(new.concat, NewConcat::None | NewConcat::Partial),
            }),
            false => None,
        };
        let deferred = held.as_ref().is_some_and(|h| h.deferred);
        if matches!(taken, Ok(None)) {
            // From here on the record may be written: the id is spent.
            lent.id.take_if(|id| *id == info.id);
        }
        let result = match taken {
            Ok(Some(_)) => Err(UploadError::Meta(MetaError::AlreadyExists(info.id.clone()))),
            Err(e) => Err(e.into()),
            Ok(None) => match new.concat {
                NewConcat::Final(parts) => self.create_final(info.clone(), parts, ctx).await,
                _ => self.create_plain(info.clone(), deferred).await,
            },
        };
        let created = self.created(result, &info, ctx).await?;
        Ok((created, held))
    }

    /// The pre-create hook's say on `info`: it may reject the upload, or
    /// change its id (unless `announced`: the URL was already sent), its
    /// metadata and its destination (claimed here). True when it changed
    /// the id.
    async fn pre_create(
        &self,
        info: &mut UploadInfo,
        announced: bool,
        ctx: &RequestInfo,
    ) -> Result<bool, UploadError> {
        let answer = self.pre_hook(HookType::PreCreate, info, ctx).await?;
        let Some(change) = answer.change_file_info else {
            return Ok(false);
        };
        let mut id_changed = false;
        if let Some(id) = change.id.filter(|i| !i.is_empty()) {
            if announced {
                // The URL was already announced (IETF 104 interim
                // response): it cannot change any more.
                tracing::warn!(upload = %info.id, requested = %id, "pre-create hook's ID change ignored: the upload URL was already sent");
            } else {
                info.id = UploadId::parse(&id).map_err(|_| {
                    UploadError::HookFailed(format!("hook chose an invalid upload id {id:?}"))
                })?;
                id_changed = true;
            }
        }
        if let Some(pairs) = change.meta_data {
            info.metadata = Some(crate::protocol::Metadata::from_pairs(pairs).encode())
                .filter(|m| !m.is_empty());
        }
        if let Some(storage) = change.storage {
            // Everything is checked before the destination is claimed.
            hook_dispatch::apply_storage_choices(self.data.as_ref(), info, &storage)?;
            if let Some(dest) = storage.get("Key").or_else(|| storage.get("Path")) {
                info.destination = Some(validate_destination(dest)?);
                if let Some(claim) = info.destination_claim() {
                    if !self.meta.claim_destination(&claim, &info.id).await? {
                        return Err(UploadError::DestinationTaken(claim));
                    }
                }
            }
        }
        Ok(id_changed)
    }

    /// After a creation: its post-create (and, for an empty upload,
    /// post-finish) hooks; or, when it failed, the destination it claimed
    /// goes back.
    async fn created(
        &self,
        result: Result<UploadInfo, UploadError>,
        info: &UploadInfo,
        ctx: &RequestInfo,
    ) -> Result<UploadInfo, UploadError> {
        match result {
            Ok(created) => {
                // metrics
                metrics::counter!(crate::telemetry::UPLOADS_CREATED).increment(1);
                self.post_hook(HookType::PostCreate, &created, ctx);
                if created.finished {
                    self.deliver_finish_hook(&created, ctx, false);
                }
                Ok(created)
            }
            Err(e) => {
                if let Some(claim) = info.destination_claim() {
                    if let Err(release) = self.meta.release_destination(&claim, &info.id).await {
                        tracing::warn!(error = %release, "releasing destination failed");
                    }
                }
                Err(e)
            }
        }
    }

    /// Prepares storage and writes the record; `deferred`, without waiting
    /// for it to be durable (see [`Held::deferred`]).
    async fn create_plain(
        &self,
        mut info: UploadInfo,
        deferred: bool,
    ) -> Result<UploadInfo, UploadError> {
        info.storage = self.data.create(&info).await?;
        if info.length == Some(0) {
            info.storage = self.data.finish(&info).await?;
            info.finished = true;
            info.expires_at = self.finished_expiry();
            info.finish_hook_pending = self.owes_finish_hook();
        }
        let recorded = match deferred {
            true => self.meta.create_deferred(&info).await,
            false => self.meta.create(&info).await,
        };
        match recorded {
            Ok(()) => {}
            // The id belongs to another upload: its storage is not ours.
            Err(e @ MetaError::AlreadyExists(_)) => return Err(e.into()),
            Err(e) => {
                // No record (meta store unreachable): nothing would ever
                // abort the multipart upload just begun, so abort it now.
                // Were the record written after all, its upload fails later
                // and expires; the client was answered 5xx and knows no URL.
                if let Err(undo) = self.data.delete(&info).await {
                    tracing::warn!(upload = %info.id, error = %undo, "removing the storage of an unrecorded upload failed");
                }
                return Err(e.into());
            }
        }
        tracing::info!(upload = %info.id, length = ?info.length, "upload created");
        if info.finished {
            // metrics
            metrics::counter!(crate::telemetry::UPLOADS_FINISHED).increment(1);
            self.on_finished(&info).await;
        }
        Ok(info)
    }
}

/// What [`Engine::create_held`] returns besides the record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Hold {
    /// Nothing.
    No,
    /// The upload's lock, when its id was generated here.
    Lock,
    /// The lock, and the record written without waiting for durability
    /// where nobody else hears of the upload (see [`Held::deferred`]).
    LockDeferred,
}

/// The lock of an upload [`Engine::create_held`] just created.
pub(crate) struct Held<'a> {
    pub(crate) lock: UploadLock<'a>,
    /// Its record was written without waiting for durability
    /// ([`MetaStore::create_deferred`]): before answering, the caller saves
    /// it or calls [`MetaStore::sync`].
    pub(crate) deferred: bool,
}

/// An id lent by the data store for a new upload (see
/// [`DataStore::fresh_id`]): given back when dropped still holding it.
struct Lent<'a> {
    data: &'a dyn DataStore,
    id: Option<UploadId>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.data.give_back(id);
        }
    }
}
