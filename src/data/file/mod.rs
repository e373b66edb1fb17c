//! `DataStore` on a local directory: one file per upload. Received chunks
//! are written as they came (vectored writes, no copy into a buffer), one
//! batch on the blocking pool while the next one is received, and
//! `fdatasync`ed before an offset is acknowledged.

use super::{ByteStream, Checkpoint, DataError, DataStore, Durable, IoPermit, UploadWriter};
use crate::model::UploadInfo;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Read size when streaming a download: large reads, few syscalls.
const READ_CHUNK: usize = 1024 * 1024;

/// Upload bytes as files under one directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    /// Writers alive now: they share the batch budget.
    writers: Arc<AtomicUsize>,
    /// Runs on the blocking pool before each batch is written (tests hold
    /// a write there).
    #[cfg(test)]
    before_write: Option<tests::Hook>,
    #[cfg(test)]
    before_checkpoint: Option<tests::Hook>,
}

impl FileStore {
    /// Uses (and creates) `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataError> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FileStore {
            root,
            writers: Arc::default(),
            #[cfg(test)]
            before_write: None,
            #[cfg(test)]
            before_checkpoint: None,
        })
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
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, DataError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataError::Backend(format!("blocking task failed: {e}")))?
        .map_err(DataError::Io)
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
            DataError::Io(e)
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

    async fn writer(
        &self,
        info: &UploadInfo,
        permit: IoPermit,
    ) -> Result<Box<dyn UploadWriter>, DataError> {
        let path = self.path(info);
        let dir = path.parent().map(Path::to_path_buf);
        let offset = info.offset;
        let held = permit.clone();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            let _held = held;
            // No acknowledged byte yet: the file may not have survived a
            // crash since `create`, which is the same as empty.
            let file = OpenOptions::new()
                .write(true)
                .create(offset == 0)
                .open(&path)?;
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
            Ok(file)
        })
        .await
        .map_err(|e| DataError::Backend(format!("blocking task failed: {e}")))?
        .map_err(missing(info))?;
        Ok(Box::new(FileWriter {
            file: Arc::new(file),
            // Whether the file's directory entry may not be durable yet.
            dir: dir.filter(|_| offset == 0),
            permit,
            #[cfg(test)]
            before_write: self.before_write.clone(),
            #[cfg(test)]
            before_checkpoint: self.before_checkpoint.clone(),
            batch: Vec::new(),
            batch_len: 0,
            in_flight: None,
            writers: Active::join(&self.writers),
            start: offset,
            written: offset,
            kicked: offset,
            kicks: 0,
            durable: Arc::new(AtomicU64::new(offset)),
            storage: info.storage.clone(),
        }))
    }

    async fn finish(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        let Some(dest) = info.destination.clone() else {
            if info.offset == 0 && info.storage.get("path").is_none() {
                // No writer ever synced this file (see `create`).
                let path = self.path(info);
                blocking(move || make_durable_empty(&path)).await?;
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
        let mut file = tokio::fs::File::open(self.path(info))
            .await
            .map_err(missing(info))?;
        if start > 0 {
            tokio::io::AsyncSeekExt::seek(&mut file, SeekFrom::Start(start)).await?;
        }
        let reader = file.take(end.saturating_sub(start));
        Ok(
            tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK)
                .map(|r| r.map_err(DataError::Io))
                .boxed(),
        )
    }

    async fn delete(&self, info: &UploadInfo) -> Result<(), DataError> {
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
        blocking(move || {
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
}

/// Received chunks are gathered (not copied) into a batch before one
/// vectored write on the blocking pool; while one batch is written the next
/// one is received, so an upload holds at most two. Batches grow with the
/// request: a short PATCH (tus-js-client's 5 MiB chunks) starts writing,
/// and its writeback, early; a long one makes fewer, larger trips to the
/// pool (2 MiB batches: a tenth less CPU per GiB than 512 KiB; larger ones
/// fall out of the CPU cache before they are copied into the page cache).
const BATCH_MIN: usize = 512 * 1024;
const BATCH_MAX: usize = 2 * 1024 * 1024;
/// What the batches of all writers should hold together: with many uploads
/// at once, batches stay at [`BATCH_MIN`].
const BATCH_BUDGET: usize = 32 * 1024 * 1024;

/// The batch size for a writer that has taken `taken` bytes of its request,
/// with `writers` writers alive.
fn batch_target(taken: u64, writers: usize) -> usize {
    const MIB: u64 = 1024 * 1024;
    let ramp = match taken {
        t if t < 4 * MIB => BATCH_MIN,
        t if t < 16 * MIB => 2 * BATCH_MIN,
        _ => BATCH_MAX,
    };
    ramp.min(BATCH_BUDGET / writers.max(1)).max(BATCH_MIN)
}

/// One writer counted in [`FileStore`]'s `writers` while it lives.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn join(writers: &Arc<AtomicUsize>) -> Self {
        writers.fetch_add(1, Ordering::Relaxed);
        Active(writers.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writeback is started for every this many bytes written (one larger
/// range, not one per batch: fewer, larger disk writes)...
const WRITEBACK: u64 = 8 * 1024 * 1024;
/// ...after a ramp that starts at this many and doubles: a short PATCH
/// (tus-js-client's 5 MiB chunks) has most of its bytes on their way to
/// the disk when its closing `fdatasync` comes.
const FIRST_WRITEBACK: u64 = 1024 * 1024;

/// How many bytes written past the last started writeback start the next
/// one, after `kicks` have been started by this writer.
fn writeback_step(kicks: u32) -> u64 {
    FIRST_WRITEBACK
        .checked_shl(kicks)
        .map_or(WRITEBACK, |step| step.min(WRITEBACK))
}

/// A batch of received chunks.
type Batch = Vec<Bytes>;

/// Writes `batch` at `pos` with as few `writev` calls as the kernel allows,
/// then starts writeback of `kick` (offset, length) if given; returns the
/// emptied batch for reuse.
fn write_batch(
    file: &File,
    pos: u64,
    mut batch: Batch,
    kick: Option<(u64, u64)>,
) -> std::io::Result<Batch> {
    let mut f = file;
    f.seek(SeekFrom::Start(pos))?;
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    drop(slices);
    if let Some((from, len)) = kick {
        start_writeback(file, from, len);
    }
    batch.clear();
    Ok(batch)
}

/// Asks the kernel to start writing a range back now, so the fdatasync at
/// the next checkpoint finds little left to do. Only a hint: durability
/// still comes from `sync_data` alone.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, pos: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // open for the duration of the call (borrowed from `file`).
    let _ = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            pos as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _pos: u64, _len: u64) {}

struct FileWriter {
    file: Arc<File>,
    /// The directory to sync after the first `fdatasync` (a file created
    /// without syncing, see `FileStore::create`); `None` once done.
    dir: Option<PathBuf>,
    /// Moved (cloned) into every write on the blocking pool: such a write
    /// outlives a dropped request, and the next writer must wait for it.
    permit: IoPermit,
    #[cfg(test)]
    before_write: Option<tests::Hook>,
    #[cfg(test)]
    before_checkpoint: Option<tests::Hook>,
    /// Chunks received since the last submitted write.
    batch: Batch,
    batch_len: usize,
    /// The previous batch's write, running while the next batch fills.
    in_flight: Option<tokio::task::JoinHandle<std::io::Result<Batch>>>,
    /// Counts this writer among those sharing the batch budget.
    writers: Active,
    /// File position when this writer was opened (its request's first byte).
    start: u64,
    /// File position after `batch` is written.
    written: u64,
    /// Where the range not yet handed to writeback starts.
    kicked: u64,
    /// How many writebacks this writer started (see [`writeback_step`]).
    kicks: u32,
    /// Bytes known durable; raised by a checkpoint (see `checkpoint`).
    durable: Arc<AtomicU64>,
    storage: serde_json::Value,
}

impl FileWriter {
    /// Waits for the write in flight, if any.
    async fn settle(&mut self) -> Result<(), DataError> {
        if let Some(task) = self.in_flight.take() {
            let spare = task
                .await
                .map_err(|e| DataError::Backend(format!("blocking task failed: {e}")))??;
            if self.batch.is_empty() && self.batch.capacity() < spare.capacity() {
                self.batch = spare;
            }
        }
        Ok(())
    }

    /// Starts writing the current batch in the background (after the
    /// previous write finished: writes land in order).
    async fn submit(&mut self) -> Result<(), DataError> {
        self.settle().await?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let pos = self.written - self.batch_len as u64;
        self.batch_len = 0;
        let kick = (self.written - self.kicked >= writeback_step(self.kicks)).then(|| {
            let range = (self.kicked, self.written - self.kicked);
            self.kicked = self.written;
            self.kicks = self.kicks.saturating_add(1);
            range
        });
        let file = self.file.clone();
        let permit = self.permit.clone();
        #[cfg(test)]
        let hook = self.before_write.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            #[cfg(test)]
            if let Some(hook) = hook {
                (hook.0)();
            }
            write_batch(&file, pos, batch, kick)
        }));
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for FileWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), DataError> {
        self.written += chunk.len() as u64;
        self.batch_len += chunk.len();
        self.batch.push(chunk);
        if self.batch_len >= batch_target(self.written - self.start, self.writers.count()) {
            self.submit().await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<Durable, DataError> {
        self.settle().await?;
        if self.durable.load(Ordering::Acquire) != self.written {
            // The last batch and the fdatasync in one trip to the pool.
            let batch = std::mem::take(&mut self.batch);
            let pos = self.written - self.batch_len as u64;
            self.batch_len = 0;
            let file = self.file.clone();
            let dir = self.dir.clone();
            let permit = self.permit.clone();
            #[cfg(test)]
            let hook = self.before_write.clone();
            self.batch = blocking(move || {
                let _permit = permit;
                let batch = if batch.is_empty() {
                    batch
                } else {
                    #[cfg(test)]
                    if let Some(hook) = hook {
                        (hook.0)();
                    }
                    write_batch(&file, pos, batch, None)?
                };
                file.sync_data()?;
                if let Some(dir) = dir {
                    sync_dir(&dir)?;
                }
                Ok(batch)
            })
            .await?;
            self.dir = None;
            self.durable.store(self.written, Ordering::Release);
        }
        Ok(Durable {
            offset: self.written,
            storage: self.storage.clone(),
        })
    }

    async fn discard(&mut self) -> Result<Durable, DataError> {
        // Whatever the write in flight did is cut off below.
        let _ = self.settle().await;
        self.batch.clear();
        self.batch_len = 0;
        let durable = self.durable.load(Ordering::Acquire);
        if self.written != durable {
            let (file, len) = (self.file.clone(), durable);
            let permit = self.permit.clone();
            blocking(move || {
                let _permit = permit;
                file.set_len(len)?;
                (&*file).seek(SeekFrom::Start(len)).map(|_| ())
            })
            .await?;
            self.written = durable;
            self.kicked = self.kicked.min(durable);
        }
        Ok(Durable {
            offset: durable,
            storage: self.storage.clone(),
        })
    }

    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, DataError> {
        // Every byte up to `written` in the file first (at most two batch
        // writes to wait for); the fdatasync then runs beside the writes
        // that follow, which land past `upto` (and use the file position
        // only from the one write task in flight).
        self.submit().await?;
        self.settle().await?;
        let upto = self.written;
        let (file, dir, permit) = (self.file.clone(), self.dir.take(), self.permit.clone());
        let (durable, storage) = (self.durable.clone(), self.storage.clone());
        #[cfg(test)]
        let hook = self.before_checkpoint.clone();
        let task = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let _permit = permit;
            #[cfg(test)]
            if let Some(hook) = hook {
                (hook.0)();
            }
            file.sync_data()?;
            if let Some(dir) = dir {
                sync_dir(&dir)?;
            }
            durable.fetch_max(upto, Ordering::AcqRel);
            Ok(())
        });
        Ok(Some(Box::pin(async move {
            task.await
                .map_err(|e| DataError::Backend(format!("blocking task failed: {e}")))??;
            Ok(Durable {
                offset: upto,
                storage,
            })
        })))
    }
}

#[cfg(test)]
mod restart_tests;
#[cfg(test)]
pub(crate) mod tests;
