//! `DataStore` on a local directory: one file per upload. Received chunks
//! are written as they came (vectored writes, no copy into a buffer), one
//! batch on the blocking pool while the next one is received, and
//! `fdatasync`ed before an offset is acknowledged.

use super::{ByteStream, DataError, DataStore, Durable, UploadWriter};
use crate::model::UploadInfo;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Read size when streaming a download: large reads, few syscalls.
const READ_CHUNK: usize = 1024 * 1024;

/// Upload bytes as files under one directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Uses (and creates) `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataError> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FileStore { root })
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
        let (path, root) = (self.path(info), self.root.clone());
        blocking(move || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?
                .sync_all()?;
            sync_dir(&root)
        })
        .await?;
        Ok(serde_json::Value::Null)
    }

    async fn writer(&self, info: &UploadInfo) -> Result<Box<dyn UploadWriter>, DataError> {
        let path = self.path(info);
        let offset = info.offset;
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            let file = OpenOptions::new().write(true).open(&path)?;
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
            batch: Vec::new(),
            batch_len: 0,
            in_flight: None,
            written: offset,
            kicked: offset,
            durable: offset,
            storage: info.storage.clone(),
        }))
    }

    async fn finish(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        let Some(dest) = info.destination.clone() else {
            return Ok(info.storage.clone());
        };
        if info.storage.get("path").is_some() {
            return Ok(info.storage.clone());
        }
        let (from, to) = (self.path(info), self.root.join(&dest));
        let len = info.offset;
        blocking(move || {
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

/// Received chunks gathered (not copied) before one vectored write. While
/// one batch is written on the blocking pool the next one is received, so
/// an upload holds at most two batches.
const BATCH: usize = 512 * 1024;
/// Writeback is started for every this many bytes written (one larger
/// range, not one per batch: fewer, larger disk writes).
const WRITEBACK: u64 = 8 * 1024 * 1024;

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
    /// Chunks received since the last submitted write.
    batch: Batch,
    batch_len: usize,
    /// The previous batch's write, running while the next batch fills.
    in_flight: Option<tokio::task::JoinHandle<std::io::Result<Batch>>>,
    /// File position after `batch` is written.
    written: u64,
    /// Where the range not yet handed to writeback starts.
    kicked: u64,
    durable: u64,
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
        let kick = (self.written - self.kicked >= WRITEBACK).then(|| {
            let range = (self.kicked, self.written - self.kicked);
            self.kicked = self.written;
            range
        });
        let file = self.file.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
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
        if self.batch_len >= BATCH {
            self.submit().await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<Durable, DataError> {
        self.settle().await?;
        if self.durable != self.written {
            // The last batch and the fdatasync in one trip to the pool.
            let batch = std::mem::take(&mut self.batch);
            let pos = self.written - self.batch_len as u64;
            self.batch_len = 0;
            let file = self.file.clone();
            self.batch = blocking(move || {
                let batch = if batch.is_empty() {
                    batch
                } else {
                    write_batch(&file, pos, batch, None)?
                };
                file.sync_data()?;
                Ok(batch)
            })
            .await?;
            self.durable = self.written;
        }
        Ok(Durable {
            offset: self.durable,
            storage: self.storage.clone(),
        })
    }

    async fn discard(&mut self) -> Result<Durable, DataError> {
        // Whatever the write in flight did is cut off below.
        let _ = self.settle().await;
        self.batch.clear();
        self.batch_len = 0;
        if self.written != self.durable {
            let (file, len) = (self.file.clone(), self.durable);
            blocking(move || {
                file.set_len(len)?;
                (&*file).seek(SeekFrom::Start(len)).map(|_| ())
            })
            .await?;
            self.written = self.durable;
            self.kicked = self.kicked.min(self.durable);
        }
        Ok(Durable {
            offset: self.durable,
            storage: self.storage.clone(),
        })
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;
    use crate::model::Concat;
    use crate::protocol::UploadId;

    /// Moving a finished upload to its destination is a link and an
    /// unlink; the process may die after either, before the record says
    /// the upload is finished. Finishing again from the old record must
    /// succeed and leave the bytes at the destination.
    #[tokio::test]
    async fn finish_again_after_a_crash_while_moving_to_the_destination() {
        for crash_after_unlink in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = FileStore::open(dir.path()).unwrap();
            let bytes = b"every byte of the upload".to_vec();
            let mut info = UploadInfo {
                id: UploadId::generate(),
                length: Some(bytes.len() as u64),
                offset: 0,
                metadata: None,
                concat: Concat::None,
                created_at: 0,
                expires_at: None,
                finished: false,
                storage: serde_json::Value::Null,
                destination: Some("videos/a.bin".to_owned()),
                finish_hook_pending: false,
            };
            info.storage = store.create(&info).await.unwrap();
            let mut writer = store.writer(&info).await.unwrap();
            writer.write(Bytes::from(bytes.clone())).await.unwrap();
            info.offset = writer.sync().await.unwrap().offset;

            // The first finish, cut short by the crash.
            let (from, to) = (store.path(&info), dir.path().join("videos/a.bin"));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::hard_link(&from, &to).unwrap();
            if crash_after_unlink {
                std::fs::remove_file(&from).unwrap();
            }

            let storage = store.finish(&info).await.unwrap_or_else(|e| {
                panic!("crash after unlink {crash_after_unlink}: finishing again failed: {e}")
            });
            assert_eq!(storage, serde_json::json!({ "path": "videos/a.bin" }));
            assert!(!from.exists());
            assert_eq!(std::fs::read(&to).unwrap(), bytes);
        }
    }
}
