//! The per-request writer of the object-storage path: cuts the incoming
//! bytes into parts, uploads them concurrently under the memory budget, and
//! at each sync makes the remainder a part of its own (`PartPolicy::Variable`,
//! when it is at least 5 MiB and the part budget allows) or stages it as a
//! segment.

use super::{
    convert, part_units, retry, ObjectData, ObjectTuning, PartPolicy, Segment, State, MAX_PARTS,
    MIN_PART_SIZE,
};
use crate::data::{Checkpoint, DataError, Durable, UploadWriter};
use async_trait::async_trait;
use bytes::Bytes;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

type PartResult = (usize, Result<PartId, object_store::Error>);

pub(super) struct ObjectWriter {
    data: ObjectData,
    staging: String,
    /// Unique per writer, part of every segment key it stages: two
    /// writers continuing one record (a stalled holder and the instance
    /// that took the upload over) never write the same key, so neither
    /// overwrites a segment the other's record names.
    nonce: String,
    /// Bytes of `current.segments`, when known in memory.
    tail: Option<Vec<Bytes>>,
    /// Bytes of `durable.segments`, when known in memory.
    durable_tail: Option<Vec<Bytes>>,
    /// Sizes of the parts cut during this request, by index, with the
    /// ETags of those finished.
    completed: Vec<(u64, Option<String>)>,
    /// Declared length of the upload, when known.
    length: Option<u64>,
    /// State as of the last `sync`.
    durable: State,
    /// `durable` plus what this request consumed/started: `parts` counts
    /// only parts whose upload has finished and been ordered in.
    current: State,
    /// Bytes after `current.segments` and the parts cut so far.
    pending: Vec<Bytes>,
    pending_len: u64,
    inflight: JoinSet<PartResult>,
    /// Segments consumed by parts: deleted once the new state is persisted.
    garbage: Vec<String>,
    /// Segments this writer staged that no persisted state named yet:
    /// deleted if the meta store refuses the state (`abandon`).
    unrecorded: Vec<String>,
    /// The part that consumed `garbage` (the first part a request cuts).
    garbage_part: usize,
    /// Buffer memory for the part being assembled (its staged tail and
    /// pending bytes), taken before its first byte is buffered and handed
    /// to the part's upload when it is cut: every buffered part byte is
    /// within `--buffer-memory`.
    reserved: Option<OwnedSemaphorePermit>,
}

impl ObjectWriter {
    /// A writer continuing from `state`; `tail` holds the bytes of its
    /// staged segments when this instance still has them in memory.
    pub(super) fn new(
        data: ObjectData,
        staging: String,
        state: State,
        length: Option<u64>,
        tail: Option<Vec<Bytes>>,
    ) -> Self {
        ObjectWriter {
            data,
            staging,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            tail: tail.clone(),
            durable_tail: tail,
            completed: Vec::new(),
            length,
            current: state.clone(),
            durable: state,
            pending: Vec::new(),
            pending_len: 0,
            inflight: JoinSet::new(),
            garbage: Vec::new(),
            unrecorded: Vec::new(),
            garbage_part: 0,
            reserved: None,
        }
    }

    /// Takes buffer memory for one part unless this writer holds it
    /// already; waits while the budget is used up. A part larger than the
    /// whole budget takes all of it.
    async fn reserve(&mut self) -> Result<(), DataError> {
        if self.reserved.is_none() {
            let units = part_units(self.tuning(), self.current.part_size);
            let permit = self
                .data
                .memory
                .clone()
                .acquire_many_owned(units)
                .await
                .map_err(|_| DataError::Backend("buffer memory semaphore closed".into()))?;
            self.reserved = Some(permit);
        }
        Ok(())
    }

    fn parts_started(&self) -> usize {
        self.current.parts.len() + self.completed.len()
    }

    fn tuning(&self) -> &ObjectTuning {
        &self.data.tuning
    }

    /// Takes exactly `n` bytes from the front of `pending`.
    fn take_pending(&mut self, n: u64) -> Vec<Bytes> {
        take_front(&mut self.pending, &mut self.pending_len, n)
    }

