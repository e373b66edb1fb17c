//! Bytes on their way into an upload file, staged in memory aligned for
//! direct I/O, and the writes that put them there: whole blocks, either
//! through the page cache (whole pages: no partial page to read and merge)
//! or, when the store is configured for it, straight to the device
//! (`O_DIRECT`: no copy into the page cache, no writeback later); the
//! partial last block through the page cache.
//!
//! A block that is written partially through the page cache and later
//! whole, directly, holds the same bytes in its first part both times: the
//! kernel writes back and drops the cached page before a direct write to
//! its range, so the file reads the same through either path.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment of direct writes: their file offset, length and memory
/// address. 4 KiB covers the logical block sizes of disks in use (512 B
/// and 4 KiB); a device that needs more answers `EINVAL`, and the store
/// then writes through the page cache (see [`Target::write_blocks`]).
pub(super) const ALIGN: usize = 4096;

/// `n` rounded down to a block boundary.
pub(super) fn align_down(n: u64) -> u64 {
    n & !(ALIGN as u64 - 1)
}

/// A run of an upload file's bytes that starts at a block boundary, in
/// memory that starts at an [`ALIGN`]ed address.
#[derive(Debug)]
pub(super) struct Staged {
    /// `lead` unused bytes, then the staged ones. Never filled past its
    /// capacity, so it never moves and the staged bytes stay aligned.
    buf: Vec<u8>,
    lead: usize,
    /// File position of the first staged byte (a block boundary).
    pos: u64,
}

impl Staged {
    /// An empty run at position 0 with room for `room` bytes.
    pub(super) fn new(room: usize) -> Self {
        let mut buf = Vec::with_capacity(room + ALIGN);
        let addr = buf.as_ptr() as usize;
        let lead = (ALIGN - addr % ALIGN) % ALIGN;
        buf.resize(lead, 0);
        Staged { buf, lead, pos: 0 }
    }

    /// The staged bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.lead..]
    }

    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.lead
    }

    /// How many bytes this run can hold in all.
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity() - self.lead
    }

    /// How many more bytes fit.
    pub(super) fn room(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    pub(super) fn pos(&self) -> u64 {
        self.pos
    }

    /// File position after the last staged byte.
    pub(super) fn end(&self) -> u64 {
        self.pos + self.len() as u64
    }

    /// Length of the whole blocks staged (what may be written directly).
    pub(super) fn whole(&self) -> usize {
        self.len() & !(ALIGN - 1)
    }

    /// Copies as much of `bytes` as fits; returns how much that was.
    pub(super) fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.buf.extend_from_slice(&bytes[..n]);
        n
    }

    /// Empties the run to stage from block boundary `pos` on, starting with
    /// `head`: the bytes the file already holds from `pos` (less than a
    /// block), so the block they share with what follows is written whole.
    pub(super) fn restart(&mut self, pos: u64, head: &[u8]) {
        debug_assert!(pos == align_down(pos) && head.len() < ALIGN);
        self.buf.truncate(self.lead);
        self.pos = pos;
        self.push(head);
    }
}

/// Reads the bytes of the partial block before `at` (none at a block
/// boundary): the head of the run that continues the file at `at`.
pub(super) fn read_head(file: &File, at: u64) -> io::Result<Vec<u8>> {
    let pos = align_down(at);
    let mut head = vec![0; (at - pos) as usize];
    file.read_exact_at(&mut head, pos)?;
    Ok(head)
}

/// An upload file, open through the page cache and, where the filesystem
/// allows, a second time for direct I/O.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) file: File,
    direct: Option<File>,
    /// For logs.
    path: PathBuf,
}

