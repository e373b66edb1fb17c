//! Uploads in several buckets of one object store: `--storage`'s bucket
//! and those of `--s3-allowed-buckets` (same endpoint and credentials),
//! chosen per upload by a pre-create hook (`Storage.Bucket`) and recorded
//! in the upload's record (`UploadInfo::bucket`), so every later step and
//! every instance finds the upload in its bucket.

use super::ObjectData;
use crate::data::{BucketChoice, ByteStream, DataError, DataStore, IoPermit, UploadWriter};
use crate::model::UploadInfo;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;

/// The object data of each bucket an upload may be in.
pub struct Buckets {
    /// `--storage`'s bucket, for records that name none.
    default: ObjectData,
    name: String,
    others: BTreeMap<String, ObjectData>,
}

impl Buckets {
    /// Uploads in bucket `name` only, until [`Buckets::allow`] adds others.
    pub fn new(name: impl Into<String>, default: ObjectData) -> Self {
        Buckets {
            default,
            name: name.into(),
            others: BTreeMap::new(),
        }
    }

    /// Lets hooks place uploads in bucket `name`, stored through `data`.
    pub fn allow(mut self, name: impl Into<String>, data: ObjectData) -> Self {
        let name = name.into();
        if name != self.name {
            self.others.insert(name, data);
        }
        self
    }

    /// The object data of `info`'s bucket. A record naming a bucket this
    /// server may no longer use is refused rather than looked for in
    /// another bucket, where the same key may be someone else's object.
    fn of(&self, info: &UploadInfo) -> Result<&ObjectData, DataError> {
        match info.bucket.as_deref() {
            None => Ok(&self.default),
            Some(b) if b == self.name => Ok(&self.default),
            Some(b) => self.others.get(b).ok_or_else(|| {
                DataError::Backend(
                    format!(
                        "upload {} is in bucket {b:?}, which is not among --s3-allowed-buckets",
                        info.id
                    )
                    .into(),
                )
            }),
        }
    }
}

