//! `DataStore` on a local directory: one file per upload, written by
//! [`writer`] (received chunks as they came, through the page cache; or,
//! when configured, copied into aligned runs for direct I/O, see
//! [`staged`]) and `fdatasync`ed before an offset is acknowledged.

mod pending;
mod prepared;
mod read;
mod staged;
mod writer;

use super::{ByteStream, DataError, DataStore, IoPermit, UploadWriter};
use crate::model::UploadInfo;
use crate::protocol::UploadId;
use async_trait::async_trait;
use prepared::{Ahead, Prepared};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use writer::FileWriter;
#[cfg(test)]
use writer::{writeback_step, WRITEBACK};

/// Read size when streaming a download: large reads, few syscalls.
const READ_CHUNK: usize = 1024 * 1024;

/// How a store's writers write, store-wide: each mode is turned off for
/// good when the filesystem or kernel refuses it.
#[derive(Debug)]
pub(super) struct Modes {
    /// Whole blocks are written with direct I/O.
    pub(super) direct: AtomicBool,
    /// Bytes through the page cache are written with `RWF_DONTCACHE`.
    pub(super) uncached: AtomicBool,
}

/// Upload bytes as files under one directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    /// How bytes are written, shared with every writer.
    modes: Arc<Modes>,
    /// Writers alive now: they share the budget of pending bytes.
    writers: Arc<AtomicUsize>,
    /// Files made ahead of use, for new uploads (see [`prepared`]).
    prepared: Arc<Prepared>,
    /// Runs on the blocking pool before each batch is written (tests hold
    /// a write there).
    #[cfg(test)]
    before_write: Option<tests::Hook>,
    #[cfg(test)]
    before_checkpoint: Option<tests::Hook>,
}

impl FileStore {
    /// Uses (and creates) `root`. Removes the files an earlier run made
    /// ahead of use and never gave an upload bytes (see [`prepared`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataError> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let prepared = Arc::new(Prepared::open(&root));
        // The first uploads after a start find files made already.
        prepared.refill();
        Ok(FileStore {
            prepared,
            root,
            modes: Arc::new(Modes {
                direct: AtomicBool::new(false),
                uncached: AtomicBool::new(true),
            }),
            writers: Arc::default(),
            #[cfg(test)]
            before_write: None,
            #[cfg(test)]
            before_checkpoint: None,
        })
    }

    /// Whether to write whole blocks with direct I/O (`O_DIRECT`, where the
    /// filesystem allows it): no copy into the page cache and no writeback
    /// later. Off (the default), every byte goes through the page cache.
    pub fn direct_io(self, on: bool) -> Self {
        self.modes
            .direct
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Whether to write through the page cache with `RWF_DONTCACHE`
    /// (Linux 6.14 and later, on by default where the kernel and filesystem
    /// take it): pages are dropped once written back, instead of filling
    /// memory with upload bytes nobody reads soon. Off, they stay cached.
    pub fn uncached_writes(self, on: bool) -> Self {
        self.modes
            .uncached
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// The file holding an upload's bytes: `root/<id>` while it is being
    /// written, `root/<destination>` once a finished upload was moved to
    /// the destination a hook chose. Ids are `[A-Za-z0-9_-]` and
    /// destinations are validated relative paths, so this never leaves
    /// `root`.
    pub fn path(&self, info: &UploadInfo) -> PathBuf {
        match info.storage.get("path").and_then(|p| p.as_str()) {
            Some(dest) => self.root.join(dest),
            None => self.root.join(info.id.as_str()),
        }
    }

    /// [`DataStore::writer`] on the blocking pool: opens the file (or
    /// takes the one made ahead of use, `ahead`), checks its length against
    /// the offset and cuts what was never acknowledged. A file made ahead
    /// of use needs no directory sync, unless it is gone and made again
    /// here.
    async fn open_writer(
        &self,
        info: &UploadInfo,
        ahead: Option<Ahead>,
        shared: &writer::Shared,
        permit: IoPermit,
    ) -> Result<Box<dyn UploadWriter>, DataError> {
        let path = self.path(info);
        let offset = info.offset;
        let held = permit.clone();
        let mut dir = path.parent().map(Path::to_path_buf);
        let modes = self.modes.clone();
        let (target, ahead) = tokio::task::spawn_blocking(move || {
            let _held = held;
            // No acknowledged byte yet: the file may not have survived a
            // crash since `create`, which is the same as empty.
            let by_path = |create| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(create)
                    .open(&path)
            };
            let (file, ahead) = match ahead {
                Some(Ahead::Open(file)) => (file, true),
                Some(Ahead::Closed) => match by_path(false) {
                    Ok(file) => (file, true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (by_path(true)?, false),
                    Err(e) => return Err(e),
                },
                None => (by_path(offset == 0)?, false),
            };
            // Bytes past the acknowledged offset were never reported to a
            // client (crash, discarded chunk): drop them.
            let len = file.metadata()?.len();
            if len < offset {
                // Acknowledged bytes are gone: never pad them with zeros.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("upload file holds {len} bytes, {offset} were acknowledged"),
                ));
            }
            if len > offset {
                file.set_len(offset)?;
            }
            Ok((
                writer::open_target(file, &path, offset, &modes.direct)?,
                ahead,
            ))
        })
        .await
        .map_err(|e| DataError::Backend(crate::error::caused("blocking task failed", e)))?
        .map_err(missing(info))?;
        if ahead {
            dir = None;
        }
        Ok(Box::new(FileWriter::new(
            target,
            dir,
            offset,
            shared,
            permit,
            info.storage.clone(),
        )))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, DataError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataError::Backend(crate::error::caused("blocking task failed", e)))?
        .map_err(DataError::from)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether two paths name the same file (one inode, two links).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Creates the file of an upload that ends with no bytes, if a crash took
