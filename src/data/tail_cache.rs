//! The staged tails this instance wrote, kept in memory so the next part of
//! an upload need not read them back from object storage. Entries are only
//! recorded once the state naming them is persisted, and only served when
//! the requested segment list (unique, never reused keys) matches exactly;
//! any other instance simply misses and reads from the store.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Key and length of one staged segment.
pub type SegmentId = (String, u64);

struct Entry {
    segments: Vec<SegmentId>,
    data: Vec<Bytes>,
    len: u64,
}

/// A bounded map from upload (its staging prefix) to its staged tail.
pub struct TailCache {
    entries: Mutex<(HashMap<String, Entry>, u64)>,
    budget: u64,
}

impl TailCache {
    /// A cache holding at most `budget` bytes in all.
    pub fn new(budget: u64) -> Self {
        TailCache {
            entries: Mutex::new((HashMap::new(), 0)),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Entry>, u64)> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tail's bytes if exactly these segments are cached.
    pub fn get(&self, upload: &str, segments: &[SegmentId]) -> Option<Vec<Bytes>> {
        let entries = self.lock();
        entries
            .0
            .get(upload)
            .filter(|e| e.segments == segments)
            .map(|e| e.data.clone())
    }

    /// Records the tail of `upload`, replacing what was there; skipped when
    /// it would exceed the budget.
    pub fn put(&self, upload: &str, segments: Vec<SegmentId>, data: Vec<Bytes>) {
        let len: u64 = data.iter().map(|b| b.len() as u64).sum();
        let mut entries = self.lock();
        let (map, total) = &mut *entries;
        if let Some(old) = map.remove(upload) {
            *total -= old.len;
        }
        if segments.is_empty() || *total + len > self.budget {
            return;
        }
        *total += len;
        map.insert(
            upload.to_owned(),
            Entry {
                segments,
                data,
                len,
            },
        );
    }

    pub fn remove(&self, upload: &str) {
        let mut entries = self.lock();
        let (map, total) = &mut *entries;
        if let Some(old) = map.remove(upload) {
            *total -= old.len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_exact_matches_within_budget() {
        let cache = TailCache::new(10);
        let segs = vec![("a/1".to_owned(), 3)];
        cache.put("u", segs.clone(), vec![Bytes::from_static(b"abc")]);
        assert_eq!(
            cache.get("u", &segs),
            Some(vec![Bytes::from_static(b"abc")])
        );
        assert_eq!(cache.get("u", &[("a/2".to_owned(), 3)]), None);
        // Over budget: not kept, and the old entry is gone.
        cache.put("u", segs.clone(), vec![Bytes::from(vec![0; 11])]);
        assert_eq!(cache.get("u", &segs), None);
        cache.put("v", segs.clone(), vec![Bytes::from_static(b"xyz")]);
        cache.remove("v");
        assert_eq!(cache.get("v", &segs), None);
    }
}
