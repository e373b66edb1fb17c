//! The writer of one request's bytes into an upload file. What it takes is
//! written on the blocking pool while the next bytes are received (an
//! upload has at most two writes' worth in memory), with writeback started
//! early, and `fdatasync`ed before an offset is acknowledged. See
//! [`super::pending`] for the two forms the bytes wait in.

use super::pending::{Extent, Pending};
use super::staged::{read_head, Target, ALIGN};
use super::{sync_dir, DataError, Modes};
use crate::data::{Checkpoint, Durable, IoPermit, UploadWriter};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One writer counted in the store's `writers` while it lives.
pub(super) struct Active(Arc<AtomicUsize>);

impl Active {
    pub(super) fn join(writers: &Arc<AtomicUsize>) -> Self {
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

/// When bytes go through the page cache, writeback is started for every
/// this many bytes written (one larger range, not one per write: fewer,
/// larger disk writes)...
pub(super) const WRITEBACK: u64 = 8 * 1024 * 1024;
/// ...after a ramp that starts at this many and doubles: a short PATCH has
/// most of its bytes on their way to the disk when its `fdatasync` comes.
const FIRST_WRITEBACK: u64 = 1024 * 1024;

/// How many bytes written past the last started writeback start the next
/// one, after `kicks` have been started by this writer.
pub(super) fn writeback_step(kicks: u32) -> u64 {
    FIRST_WRITEBACK
        .checked_shl(kicks)
        .map_or(WRITEBACK, |step| step.min(WRITEBACK))
}

/// Bytes of a request written as usual before `RWF_DONTCACHE` is used.
const UNCACHED_AFTER: u64 = 1024 * 1024;

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

/// What a writer needs from its store.
pub(super) struct Shared {
    pub(super) modes: Arc<Modes>,
    pub(super) writers: Arc<AtomicUsize>,
    #[cfg(test)]
    pub(super) before_write: Option<super::tests::Hook>,
    #[cfg(test)]
    pub(super) before_checkpoint: Option<super::tests::Hook>,
}

pub(super) struct FileWriter {
    target: Arc<Target>,
    /// The directory to sync after the first `fdatasync` (a file created
    /// without syncing, see `FileStore::create`); `None` once done.
    dir: Option<PathBuf>,
    /// Moved (cloned) into every write on the blocking pool: such a write
    /// outlives a dropped request, and the next writer must wait for it.
    permit: IoPermit,
    modes: Arc<Modes>,
    #[cfg(test)]
    before_write: Option<super::tests::Hook>,
    #[cfg(test)]
    before_checkpoint: Option<super::tests::Hook>,
    /// Bytes taken and not yet handed to a write. Its end is the file
    /// position after every byte taken.
    pending: Pending,
    /// Memory back from a write, for reuse.
    spare: Option<Pending>,
    /// The previous write, going on while the next bytes are taken, and
    /// the file position every byte before which is in the file once it
    /// ends.
    in_flight: Option<(tokio::task::JoinHandle<std::io::Result<Pending>>, u64)>,
    /// Every byte before this position is in the file (not necessarily
    /// durable): the writes that put them there ended without error.
    landed: u64,
    /// Counts this writer among those sharing the budget.
    writers: Active,
    /// File position when this writer was opened (its request's first byte).
    start: u64,
    /// Where the range not yet handed to writeback starts.
    kicked: u64,
    /// How many writebacks this writer started (see [`writeback_step`]).
    kicks: u32,
    /// Bytes known durable; raised by a checkpoint (see `checkpoint`).
    durable: Arc<AtomicU64>,
    storage: serde_json::Value,
}

/// Opens the target of a writer appending at `offset` to `file` (open at
/// `path`, holding exactly `offset` bytes), on the blocking pool. With
/// direct I/O, also reads the partial block before `offset`: that block is
/// written again, whole.
pub(super) fn open_target(
    file: File,
    path: &std::path::Path,
    offset: u64,
    direct: &AtomicBool,
) -> std::io::Result<(Target, Vec<u8>)> {
    let target = Target::open(file, path, direct);
    let head = match target.is_direct() {
        true => read_head(&target.file, offset)?,
        false => Vec::new(),
    };
    Ok((target, head))
}

impl FileWriter {
    /// A writer appending at `offset` to `target` (see [`open_target`]).
    /// Its memory is allocated here, on the caller's thread, not on the
    /// blocking pool (where each thread may get a malloc arena of its own).
    pub(super) fn new(
        (target, head): (Target, Vec<u8>),
        dir: Option<PathBuf>,
        offset: u64,
        shared: &Shared,
        permit: IoPermit,
        storage: serde_json::Value,
    ) -> Self {
        let writers = Active::join(&shared.writers);
        FileWriter {
            pending: Pending::new(target.is_direct(), offset, &head, writers.count()),
            target: Arc::new(target),
            // Whether the file's directory entry may not be durable yet.
            dir: dir.filter(|_| offset == 0),
            permit,
            modes: shared.modes.clone(),
            #[cfg(test)]
            before_write: shared.before_write.clone(),
            #[cfg(test)]
            before_checkpoint: shared.before_checkpoint.clone(),
            spare: None,
            in_flight: None,
            landed: offset,
            writers,
            start: offset,
            kicked: offset,
            kicks: 0,
            durable: Arc::new(AtomicU64::new(offset)),
            storage,
        }
    }

    /// File position after every byte taken.
    fn written(&self) -> u64 {
        self.pending.end()
    }

    /// Waits for the write in flight, if any.
    async fn settle(&mut self) -> Result<(), DataError> {
        if let Some((task, upto)) = self.in_flight.take() {
            let done = task.await.map_err(|e| {
                DataError::Backend(crate::error::caused("blocking task failed", e))
            })??;
            self.spare = Some(done);
            self.landed = self.landed.max(upto);
        }
        Ok(())
    }

    /// Starts writing `extent` of what is pending in the background, after
    /// the previous write finished (writes land in order).
    async fn submit(&mut self, extent: Extent) -> Result<(), DataError> {
        self.settle().await?;
        let writes = self.pending.writes(extent);
        if !writes && extent != Extent::Durable {
            return Ok(());
        }
        let end = self.written();
        let budget = self.pending.budget();
        let room = budget.target(end - self.start, self.writers.count()) + ALIGN;
        let mut job = self.pending.split(room, self.spare.take());
        let upto = self.pending.start();
        let kick = (end - self.kicked >= writeback_step(self.kicks)).then(|| {
            let range = (self.kicked, end - self.kicked);
            self.kicked = end;
            self.kicks = self.kicks.saturating_add(1);
            range
        });
        let (target, permit) = (self.target.clone(), self.permit.clone());
        let modes = self.modes.clone();
        // A small upload is written as usual: for 64 KiB uploads, starting
        // writeback at the write and dropping the pages cost more than the
        // fdatasync that follows saves.
        let uncached = end - self.start >= UNCACHED_AFTER;
        let dir = match extent {
            Extent::Durable => self.dir.clone(),
            _ => None,
        };
        #[cfg(test)]
        let hook = self.before_write.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if writes {
                #[cfg(test)]
                if let Some(hook) = hook {
                    (hook.0)();
                }
                let cached = job.write(
                    &target,
                    extent,
                    &modes.direct,
                    uncached.then_some(&modes.uncached),
                )?;
                if let Some((from, len)) = kick.filter(|_| cached && extent == Extent::Blocks) {
                    start_writeback(&target.file, from, len);
                }
            }
            if extent == Extent::Durable {
                target.file.sync_data()?;
                if let Some(dir) = dir {
                    sync_dir(&dir)?;
                }
            }
            Ok(job)
        });
        self.in_flight = Some((task, upto));
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for FileWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), DataError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            rest = self.pending.take(rest);
            let taken = self.written() - self.start;
            let target = self.pending.budget().target(taken, self.writers.count());
            if self.pending.full() || self.pending.len() >= target {
                self.submit(Extent::Blocks).await?;
            }
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<Durable, DataError> {
        self.settle().await?;
        let written = self.written();
        if self.durable.load(Ordering::Acquire) != written {
            // The last bytes and the fdatasync in one trip to the blocking pool.
            self.submit(Extent::Durable).await?;
            self.settle().await?;
            self.dir = None;
            self.durable.store(written, Ordering::Release);
        }
        Ok(Durable {
            offset: written,
            storage: self.storage.clone(),
        })
    }