/// it, and makes it and its directory entry durable.
fn make_durable_empty(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?
        .sync_all()?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn missing(info: &UploadInfo) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing(info.id.to_string())
        } else {
            DataError::from(e)
        }
    }
}

#[async_trait]
impl DataStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn create(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        if let Some(dest) = &info.destination {
            if tokio::fs::symlink_metadata(self.root.join(dest))
                .await
                .is_ok()
            {
                return Err(DataError::AlreadyExists(dest.clone()));
            }
        }
        // The file is not even created here: until an offset above 0 is
        // recorded, a missing file is an empty one (the first `writer`
        // creates it and its first `sync` also syncs the directory; `finish`
        // of an empty upload creates it durably). That saves a trip to the
        // blocking pool, a file creation and two syncs per upload.
        Ok(serde_json::Value::Null)
    }

    fn fresh_id(&self) -> Option<UploadId> {
        self.prepared.take()
    }

    fn give_back(&self, id: UploadId) {
        self.prepared.give_back(id);
    }

    fn unrecorded(&self) -> Vec<UploadId> {
        self.prepared.unchecked()
    }

    async fn remove_unrecorded(&self, orphans: &[UploadId]) -> Result<usize, DataError> {
        let (prepared, orphans) = (self.prepared.clone(), orphans.to_vec());
        blocking(move || prepared.remove_unchecked(&orphans)).await
    }

    async fn writer(
        &self,
        info: &UploadInfo,
        permit: IoPermit,
    ) -> Result<Box<dyn UploadWriter>, DataError> {
        let shared = writer::Shared {
            modes: self.modes.clone(),
            writers: self.writers.clone(),
            #[cfg(test)]
            before_write: self.before_write.clone(),
            #[cfg(test)]
            before_checkpoint: self.before_checkpoint.clone(),
        };
        // A file made ahead of use already has a durable directory entry;
        // the most recently handed out are open already.
        let ahead = match info.offset {
            0 => self.prepared.opening(&info.id),
            _ => None,
        };
        let direct = self.modes.direct.load(std::sync::atomic::Ordering::Relaxed);
        match ahead {
            // Empty, and nobody else writes to it: nothing to check or cut,
            // so no trip to the blocking pool. (With direct I/O, a direct
            // handle is opened by path there; this one is reused.)
            Some(Ahead::Open(file)) if !direct => {
                let target = writer::open_target(file, &self.path(info), 0, &self.modes.direct)
                    .map_err(DataError::from)?;
                let storage = info.storage.clone();
                Ok(Box::new(FileWriter::new(
                    target, None, 0, &shared, permit, storage,
                )))
            }
            ahead => self.open_writer(info, ahead, &shared, permit).await,
        }
    }

    async fn finish(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        let Some(dest) = info.destination.clone() else {
            if info.offset == 0 && info.storage.get("path").is_none() {
                // No writer ever synced this file (see `create`), and an
                // empty file made ahead of use would be removed at start.
                let (path, prepared, id) =
                    (self.path(info), self.prepared.clone(), info.id.clone());
                blocking(move || {
                    prepared.keep(&id)?;
                    make_durable_empty(&path)
                })
                .await?;
            }
            return Ok(info.storage.clone());
        };
        if info.storage.get("path").is_some() {
            return Ok(info.storage.clone());
        }
        let (from, to) = (self.path(info), self.root.join(&dest));
        let len = info.offset;
        let empty = info.offset == 0;
        blocking(move || {
            if empty {
                make_durable_empty(&from)?;
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // A hard link fails if the destination exists: never overwrite.
            match std::fs::hard_link(&from, &to) {
                Ok(()) => {}
                // An earlier finish got this far, then the process died
                // before the record said so: the file has both names, or
                // only the new one (the destination was claimed for this
                // upload, and it holds every byte).
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists && same_file(&from, &to) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && !from.exists()
                        && std::fs::metadata(&to).is_ok_and(|m| m.len() == len) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            std::fs::remove_file(&from)?;
            if let Some(parent) = to.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| match e {
            DataError::Io(io) if io.kind() == std::io::ErrorKind::AlreadyExists => {
                DataError::AlreadyExists(dest.clone())
            }
            e => e,
        })?;
        Ok(serde_json::json!({ "path": dest }))
    }

    async fn read(&self, info: &UploadInfo, start: u64, end: u64) -> Result<ByteStream, DataError> {
        let file = tokio::fs::File::open(self.path(info))
            .await
            .map_err(missing(info))?
            .into_std()
            .await;
        Ok(read::stream(file, start, end))
    }

    async fn delete(&self, info: &UploadInfo) -> Result<(), DataError> {
        self.prepared.forget(&info.id);
        match tokio::fs::remove_file(self.path(info)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn concatenate(
        &self,
        target: &UploadInfo,
        parts: &[UploadInfo],
    ) -> Result<serde_json::Value, DataError> {
        let target_path = self.path(target);
        let sources: Vec<PathBuf> = parts.iter().map(|p| self.path(p)).collect();
        let root = self.root.clone();
        let (prepared, id) = (self.prepared.clone(), target.id.clone());
        blocking(move || {
            // The target may be an empty file made ahead of use, and may
            // stay empty.
            prepared.keep(&id)?;
            let mut out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&target_path)?;
            for src in &sources {
                // std::io::copy uses copy_file_range on Linux: no bytes pass
                // through user space.
                std::io::copy(&mut File::open(src)?, &mut out)?;
            }
            out.sync_all()?;
            sync_dir(&root)
        })
        .await?;
        Ok(serde_json::Value::Null)
    }

    async fn ping(&self) -> Result<(), DataError> {
        tokio::fs::metadata(&self.root).await?;
        Ok(())
    }

    fn describe(&self, info: &UploadInfo) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([
            ("Type".to_owned(), "filestore".to_owned()),
            ("Path".to_owned(), self.path(info).display().to_string()),
        ])
    }

    async fn space(&self) -> Result<Option<super::Space>, DataError> {
        let root = self.root.clone();
        blocking(move || statvfs(&root)).await.map(Some)
    }
}

/// Free (for unprivileged writers) and total bytes of the file system
/// holding `path`.
fn statvfs(path: &Path) -> std::io::Result<super::Space> {
    let (free, total) = crate::sys::space(path)?;
    Ok(super::Space { free, total })
}

#[cfg(test)]
mod restart_tests;
#[cfg(test)]
pub(crate) mod tests;
