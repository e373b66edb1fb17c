//! `DataStore` on a local directory: one file per upload, appended with
//! positioned writes and `fdatasync`ed before an offset is acknowledged.

use super::{ByteStream, DataError, DataStore, Durable, UploadWriter};
use crate::model::UploadInfo;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Bytes gathered in memory before one positioned write.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Read size when streaming a download.
const READ_CHUNK: usize = 256 * 1024;

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
            buf: Vec::with_capacity(WRITE_BUFFER),
            written: offset,
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
        blocking(move || {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // A hard link fails if the destination exists: never overwrite.
            std::fs::hard_link(&from, &to)?;
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

struct FileWriter {
    file: Arc<File>,
    buf: Vec<u8>,
    /// File position after `buf` is written.
    written: u64,
    durable: u64,
    storage: serde_json::Value,
}

impl FileWriter {
    async fn flush_buf(&mut self) -> Result<(), DataError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let pos = self.written - buf.len() as u64;
        let file = self.file.clone();
        let buf = blocking(move || file.write_all_at(&buf, pos).map(|()| buf)).await?;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for FileWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), DataError> {
        if self.buf.len() + chunk.len() > WRITE_BUFFER {
            self.flush_buf().await?;
        }
        self.written += chunk.len() as u64;
        if chunk.len() >= WRITE_BUFFER {
            // Large chunks go straight to the file.
            let (file, pos) = (self.file.clone(), self.written - chunk.len() as u64);
            blocking(move || file.write_all_at(&chunk, pos)).await?;
        } else {
            self.buf.extend_from_slice(&chunk);
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<Durable, DataError> {
        self.flush_buf().await?;
        if self.durable != self.written {
            let file = self.file.clone();
            blocking(move || file.sync_data()).await?;
            self.durable = self.written;
        }
        Ok(Durable {
            offset: self.durable,
            storage: self.storage.clone(),
        })
    }

    async fn discard(&mut self) -> Result<Durable, DataError> {
        self.buf.clear();
        if self.written != self.durable {
            let (file, len) = (self.file.clone(), self.durable);
            blocking(move || {
                file.set_len(len)?;
                (&*file).seek(SeekFrom::Start(len)).map(|_| ())
            })
            .await?;
            self.written = self.durable;
        }
        Ok(Durable {
            offset: self.durable,
            storage: self.storage.clone(),
        })
    }
}