    /// Cuts one part of `size` bytes (staged segments + pending bytes) and
    /// starts its upload.
    async fn cut_part(&mut self, size: u64) -> Result<(), DataError> {
        let part_size = self.current.part_size;
        let idx = self.parts_started();
        if idx as u64 >= MAX_PARTS {
            return Err(DataError::LimitExceeded(format!(
                "upload exceeds {MAX_PARTS} parts of {part_size} bytes"
            )));
        }
        while self.inflight.len() >= self.tuning().part_concurrency.max(1) {
            self.reap_one().await?;
        }
        self.reserve().await?;
        let permit: OwnedSemaphorePermit = self
            .reserved
            .take()
            .ok_or_else(|| DataError::Backend("part cut without buffer memory".into()))?;
        let segments = std::mem::take(&mut self.current.segments);
        let staged: u64 = segments.iter().map(|s| s.len).sum();
        let mut chunks = match self.tail.take() {
            Some(bytes) => bytes,
            None => self.data.read_segments(&self.staging, &segments).await?,
        };
        self.tail = Some(Vec::new());
        if !segments.is_empty() {
            self.garbage_part = idx;
        }
        self.garbage.extend(segments.into_iter().map(|s| s.key));
        chunks.extend(self.take_pending(size - staged));
        let payload = PutPayload::from_iter(chunks);
        debug_assert_eq!(payload.content_length() as u64, size);

        let (store, tuning) = (self.data.store.clone(), self.data.tuning.clone());
        let path = Path::from(self.current.key.as_str());
        let id = self.current.multipart_id.clone();
        self.completed.push((size, None));
        self.inflight.spawn(async move {
            let result = retry(&tuning, "put part", || {
                store.put_part(&path, &id, idx, payload.clone())
            })
            .await;
            drop(permit);
            (idx, result)
        });
        Ok(())
    }

    /// Waits for one in-flight part.
    async fn reap_one(&mut self) -> Result<(), DataError> {
        match self.inflight.join_next().await {
            Some(joined) => self.reaped(joined),
            None => Ok(()),
        }
    }

    /// Records a finished part upload.
    fn reaped(
        &mut self,
        joined: Result<PartResult, tokio::task::JoinError>,
    ) -> Result<(), DataError> {
        let (idx, result) = joined
            .map_err(|e| DataError::Backend(crate::error::caused("part upload task failed", e)))?;
        let part = result.map_err(convert)?;
        let slot = idx - self.current.parts.len();
        self.completed[slot].1 = Some(part.content_id);
        Ok(())
    }

    /// Moves finished parts, in order, into `current.parts`.
    fn order_parts(&mut self) {
        let done = self.completed.iter().take_while(|c| c.1.is_some()).count();
        for (size, etag) in self.completed.drain(..done) {
            if let Some(etag) = etag {
                self.current.push_part(etag, size);
            }
        }
    }

    /// Whether the bytes after the last cut part (`rest` of them, at the
    /// end of a request) become a part of their own: the store takes
    /// unequal parts, `rest` is at least S3's smallest part, a part was cut
    /// already or more bytes are to come (a small upload finishing now is
    /// one PUT of its own), and the parts left still fit the rest of the
    /// upload at the full part size. Without a declared length, short parts
    /// take at most half the part budget.
    fn short_part_fits(&self, rest: u64) -> bool {
        if self.tuning().part_policy != PartPolicy::Variable || rest < MIN_PART_SIZE {
            return false;
        }
        let parts_after = self.parts_started() as u64 + 1;
        let cut: u64 = self.completed.iter().map(|(size, _)| size).sum();
        let end = self.current.offset() + cut + self.pending_len;
        match self.length {
            Some(length) => {
                let left = length.saturating_sub(end);
                let finishing_small = left == 0 && parts_after == 1;
                !finishing_small
                    && MAX_PARTS
                        .saturating_sub(parts_after)
                        .saturating_mul(self.current.part_size)
                        >= left
            }
            None => parts_after <= MAX_PARTS / 2,
        }
    }
}

