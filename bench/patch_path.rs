//! Micro-benchmarks of the PATCH hot path: header parsing, checksum
//! hashing per MiB and the file writer's buffering (`cargo bench`).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tusker::data::{DataStore, FileStore, IoPermit};
use tusker::model::UploadInfo;
use tusker::protocol::{headers, Checksum, ChecksumAlgorithm, Metadata, UploadId};

const MIB: usize = 1024 * 1024;

fn header_parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("headers");
    g.bench_function("upload_offset", |b| {
        b.iter(|| headers::parse_u64("Upload-Offset", black_box("1073741824")))
    });
    g.bench_function("content_type", |b| {
        b.iter(|| headers::is_offset_octet_stream(black_box("application/offset+octet-stream")))
    });
    let meta = "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,filetype YXBwbGljYXRpb24vcGRm,is_confidential";
    g.bench_function("metadata_3_pairs", |b| {
        b.iter(|| Metadata::parse(black_box(meta)))
    });
    let sum = "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=";
    g.bench_function("checksum_sha1", |b| {
        b.iter(|| Checksum::parse(black_box(sum)))
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = vec![0x5au8; MIB];
    let mut g = c.benchmark_group("checksum_per_mib");
    g.throughput(Throughput::Bytes(MIB as u64));
    for alg in ["crc32", "md5", "sha1", "sha256"] {
        let alg = ChecksumAlgorithm::from_name(alg).expect("supported");
        g.bench_function(alg.name(), |b| {
            b.iter(|| {
                let mut h = alg.hasher();
                h.update(black_box(&data));
                h.finalize()
            })
        });
    }
    g.finish();
}

fn info(id: UploadId) -> UploadInfo {
    UploadInfo::new(id, None, 0)
}

/// 16 MiB through the file writer in 64 KiB chunks (actix's typical body
/// chunk), without the final fdatasync: the buffering and write path only.
fn file_writer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path()).expect("store");
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let total = 16 * MIB;
    let mut g = c.benchmark_group("file_writer");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(20);
    g.bench_function("16MiB_in_64KiB_chunks", |b| {
        b.iter_batched(
            || {
                let info = info(UploadId::generate());
                rt.block_on(store.create(&info)).expect("create");
                info
            },
            |info| {
                rt.block_on(async {
                    let mut w = store
                        .writer(&info, IoPermit::unshared())
                        .await
                        .expect("writer");
                    for _ in 0..total / chunk.len() {
                        w.write(chunk.clone()).await.expect("write");
                    }
                    w.discard().await.expect("discard");
                });
                rt.block_on(store.delete(&info)).expect("delete");
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, header_parsing, hashing, file_writer);
criterion_main!(benches);