impl Target {
    /// Adds a direct handle to `file` (open at `path`) if `enabled` says the
    /// store may write directly; a filesystem that refuses turns it off.
    pub(super) fn open(file: File, path: &Path, enabled: &AtomicBool) -> Self {
        let direct = enabled
            .load(Ordering::Relaxed)
            .then(|| open_direct(path))
            .and_then(|opened| match opened {
                Ok(direct) => Some(direct),
                Err(e) if refused(&e) => {
                    refuse_direct(enabled, path, &e);
                    None
                }
                // Not the filesystem's answer (too many open files, say):
                // this writer alone goes through the page cache.
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "no direct handle");
                    None
                }
            });
        Target {
            file,
            direct,
            path: path.to_path_buf(),
        }
    }

    /// Whether this file has a direct handle.
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Writes `blocks` (whole blocks from an aligned address) at block
    /// boundary `pos`: directly if this file may, otherwise, or if the
    /// device refuses the alignment, through the page cache. Returns whether
    /// the bytes went through the page cache (and want writeback).
    pub(super) fn write_blocks(
        &self,
        blocks: &[u8],
        pos: u64,
        enabled: &AtomicBool,
    ) -> io::Result<bool> {
        let direct = self.direct.as_ref();
        if let Some(direct) = direct.filter(|_| enabled.load(Ordering::Relaxed)) {
            match direct.write_all_at(blocks, pos) {
                Ok(()) => return Ok(false),
                // Misaligned for this device: what went out directly is
                // written again, the same bytes, through the page cache.
                Err(e) if refused(&e) => {
                    refuse_direct(enabled, &self.path, &e);
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(blocks, pos)?;
        Ok(true)
    }

    /// Writes a run: its whole blocks as [`Target::write_blocks`] does and,
    /// if `partial`, the partial block after them through the page cache.
    /// Returns whether any bytes went through the page cache.
    pub(super) fn write_staged(
        &self,
        run: &Staged,
        partial: bool,
        enabled: &AtomicBool,
    ) -> io::Result<bool> {
        let (blocks, rest) = run.bytes().split_at(run.whole());
        let mut cached = !blocks.is_empty() && self.write_blocks(blocks, run.pos(), enabled)?;
        if partial && !rest.is_empty() {
            self.file
                .write_all_at(rest, run.pos() + blocks.len() as u64)?;
            cached = true;
        }
        Ok(cached)
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Whether an error is the filesystem or device refusing direct I/O.
fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL) || e.kind() == io::ErrorKind::Unsupported
}

/// Turns direct writes off for the store, saying so once.
fn refuse_direct(enabled: &AtomicBool, path: &Path, e: &io::Error) {
    if enabled.swap(false, Ordering::Relaxed) {
        tracing::warn!(
            path = %path.display(),
            error = %e,
            "direct I/O refused: upload files are written through the page cache from now on"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_start_aligned_and_keep_their_head() {
        for room in [1, ALIGN - 1, ALIGN, 100_000] {
            let mut run = Staged::new(room);
            assert_eq!(run.bytes().as_ptr() as usize % ALIGN, 0, "room {room}");
            assert!(run.capacity() >= room);
            run.restart(2 * ALIGN as u64, b"head");
            assert_eq!(run.push(&vec![7; run.capacity() + 1]), run.capacity() - 4);
            assert_eq!(run.room(), 0);
            assert_eq!(run.end(), run.pos() + run.capacity() as u64);
            assert_eq!(&run.bytes()[..4], b"head");
            assert_eq!(run.whole(), run.len() / ALIGN * ALIGN);
            assert_eq!(run.bytes().as_ptr() as usize % ALIGN, 0, "moved");
        }
    }

    #[test]
    fn a_refused_direct_write_goes_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upload");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("open");
        let enabled = AtomicBool::new(true);
        let target = Target::open(file, &path, &enabled);
        let direct = target.direct.is_some();
        let mut ones = Staged::new(2 * ALIGN);
        ones.push(&[1; 2 * ALIGN]);
        // Whole blocks at a block boundary: directly, where the filesystem
        // takes direct I/O at all.
        let cached = target
            .write_blocks(ones.bytes(), 0, &enabled)
            .expect("write");
        assert_eq!(cached, !direct);
        assert_eq!(enabled.load(Ordering::Relaxed), direct);
        // Off a block boundary a direct write is refused (EINVAL): the
        // bytes go through the page cache and direct I/O is off from then.
        let mut twos = Staged::new(ALIGN);
        twos.push(&[2; ALIGN]);
        let cached = target
            .write_blocks(twos.bytes(), 100, &enabled)
            .expect("write");
        assert_eq!(cached, !enabled.load(Ordering::Relaxed));
        let mut expected = vec![1; 2 * ALIGN];
        expected[100..100 + ALIGN].fill(2);
        assert!(std::fs::read(&path).expect("read") == expected);
    }
}
