//! Streaming a byte range of an upload file for GET: each chunk is read
//! on the blocking pool straight into the buffer that is then sent (one
//! copy, from the page cache; no second copy through an intermediate
//! buffer), and the next chunk is read while the current one is sent.
//!
//! True zero-copy (`sendfile`) would need the socket, which actix-web's
//! HTTP/1 dispatcher does not hand out; this is the least copying that
//! goes through it.

use super::{DataError, READ_CHUNK};
use crate::data::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use tokio::task::JoinHandle;

type Chunk = JoinHandle<std::io::Result<Bytes>>;

/// Where a stream is: the file, the next position to read and the end.
struct Cursor {
    file: Arc<File>,
    at: u64,
    end: u64,
}

impl Cursor {
    /// Starts reading the next chunk, if any is left.
    fn next(&mut self) -> Option<Chunk> {
        let len = (self.end - self.at).min(READ_CHUNK as u64);
        if len == 0 {
            return None;
        }
        let (file, at) = (self.file.clone(), self.at);
        self.at += len;
        Some(tokio::task::spawn_blocking(move || {
            read_chunk(&file, at, len)
        }))
    }

    /// After an error: nothing more is read.
    fn stop(mut self) -> Self {
        self.at = self.end;
        self
    }
}

/// Reads exactly `len` bytes at `at` into a buffer of that capacity
/// (filled by the kernel, never zeroed first).
fn read_chunk(file: &File, at: u64, len: u64) -> std::io::Result<Bytes> {
    let mut file = file;
    file.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        // The file is shorter than its record says: never send a short
        // body under a longer Content-Length without saying so.
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("upload file ends {} bytes early", len - buf.len() as u64),
        ));
    }
    Ok(Bytes::from(buf))
}

/// The bytes `start..end` of `file`, one chunk read ahead.
pub(super) fn stream(file: File, start: u64, end: u64) -> ByteStream {
    let mut cursor = Cursor {
        file: Arc::new(file),
        at: start,
        end,
    };
    let first = cursor.next();
    futures_util::stream::unfold((cursor, first), |(mut cursor, current)| async move {
        let chunk = match current?.await {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => return Some((Err(DataError::from(e)), (cursor.stop(), None))),
            Err(e) => {
                let e = DataError::Backend(crate::error::caused("blocking task failed", e));
                return Some((Err(e), (cursor.stop(), None)));
            }
        };
        let next = cursor.next();
        Some((Ok(chunk), (cursor, next)))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of `len` bytes, each its position mod 251.
    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes).unwrap();
        (f, bytes)
    }

    async fn collect(
        file: &tempfile::NamedTempFile,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, DataError> {
        let mut s = stream(File::open(file.path()).unwrap(), start, end);
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            assert!(chunk.len() <= READ_CHUNK, "chunks are at most READ_CHUNK");
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn ranges_across_chunks_read_exactly_their_bytes() {
        let len = 2 * READ_CHUNK + READ_CHUNK / 2;
        let (f, bytes) = file_of(len);
        let chunk = READ_CHUNK as u64;
        for (start, end) in [
            (0, len as u64),
            (chunk - 3, 2 * chunk + 5),
            (chunk, 2 * chunk),
            (7, 8),
            (len as u64, len as u64),
        ] {
            let got = collect(&f, start, end).await.unwrap();
            assert_eq!(got, bytes[start as usize..end as usize], "{start}..{end}");
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_an_error_not_a_short_body() {
        let (f, _) = file_of(READ_CHUNK + 10);
        let err = collect(&f, 0, READ_CHUNK as u64 + 20).await.unwrap_err();
        assert!(err.to_string().contains("10 bytes early"), "{err}");
    }
}
