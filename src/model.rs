//! The upload record shared by the engine and the stores beneath it.

use crate::protocol::UploadId;
use serde::{Deserialize, Serialize};

/// Role of an upload in the concatenation extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Concat {
    #[default]
    None,
    Partial,
    /// A final upload made of these partial uploads, in order.
    Final {
        parts: Vec<UploadId>,
    },
}

/// Everything the server knows about one upload. Persisted by a `MetaStore`
/// as JSON, so fields are only ever added with `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub id: UploadId,
    /// Declared length; `None` while the length is deferred.
    pub length: Option<u64>,
    /// Bytes durably stored. Never decreases.
    pub offset: u64,
    /// `Upload-Metadata` exactly as the client sent it at creation.
    #[serde(default)]
    pub metadata: Option<String>,
    #[serde(default)]
    pub concat: Concat,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which an unfinished upload is gone.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// True once every byte is stored and the data store has sealed it
    /// (for object storage: the multipart upload is completed).
    #[serde(default)]
    pub finished: bool,
    /// Data-store specific state (multipart id, part ETags, staged tail…).
    #[serde(default)]
    pub storage: serde_json::Value,
    /// Where the finished upload lands, relative to the storage root, when
    /// a pre-create hook chose it; otherwise the upload id.
    #[serde(default)]
    pub destination: Option<String>,
    /// The post-finish hook is owed and not yet delivered.
    #[serde(default)]
    pub finish_hook_pending: bool,
    /// How many times the record was saved: the fencing token of its
    /// writes. A save or removal applies only to the version it was read
    /// at (compare-and-set, see `MetaStore::save`), so a writer whose view
    /// is stale (an instance frozen while another took the upload over)
    /// changes nothing.
    #[serde(default)]
    pub version: u64,
    /// The `sub` of the token that created the upload (JWT authorization);
    /// every later request must carry a token of the same subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The object-storage bucket holding the upload when a pre-create hook
    /// chose one other than `--storage`'s (among `--s3-allowed-buckets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Headers of the finished upload that a pre-create hook set.
    #[serde(default, skip_serializing_if = "Representation::is_empty")]
    pub representation: Representation,
}

/// Headers a pre-create hook set for the finished upload
/// (`ChangeFileInfo.Storage`): sent by GET and stored on the object in
/// object storage. Validated before they are recorded (no control
/// characters; a media type; a disposition type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Representation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
}

impl Representation {
    pub fn is_empty(&self) -> bool {
        self == &Representation::default()
    }
}

impl UploadInfo {
    /// A new record: nothing stored yet, no metadata, not part of a
    /// concatenation, no expiry. Other fields are set with struct update
    /// syntax (`UploadInfo { metadata, ..UploadInfo::new(id, length, now) }`).
    pub fn new(id: UploadId, length: Option<u64>, created_at: u64) -> Self {
        UploadInfo {
            id,
            length,
            offset: 0,
            metadata: None,
            concat: Concat::None,
            created_at,
            expires_at: None,
            finished: false,
            storage: serde_json::Value::Null,
            destination: None,
            finish_hook_pending: false,
            version: 0,
            owner: None,
            bucket: None,
            representation: Representation::default(),
        }
    }

    /// Whether every declared byte has arrived (sealing may still be pending).
    pub fn is_complete(&self) -> bool {
        self.length == Some(self.offset)
    }

    /// The name under which the meta store claims the upload's
    /// destination: the destination itself in `--storage`'s bucket,
    /// `//BUCKET/DESTINATION` in another (no destination starts with `/`),
    /// so one key in two buckets is two destinations.
    pub fn destination_claim(&self) -> Option<String> {
        let dest = self.destination.as_ref()?;
        Some(match &self.bucket {
            Some(bucket) => format!("//{bucket}/{dest}"),
            None => dest.clone(),
        })
    }

    pub fn is_final(&self) -> bool {
        matches!(self.concat, Concat::Final { .. })
    }

    /// Unfinished uploads expire `--expire-after` their last write;
    /// finished ones only with `--expire-finished-after`, which gives them
    /// an expiry when they finish.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Current time in unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