    async fn discard(&mut self) -> Result<Durable, DataError> {
        // Whatever the write in flight did is cut off below.
        let _ = self.settle().await;
        let durable = self.durable.load(Ordering::Acquire);
        if self.written() != durable {
            let (target, permit) = (self.target.clone(), self.permit.clone());
            let run = self.pending.is_run();
            let head = super::blocking(move || {
                let _permit = permit;
                target.file.set_len(durable)?;
                match run {
                    true => read_head(&target.file, durable),
                    false => Ok(Vec::new()),
                }
            })
            .await?;
            self.pending.restart(durable, &head);
            self.kicked = self.kicked.min(durable);
        }
        Ok(Durable {
            offset: durable,
            storage: self.storage.clone(),
        })
    }

    async fn salvage(&mut self) -> Result<Durable, DataError> {
        // A write that failed put an unknown part of its bytes in the file:
        // keep what the writes before it put there, whole.
        let _ = self.settle().await;
        let durable = self.durable.load(Ordering::Acquire);
        let keep = self.landed.max(durable);
        if keep == durable {
            return self.discard().await;
        }
        let (target, permit, dir) = (self.target.clone(), self.permit.clone(), self.dir.clone());
        let run = self.pending.is_run();
        let cut = super::blocking(move || {
            let _permit = permit;
            // Shortening frees blocks, so this works on a full disk.
            target.file.set_len(keep)?;
            target.file.sync_data()?;
            if let Some(dir) = dir {
                sync_dir(&dir)?;
            }
            match run {
                true => read_head(&target.file, keep),
                false => Ok(Vec::new()),
            }
        })
        .await;
        match cut {
            Ok(head) => {
                self.pending.restart(keep, &head);
                self.kicked = self.kicked.min(keep);
                self.dir = None;
                self.durable.store(keep, Ordering::Release);
                Ok(Durable {
                    offset: keep,
                    storage: self.storage.clone(),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the bytes written before a storage failure failed; back to the last durable point");
                self.discard().await
            }
        }
    }

    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, DataError> {
        // Every byte taken in the file first (at most two writes to wait
        // for); the fdatasync then runs beside the writes that follow,
        // which land past `upto` or rewrite the same bytes before it.
        self.submit(Extent::All).await?;
        self.settle().await?;
        let upto = self.written();
        let (target, dir, permit) = (self.target.clone(), self.dir.take(), self.permit.clone());
        let (durable, storage) = (self.durable.clone(), self.storage.clone());
        #[cfg(test)]
        let hook = self.before_checkpoint.clone();
        let task = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let _permit = permit;
            #[cfg(test)]
            if let Some(hook) = hook {
                (hook.0)();
            }
            target.file.sync_data()?;
            if let Some(dir) = dir {
                sync_dir(&dir)?;
            }
            durable.fetch_max(upto, Ordering::AcqRel);
            Ok(())
        });
        Ok(Some(Box::pin(async move {
            task.await.map_err(|e| {
                DataError::Backend(crate::error::caused("blocking task failed", e))
            })??;
            Ok(Durable {
                offset: upto,
                storage,
            })
        })))
    }
}
