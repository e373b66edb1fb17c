//! Files made ahead of use: empty upload files under ids generated in
//! advance, made in batches whose directory entries one directory sync
//! makes durable together. An upload created under such an id skips the
//! directory sync at its first `fdatasync`, which otherwise costs every new
//! upload a second device flush, and its first writer gets the file open
//! already (no trip to the blocking pool to open it).
//!
//! A batch's ids are written to this store's manifest
//! (`.tusker-pool/<random>`, synced) before their files are made, and the
//! manifest stays locked (`flock`) while the store lives. When a store
//! opens, a manifest nobody holds belongs to a store that has ended: each
//! of its files that is still empty is removed (an upload whose file is
//! missing and whose offset is 0 is the same as an empty one, see
//! `FileStore::create`), then the manifest. Files that must stay even when
//! empty (finished empty uploads) are marked kept in the manifest first.
//! Its files that hold bytes are mostly uploads, but a crash between a
//! creation's first bytes and the flush of its record leaves bytes nobody
//! was told of (`Hold::LockDeferred` in the upload layer): such a manifest
//! stays, locked, until the engine has asked the meta store which of those
//! ids have no record ([`Prepared::unchecked`], [`Prepared::remove_unchecked`]).

use super::sync_dir;
use crate::protocol::UploadId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The directory of the manifests, beside the upload files (ids never
/// start with a dot; hook destinations may not start with `.tusker`).
pub(super) const DIR: &str = ".tusker-pool";
/// Files made per batch.
const BATCH: usize = 64;
/// A new batch starts when fewer ids than this are ready.
const LOW: usize = 32;
/// At most this many handed-out ids keep their file open for their first
/// writer (a client may create uploads and never send bytes); the others
/// are opened by path.
pub(super) const OPEN_HANDED: usize = 32;
/// A manifest holding more ids than this is replaced by one holding only
/// the ids still ready.
const ROTATE_AFTER: usize = 64 * 1024;
/// After a batch failed (disk full, say), the next waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// The line that marks an id's file as kept, even when empty.
const KEEP: char = '+';

/// The ids ready for new uploads, and the manifest that covers them.
#[derive(Debug)]
pub(super) struct Prepared {
    root: PathBuf,
    /// Ids whose files exist with durable directory entries, each with
    /// its file open.
    ready: Mutex<Vec<(UploadId, File)>>,
    /// Ids handed out and not yet opened by a writer: their entries are
    /// durable.
    handed: Mutex<Handed>,
    /// A batch is being made.
    refilling: AtomicBool,
    /// No batch before this instant (set when one failed).
    retry_at: Mutex<Option<Instant>>,
    manifest: Mutex<Option<Manifest>>,
    /// What ended stores left to be checked against the meta store.
    dead: Mutex<Dead>,
}

/// The manifests of ended stores that list files holding bytes, held
/// (locked) until those files were checked, and those files' ids.
#[derive(Debug, Default)]
struct Dead {
    manifests: Vec<(PathBuf, File)>,
    unchecked: Vec<UploadId>,
}

/// Ids handed out, the most recent [`OPEN_HANDED`] with their file open.
#[derive(Debug, Default)]
struct Handed {
    ids: HashMap<UploadId, Option<File>>,
    /// Ids handed out with their file open, oldest first (some may have
    /// been opened or forgotten since).
    open: VecDeque<UploadId>,
}

impl Handed {
    fn insert(&mut self, id: UploadId, file: File) {
        self.ids.insert(id.clone(), Some(file));
        self.open.push_back(id);
        while self.open.len() > OPEN_HANDED {
            if let Some(old) = self.open.pop_front() {
                if let Some(file) = self.ids.get_mut(&old) {
                    *file = None;
                }
            }
        }
    }
}

/// A file made ahead of use, handed to its first writer.
#[derive(Debug)]
pub(super) enum Ahead {
    /// Open (empty, read and write).
    Open(File),
    /// To be opened by path.
    Closed,
}

#[derive(Debug)]
struct Manifest {
    /// Open and locked while this store lives.
    file: File,
    path: PathBuf,
    /// Lines written.
    lines: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Prepared {
    /// The prepared files under `root`, after removing what ended stores
    /// left (see the module docs).
    /// Failing that cleanup only leaves files behind: it is logged.
    pub(super) fn open(root: &Path) -> Self {
        let dir = root.join(DIR);
        let dead = match std::fs::create_dir_all(&dir).and_then(|()| clean(root, &dir)) {
            Ok(dead) => dead,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "could not remove the upload files an earlier run made ahead of use");
                Dead::default()
            }
        };
        Prepared {
            dead: Mutex::new(dead),
            root: root.to_path_buf(),
            ready: Mutex::default(),
            handed: Mutex::default(),
            refilling: AtomicBool::new(false),
            retry_at: Mutex::default(),
            manifest: Mutex::default(),
        }
    }

    /// An id whose file is made and whose directory entry is durable, if
    /// one is ready; starts a new batch when few are left.
    pub(super) fn take(self: &Arc<Self>) -> Option<UploadId> {
        let (taken, left) = {
            let mut ready = lock(&self.ready);
            (ready.pop(), ready.len())
        };
        if left < LOW {
            self.refill();
        }
        let (id, file) = taken?;
        lock(&self.handed).insert(id.clone(), file);
        Some(id)
    }

    /// Gives back an id from [`Prepared::take`] that no upload got.
    pub(super) fn give_back(&self, id: UploadId) {
        let handed = lock(&self.handed).ids.remove(&id);
        if let Some(Some(file)) = handed {
            lock(&self.ready).push((id, file));
        }
    }

    /// `Some` if `id` came from these prepared files and its first writer is opening
    /// it now: its file needs no directory sync. Once per id.
    pub(super) fn opening(&self, id: &UploadId) -> Option<Ahead> {
        let handed = lock(&self.handed).ids.remove(id)?;
        Some(handed.map_or(Ahead::Closed, Ahead::Open))
    }

    /// Forgets `id` (its upload is gone).
    pub(super) fn forget(&self, id: &UploadId) {
        lock(&self.handed).ids.remove(id);
    }

    /// Marks `id`'s file as kept even when empty (a finished upload with
    /// no bytes), durably, if a manifest of this store may list it. No
    /// writer comes for such an id: it is forgotten here.
    pub(super) fn keep(&self, id: &UploadId) -> std::io::Result<()> {
        self.forget(id);
        let mut manifest = lock(&self.manifest);
        match manifest.as_mut() {
            Some(m) => m.append(&[format!("{KEEP}{id}")]),
            None => Ok(()),
        }
    }

    /// Ids of files that ended stores made ahead of use and that hold
    /// bytes: uploads, or bytes of a creation whose record a crash took.
    pub(super) fn unchecked(&self) -> Vec<UploadId> {
        lock(&self.dead).unchecked.clone()
    }

    /// Removes the files of `orphans` (ids from [`Prepared::unchecked`] that
    /// have no record), then the manifests that listed them. Returns how
    /// many files were removed.
    pub(super) fn remove_unchecked(&self, orphans: &[UploadId]) -> std::io::Result<usize> {
        let mut dead = lock(&self.dead);
        let mut removed = 0;
        let listed: HashSet<&UploadId> = dead.unchecked.iter().collect();
        for id in orphans.iter().filter(|i| listed.contains(i)) {
            if remove_if_present(&self.root.join(id.as_str()))? {
                removed += 1;
            }
        }
        if dead.manifests.is_empty() {
            return Ok(removed);
        }
        drop_manifests(&self.root, &self.root.join(DIR), &dead.manifests)?;
        *dead = Dead::default();
        Ok(removed)
    }

    /// Whether a batch is being made.
    #[cfg(test)]
    pub(super) fn refilling(&self) -> bool {
        self.refilling.load(Ordering::Acquire)
    }

    /// Starts a batch on the blocking pool unless one is running or a
    /// failed one is too recent. Outside a runtime, does nothing.
    pub(super) fn refill(self: &Arc<Self>) {
        if lock(&self.retry_at).is_some_and(|at| Instant::now() < at) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let prepared = self.clone();
        runtime.spawn_blocking(move || {
            let made = prepared.make_batch();
            if let Err(e) = &made {
                tracing::warn!(error = %e, "making upload files ahead of use failed; new uploads sync their directory themselves");
                *lock(&prepared.retry_at) = Some(Instant::now() + RETRY_AFTER);
            }
            prepared.refilling.store(false, Ordering::Release);
        });
    }

    /// Makes one batch: its ids in the manifest (synced), then its files,
    /// then one sync of their directory; then they are ready.
    fn make_batch(&self) -> std::io::Result<()> {
        let ids: Vec<UploadId> = (0..BATCH).map(|_| UploadId::generate()).collect();
        {
            let mut manifest = lock(&self.manifest);
            let rotate = manifest.as_ref().is_none_or(|m| m.lines >= ROTATE_AFTER);
            if rotate {
                // The ids still ready, and those handed out whose writer
                // has not come yet (a creation may be in flight), move to
                // the new manifest. Kept ids are no longer handed out.
                let mut still: Vec<String> = lock(&self.ready)
                    .iter()
                    .map(|(i, _)| i.to_string())
                    .collect();
                still.extend(lock(&self.handed).ids.keys().map(|i| i.to_string()));
                let mut fresh = Manifest::create(&self.root.join(DIR))?;
                fresh.append(&still)?;
                if let Some(old) = manifest.replace(fresh) {
                    std::fs::remove_file(&old.path)?;
                }
            }
            let lines: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            manifest.as_mut().map_or(Ok(()), |m| m.append(&lines))?;
        }
        let mut made = Vec::with_capacity(ids.len());
        for id in ids {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(self.root.join(id.as_str()))?;
            made.push((id, file));
        }
        sync_dir(&self.root)?;
        lock(&self.ready).extend(made);
        Ok(())
    }
}