#[async_trait]
impl DataStore for Buckets {
    fn kind(&self) -> &'static str {
        self.default.kind()
    }

    async fn create(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        self.of(info)?.create(info).await
    }

    async fn writer(
        &self,
        info: &UploadInfo,
        permit: IoPermit,
    ) -> Result<Box<dyn UploadWriter>, DataError> {
        self.of(info)?.writer(info, permit).await
    }

    async fn finish(&self, info: &UploadInfo) -> Result<serde_json::Value, DataError> {
        self.of(info)?.finish(info).await
    }

    async fn read(&self, info: &UploadInfo, start: u64, end: u64) -> Result<ByteStream, DataError> {
        self.of(info)?.read(info, start, end).await
    }

    async fn delete(&self, info: &UploadInfo) -> Result<(), DataError> {
        self.of(info)?.delete(info).await
    }

    async fn concatenate(
        &self,
        target: &UploadInfo,
        parts: &[UploadInfo],
    ) -> Result<serde_json::Value, DataError> {
        let mut sources = Vec::with_capacity(parts.len());
        for part in parts {
            sources.push((self.of(part)?, part));
        }
        self.of(target)?.assemble(target, &sources).await
    }

    async fn ping(&self) -> Result<(), DataError> {
        self.default.ping().await
    }

    fn describe(&self, info: &UploadInfo) -> BTreeMap<String, String> {
        let mut out = match self.of(info) {
            Ok(data) => data.describe(info),
            Err(_) => self.default.describe(info),
        };
        let bucket = info.bucket.clone().unwrap_or_else(|| self.name.clone());
        out.insert("Bucket".to_owned(), bucket);
        out
    }

    async fn download_url(
        &self,
        info: &UploadInfo,
        ttl: Duration,
    ) -> Result<Option<String>, DataError> {
        self.of(info)?.download_url(info, ttl).await
    }

    fn choose_bucket(&self, bucket: &str) -> BucketChoice {
        if bucket == self.name {
            BucketChoice::Default
        } else if self.others.contains_key(bucket) {
            BucketChoice::Other(bucket.to_owned())
        } else {
            BucketChoice::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::object::{ObjectTuning, MIN_PART_SIZE};
    use crate::protocol::{Metadata, UploadId};
    use bytes::Bytes;
    use futures_util::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{Attribute, ObjectStoreExt};
    use std::sync::Arc;

    fn tuning() -> ObjectTuning {
        ObjectTuning {
            part_size: MIN_PART_SIZE,
            retry_attempts: 1,
            ..ObjectTuning::default()
        }
    }

    /// `main` and `other`, each in memory.
    fn two_buckets() -> (Buckets, Arc<InMemory>, Arc<InMemory>) {
        let (main, other) = (Arc::new(InMemory::new()), Arc::new(InMemory::new()));
        let data = ObjectData::new(main.clone(), "uploads", "memory", tuning());
        let buckets =
            Buckets::new("main", data.clone()).allow("other", data.on(other.clone(), None));
        (buckets, main, other)
    }

    /// Creates, writes and finishes an upload of `bytes` through `store`.
    async fn upload(store: &dyn DataStore, mut info: UploadInfo, bytes: &[u8]) -> UploadInfo {
        info.storage = store.create(&info).await.expect("create");
        let mut writer = store
            .writer(&info, IoPermit::unshared())
            .await
            .expect("writer");
        writer
            .write(Bytes::copy_from_slice(bytes))
            .await
            .expect("write");
        let durable = writer.sync().await.expect("sync");
        writer.committed().await;
        info.offset = durable.offset;
        info.storage = durable.storage;
        info.storage = store.finish(&info).await.expect("finish");
        info.finished = true;
        info
    }

    async fn read_all(store: &dyn DataStore, info: &UploadInfo) -> Vec<u8> {
        store
            .read(info, 0, info.offset)
            .await
            .expect("read")
            .try_collect::<Vec<Bytes>>()
            .await
            .expect("stream")
            .concat()
    }

    fn new_upload(len: usize, bucket: Option<&str>) -> UploadInfo {
        UploadInfo {
            bucket: bucket.map(str::to_owned),
            metadata: Some(
                Metadata::from_pairs([("filename", "a.mp4"), ("filetype", "video/mp4")]).encode(),
            ),
            ..UploadInfo::new(UploadId::generate(), Some(len as u64), 0)
        }
    }

    #[test]
    fn only_listed_buckets_are_chosen() {
        let (buckets, _, _) = two_buckets();
        assert_eq!(buckets.choose_bucket("main"), BucketChoice::Default);
        assert_eq!(
            buckets.choose_bucket("other"),
            BucketChoice::Other("other".into())
        );
        assert_eq!(buckets.choose_bucket("elsewhere"), BucketChoice::Refused);
        assert_eq!(buckets.choose_bucket(""), BucketChoice::Refused);
    }

    /// Every step of an upload in another bucket happens there: its parts,
    /// its object with the upload's headers, reads, concatenation with a
    /// part from the default bucket, and deletion.
    #[tokio::test]
    async fn an_upload_lives_in_the_bucket_its_record_names() {
        let (buckets, main, other) = two_buckets();
        let big: Vec<u8> = (0..2 * MIN_PART_SIZE as usize + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        let small = b"0123456789".to_vec();
        let mut far = upload(&buckets, new_upload(big.len(), Some("other")), &big).await;
        let near = upload(&buckets, new_upload(small.len(), None), &small).await;
        let far_key = Path::from(format!("uploads/{}", far.id));
        assert!(other.head(&far_key).await.is_ok(), "object in its bucket");
        assert!(
            main.head(&far_key).await.is_err(),
            "nothing in the default bucket"
        );
        assert_eq!(read_all(&buckets, &far).await, big);
        assert_eq!(buckets.describe(&far)["Bucket"], "other");
        assert_eq!(buckets.describe(&near)["Bucket"], "main");
        // The small one went up in one PUT, which carries its attributes.
        let got = main
            .get(&Path::from(format!("uploads/{}", near.id)))
            .await
            .expect("get");
        assert_eq!(
            got.attributes
                .get(&Attribute::ContentType)
                .map(|v| v.as_ref()),
            Some("video/mp4")
        );
        assert_eq!(
            got.attributes
                .get(&Attribute::ContentDisposition)
                .map(|v| v.as_ref()),
            Some("inline; filename=\"a.mp4\"")
        );

        // A final upload in the default bucket from parts in both.
        let mut target = new_upload(0, None);
        target.length = None;
        target.storage = buckets.create(&target).await.expect("create final");
        let state = buckets
            .concatenate(&target, &[far.clone(), near.clone()])
            .await
            .expect("concatenate");
        target.storage = state;
        target.offset = (big.len() + small.len()) as u64;
        assert_eq!(read_all(&buckets, &target).await, [big, small].concat());

        buckets.delete(&far).await.expect("delete");
        assert!(
            other.head(&far_key).await.is_err(),
            "deleted from its bucket"
        );
        far.storage = serde_json::Value::Null;
        buckets.delete(&far).await.expect("deleting again is fine");
    }

    /// A record naming a bucket the server was not started with is refused
    /// at every step: the same key in the default bucket is never touched.
    #[tokio::test]
    async fn a_bucket_no_longer_allowed_is_refused_not_guessed() {
        let (buckets, main, _) = two_buckets();
        let info = upload(&buckets, new_upload(10, None), b"0123456789").await;
        let mut stray = info.clone();
        stray.bucket = Some("gone".into());
        assert!(matches!(
            buckets.delete(&stray).await,
            Err(DataError::Backend(_))
        ));
        assert!(buckets.read(&stray, 0, 10).await.is_err());
        assert!(buckets.writer(&stray, IoPermit::unshared()).await.is_err());
        assert!(buckets
            .download_url(&stray, Duration::from_secs(60))
            .await
            .is_err());
        let key = Path::from(format!("uploads/{}", info.id));
        assert!(
            main.head(&key).await.is_ok(),
            "the default bucket's object stays"
        );
        assert_eq!(read_all(&buckets, &info).await, b"0123456789");
    }
}