#[async_trait]
impl UploadWriter for ObjectWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), DataError> {
        // Memory first: with the budget used up, the body waits in the
        // client's socket instead of here.
        self.reserve().await?;
        self.pending_len += chunk.len() as u64;
        self.pending.push(chunk);
        while self.current.staged() + self.pending_len >= self.current.part_size {
            self.cut_part(self.current.part_size).await?;
            if self.pending_len > 0 {
                self.reserve().await?;
            }
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<Durable, DataError> {
        let rest = self.current.staged() + self.pending_len;
        if self.short_part_fits(rest) {
            self.cut_part(rest).await?;
        }
        while !self.inflight.is_empty() {
            self.reap_one().await?;
        }
        self.order_parts();
        if self.pending_len > 0 {
            let key = format!(
                "{}{:08}-{}",
                self.staging, self.current.next_segment, self.nonce
            );
            let chunks = std::mem::take(&mut self.pending);
            let payload = PutPayload::from_iter(chunks.iter().cloned());
            let len = self.pending_len;
            let path = Path::from(key.as_str());
            let store = self.data.store.clone();
            retry(self.tuning(), "put segment", || {
                store.put(&path, payload.clone())
            })
            .await
            .map_err(convert)?;
            self.pending_len = 0;
            self.current.next_segment += 1;
            self.unrecorded.push(key.clone());
            self.current.segments.push(Segment { key, len });
            if let Some(tail) = self.tail.as_mut() {
                tail.extend(chunks);
            }
        }
        self.durable = self.current.clone();
        self.durable_tail = self.tail.clone();
        Ok(Durable {
            offset: self.durable.offset(),
            storage: self.durable.to_value(),
        })
    }

    /// The parts uploaded so far, without waiting for those in flight nor
    /// staging the bytes after them: a checkpoint that never drains the
    /// part pipeline. It lags the body by the parts in flight and the
    /// part being filled, and is taken only when it is ahead of the last
    /// durable state and names no segment a part still in flight needs.
    async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, DataError> {
        while let Some(joined) = self.inflight.try_join_next() {
            self.reaped(joined)?;
        }
        self.order_parts();
        let uploaded = State {
            segments: Vec::new(),
            ..self.current.clone()
        };
        let frees_garbage = self.garbage.is_empty() || uploaded.parts.len() > self.garbage_part;
        // Until this request cuts a part, `current` names the staged
        // segments and `uploaded`, which drops them, is behind: not taken.
        if uploaded.offset() > self.durable.offset() && frees_garbage {
            self.durable = uploaded;
            self.durable_tail = Some(Vec::new());
        }
        let durable = Durable {
            offset: self.durable.offset(),
            storage: self.durable.to_value(),
        };
        Ok(Some(Box::pin(std::future::ready(Ok(durable)))))
    }

    async fn committed(&mut self) {
        // The persisted state names these segments now: safe to serve them
        // from memory to this upload's next part.
        match &self.durable_tail {
            Some(tail) => {
                self.data
                    .tails
                    .put(&self.staging, self.durable.segment_ids(), tail.clone())
            }
            None => self.data.tails.remove(&self.staging),
        }
        // A checkpoint may persist a state that still names segments a
        // part in flight consumed: those wait for a later state.
        let named: Vec<&str> = self
            .durable
            .segments
            .iter()
            .map(|s| s.key.as_str())
            .collect();
        self.unrecorded.retain(|key| !named.contains(&key.as_str()));
        let (keep, free): (Vec<String>, Vec<String>) = std::mem::take(&mut self.garbage)
            .into_iter()
            .partition(|key| named.contains(&key.as_str()));
        self.garbage = keep;
        for key in free {
            if let Err(e) = self.data.store.delete(&Path::from(key.as_str())).await {
                tracing::warn!(%key, error = %e, "deleting consumed segment failed");
            }
        }
    }

    async fn abandon(&mut self) {
        // Their keys carry this writer's nonce: no other writer's state
        // can name them.
        for key in std::mem::take(&mut self.unrecorded) {
            if let Err(e) = self.data.delete_segment(&Path::from(key.as_str())).await {
                tracing::warn!(%key, error = %e, "deleting an unrecorded segment failed");
            }
        }
    }

    async fn discard(&mut self) -> Result<Durable, DataError> {
        // Parts started here may still land; their numbers are simply
        // uploaded again later, replacing them.
        self.inflight.abort_all();
        while self.inflight.join_next().await.is_some() {}
        self.completed.clear();
        self.pending.clear();
        self.pending_len = 0;
        self.garbage.clear();
        self.current = self.durable.clone();
        self.tail = self.durable_tail.clone();
        Ok(Durable {
            offset: self.durable.offset(),
            storage: self.durable.to_value(),
        })
    }
}

/// Takes exactly `n` bytes from the front of `pending` (whose bytes number
/// `pending_len`), splitting a chunk where `n` ends inside one. Whole
/// chunks go first, in one drain: a part holds hundreds.
pub(super) fn take_front(
    pending: &mut Vec<Bytes>,
    pending_len: &mut u64,
    mut n: u64,
) -> Vec<Bytes> {
    let whole = pending
        .iter()
        .take_while(|c| {
            let fits = (c.len() as u64) <= n;
            if fits {
                n -= c.len() as u64;
            }
            fits
        })
        .count();
    let mut out: Vec<Bytes> = pending.drain(..whole).collect();
    if n > 0 {
        if let Some(first) = pending.first_mut() {
            out.push(first.split_to(n as usize));
        }
    }
    *pending_len -= out.iter().map(|b| b.len() as u64).sum::<u64>();
    out
}

#[cfg(test)]
mod tests {
    use super::take_front;
    use bytes::Bytes;

    #[test]
    fn takes_whole_chunks_then_splits_the_next() {
        let mut pending: Vec<Bytes> = [&b"abc"[..], b"defg", b"hijkl"]
            .iter()
            .map(|c| Bytes::copy_from_slice(c))
            .collect();
        let mut len = 12;
        let taken = take_front(&mut pending, &mut len, 5);
        assert_eq!(taken.concat(), b"abcde");
        assert_eq!(pending.concat(), b"fghijkl");
        assert_eq!(len, 7);
        assert_eq!(take_front(&mut pending, &mut len, 0), Vec::<Bytes>::new());
        assert_eq!(take_front(&mut pending, &mut len, 7).concat(), b"fghijkl");
        assert!(pending.is_empty());
        assert_eq!(len, 0);
    }
}