impl Manifest {
    /// A new manifest under `dir`, locked, its entry durable.
    fn create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(UploadId::generate().as_str());
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        if !try_lock(&file)? {
            return Err(std::io::Error::other("a new manifest is locked already"));
        }
        sync_dir(dir)?;
        Ok(Manifest {
            file,
            path,
            lines: 0,
        })
    }

    /// Appends `lines` and syncs them.
    fn append(&mut self, lines: &[String]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = lines.join("\n");
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()?;
        self.lines += lines.len();
        Ok(())
    }
}

/// Takes an exclusive `flock` on `file` without waiting (released when the
/// file is closed); false if another open file holds one.
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` on a descriptor `file` owns for the whole call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

/// Removes what stores that have ended left: for each manifest nobody
/// holds, its listed files that are empty and not kept, then the manifest
/// unless it lists files holding bytes. Those manifests are returned,
/// held, with the ids of those files.
fn clean(root: &Path, dir: &Path) -> std::io::Result<Dead> {
    let mut removed = 0usize;
    let mut done = Vec::new();
    let mut dead = Dead::default();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Held: a live store (in this process or another) owns it.
        if !try_lock(&file)? {
            continue;
        }
        let mut listed = Vec::new();
        let mut kept = HashSet::new();
        for line in BufReader::new(&file).lines() {
            let line = line?;
            // A line cut by a crash fails to parse and is skipped: its
            // batch's files were not made before the line was synced.
            match line.strip_prefix(KEEP) {
                Some(id) => {
                    kept.insert(id.to_owned());
                }
                None => listed.extend(UploadId::parse(&line).ok()),
            }
        }
        let mut holding = Vec::new();
        for id in listed.into_iter().filter(|i| !kept.contains(i.as_str())) {
            let path = root.join(id.as_str());
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && m.len() == 0 => {
                    if remove_if_present(&path)? {
                        removed += 1;
                    }
                }
                Ok(m) if m.is_file() => holding.push(id),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match holding.is_empty() {
            true => done.push((path, file)),
            false => {
                dead.unchecked.extend(holding);
                dead.manifests.push((path, file));
            }
        }
    }
    if done.is_empty() && removed == 0 {
        return Ok(dead);
    }
    drop_manifests(root, dir, &done)?;
    tracing::info!(
        files = removed,
        manifests = done.len(),
        "removed upload files made ahead of use by an earlier run"
    );
    Ok(dead)
}

/// Removes `manifests` (held, so no other store reads them meanwhile)
/// after syncing `root`, so the removals of the files they list are
/// durable before the lists go; then syncs `dir`, where they were.
fn drop_manifests(root: &Path, dir: &Path, manifests: &[(PathBuf, File)]) -> std::io::Result<()> {
    sync_dir(root)?;
    for (path, _held) in manifests {
        remove_if_present(path)?;
    }
    sync_dir(dir)
}

/// Removes the file at `path`; false if there was none.
fn remove_if_present(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != DIR)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_batch_makes_empty_files_for_its_ids() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = Arc::new(Prepared::open(dir.path()));
        prepared.make_batch().unwrap();
        assert_eq!(files(dir.path()).len(), BATCH);
        let id = prepared.take().unwrap();
        let meta = std::fs::metadata(dir.path().join(id.as_str())).unwrap();
        assert_eq!(meta.len(), 0);
        assert!(
            matches!(prepared.opening(&id), Some(Ahead::Open(_))),
            "first writer of a prepared id"
        );
        assert!(prepared.opening(&id).is_none(), "only once");
    }

    #[test]
    fn a_new_store_removes_an_ended_stores_empty_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (written, kept, unused, recorded_empty) = {
            let prepared = Arc::new(Prepared::open(root));
            prepared.make_batch().unwrap();
            let written = prepared.take().unwrap();
            std::fs::write(root.join(written.as_str()), b"acknowledged bytes").unwrap();
            let kept = prepared.take().unwrap();
            prepared.keep(&kept).unwrap();
            let recorded_empty = prepared.take().unwrap();
            let unused = prepared.take().unwrap();
            prepared.give_back(unused.clone());
            (written, kept, unused, recorded_empty)
        };
        // Someone else's file, never listed, stays even when empty.
        std::fs::write(root.join("other"), b"").unwrap();
        let prepared = Prepared::open(root);
        let left = files(root);
        assert!(left.contains(&written.to_string()));
        assert!(left.contains(&kept.to_string()));
        assert!(left.contains(&"other".to_owned()));
        assert!(!left.contains(&unused.to_string()));
        // An empty file is the same as a missing one for an upload at 0.
        assert!(!left.contains(&recorded_empty.to_string()));
        assert_eq!(left.len(), 3, "{left:?}");
        // The file with bytes is left to the meta store's say; its manifest
        // stays until then.
        assert_eq!(prepared.unchecked(), vec![written.clone()]);
        assert_eq!(std::fs::read_dir(root.join(DIR)).unwrap().count(), 1);
        // A second store meanwhile leaves it alone.
        assert!(Prepared::open(root).unchecked().is_empty());
        // Recorded (not an orphan): it stays, the manifest goes.
        assert_eq!(prepared.remove_unchecked(&[]).unwrap(), 0);
        assert!(files(root).contains(&written.to_string()));
        assert_eq!(std::fs::read_dir(root.join(DIR)).unwrap().count(), 0);
        assert!(prepared.unchecked().is_empty());
    }

    #[test]
    fn unrecorded_files_with_bytes_go_once_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (orphan, upload) = {
            let prepared = Arc::new(Prepared::open(root));
            prepared.make_batch().unwrap();
            let (orphan, upload) = (prepared.take().unwrap(), prepared.take().unwrap());
            std::fs::write(root.join(orphan.as_str()), b"never acknowledged").unwrap();
            std::fs::write(root.join(upload.as_str()), b"acknowledged").unwrap();
            (orphan, upload)
        };
        let prepared = Prepared::open(root);
        let mut unchecked = prepared.unchecked();
        unchecked.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut both = vec![orphan.clone(), upload.clone()];
        both.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(unchecked, both);
        // Only ids it listed are removed, whatever the caller passes.
        let stranger = UploadId::generate();
        std::fs::write(root.join(stranger.as_str()), b"x").unwrap();
        let removed = prepared
            .remove_unchecked(&[orphan.clone(), stranger.clone()])
            .unwrap();
        assert_eq!(removed, 1);
        let left = files(root);
        assert!(!left.contains(&orphan.to_string()));
        assert!(left.contains(&upload.to_string()));
        assert!(left.contains(&stranger.to_string()));
        assert_eq!(std::fs::read_dir(root.join(DIR)).unwrap().count(), 0);
        // A later start has nothing left to check.
        assert!(Prepared::open(root).unchecked().is_empty());
    }

    #[test]
    fn a_live_stores_manifest_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let first = Arc::new(Prepared::open(dir.path()));
        first.make_batch().unwrap();
        let _second = Prepared::open(dir.path());
        assert_eq!(files(dir.path()).len(), BATCH);
        drop(first);
        let _third = Prepared::open(dir.path());
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn rotation_keeps_the_ready_and_handed_ids_covered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let handed = {
            let prepared = Arc::new(Prepared::open(root));
            prepared.make_batch().unwrap();
            let handed = prepared.take().unwrap();
            std::fs::write(root.join(handed.as_str()), b"bytes of a creation in flight").unwrap();
            lock(&prepared.manifest).as_mut().unwrap().lines = ROTATE_AFTER;
            prepared.make_batch().unwrap();
            assert_eq!(std::fs::read_dir(root.join(DIR)).unwrap().count(), 1);
            assert_eq!(lock(&prepared.manifest).as_ref().unwrap().lines, 2 * BATCH);
            handed
        };
        let prepared = Prepared::open(root);
        assert_eq!(files(root), vec![handed.to_string()]);
        assert_eq!(prepared.unchecked(), vec![handed]);
    }
}
