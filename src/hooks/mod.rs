//! Hooks: the application learns about uploads and can veto them. The wire
//! format is the one of tusd v2's HTTP hooks, so existing receivers work.

pub mod http;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub use http::{HookConfig, Hooks};

/// The events a hook receiver can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookType {
    PreCreate,
    PostCreate,
    PostReceive,
    PreFinish,
    PostFinish,
    PreTerminate,
    PostTerminate,
    /// Before HEAD, PATCH, GET and DELETE: per-user ownership checks.
    PreAccess,
}

impl HookType {
    pub const ALL: [HookType; 8] = [
        HookType::PreCreate,
        HookType::PostCreate,
        HookType::PostReceive,
        HookType::PreFinish,
        HookType::PostFinish,
        HookType::PreTerminate,
        HookType::PostTerminate,
        HookType::PreAccess,
    ];

    /// Events enabled when `--hooks-enabled-events` is not given (pre-access
    /// is opt-in: it adds a round trip to every request).
    pub const DEFAULT: [HookType; 7] = [
        HookType::PreCreate,
        HookType::PostCreate,
        HookType::PostReceive,
        HookType::PreFinish,
        HookType::PostFinish,
        HookType::PreTerminate,
        HookType::PostTerminate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HookType::PreCreate => "pre-create",
            HookType::PostCreate => "post-create",
            HookType::PostReceive => "post-receive",
            HookType::PreFinish => "pre-finish",
            HookType::PostFinish => "post-finish",
            HookType::PreTerminate => "pre-terminate",
            HookType::PostTerminate => "post-terminate",
            HookType::PreAccess => "pre-access",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        HookType::ALL.into_iter().find(|t| t.name() == s.trim())
    }

    /// Blocking hooks whose answer can change what happens.
    pub fn is_pre(self) -> bool {
        matches!(
            self,
            HookType::PreCreate
                | HookType::PreFinish
                | HookType::PreTerminate
                | HookType::PreAccess
        )
    }
}

/// The request that caused an event (empty for background events such as
/// the assembly of a final upload).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestInfo {
    pub method: String,
    #[serde(rename = "URI")]
    pub uri: String,
    pub remote_addr: String,
    pub header: BTreeMap<String, Vec<String>>,
    /// The verified token of the request, with JWT authorization on.
    #[serde(skip)]
    pub auth: Option<std::sync::Arc<crate::auth::Identity>>,
}

/// `Event.Upload` of a hook request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FileInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub size: u64,
    pub size_is_deferred: bool,
    pub offset: u64,
    pub meta_data: BTreeMap<String, String>,
    pub is_partial: bool,
    pub is_final: bool,
    pub partial_uploads: Option<Vec<String>>,
    pub storage: BTreeMap<String, String>,
}

/// `Event` of a hook request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HookEvent {
    pub upload: FileInfo,
    #[serde(rename = "HTTPRequest")]
    pub http_request: RequestInfo,
    /// tusker's addition beside tusd's keys: the verified token's subject
    /// and claims (`{"Subject": …, "Claims": {…}}`), with JWT authorization
    /// on; absent otherwise. Receivers that do not know it ignore it.
    #[serde(rename = "Auth", skip_serializing_if = "Option::is_none")]
    pub auth: Option<std::sync::Arc<crate::auth::Identity>>,
}

impl HookEvent {
    /// A key naming this event, the same each time it is sent again: an
    /// upload's events happen once each, except progress events, which
    /// differ by offset. HTTP hooks send it as `Idempotency-Key`, event
    /// sinks as `Id`.
    pub fn key(&self, kind: HookType) -> String {
        match kind {
            HookType::PostReceive => {
                format!("{}-{}-{}", self.upload.id, kind.name(), self.upload.offset)
            }
            _ => format!("{}-{}", self.upload.id, kind.name()),
        }
    }
}

/// The body POSTed to the hook receiver.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HookRequest<'a> {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub event: &'a HookEvent,
}

/// `HTTPResponse` of a hook answer: what to answer the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HookHttpResponse {
    pub status_code: Option<u16>,
    pub body: Option<String>,
    pub header: Option<HashMap<String, String>>,
}

/// `ChangeFileInfo` of a pre-create answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ChangeFileInfo {
    #[serde(rename = "ID")]
    pub id: Option<String>,
    pub meta_data: Option<BTreeMap<String, String>>,
    /// Destination of the finished upload: `{"Key": "…"}` (object storage)
    /// or `{"Path": "…"}` (local files), relative to the storage root;
    /// also `Bucket` (one of `--s3-allowed-buckets`) and the finished
    /// upload's `ContentType`, `ContentDisposition` and `CacheControl`
    /// (see `upload::hooks::apply_storage_choices`).
    pub storage: Option<HashMap<String, String>>,
}

/// A hook receiver's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HookResponse {
    #[serde(rename = "HTTPResponse")]
    pub http_response: Option<HookHttpResponse>,
    pub reject_upload: bool,
    pub change_file_info: Option<ChangeFileInfo>,
    pub stop_upload: bool,
    pub reject_termination: bool,
}

/// Errors of a hook call.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook receiver unreachable: {0}")]
    Unreachable(String),
    #[error("hook receiver answered {status}")]
    Status { status: u16, body: String },
    #[error("hook receiver answered invalid JSON: {0}")]
    InvalidResponse(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_matches_tusd() {
        let event = HookEvent {
            upload: FileInfo {
                id: "abc".into(),
                size: 10,
                meta_data: BTreeMap::from([("filename".into(), "a.mp4".into())]),
                ..FileInfo::default()
            },
            http_request: RequestInfo {
                method: "POST".into(),
                uri: "/files/".into(),
                remote_addr: "127.0.0.1:1".into(),
                header: BTreeMap::new(),
                auth: None,
            },
            auth: None,
        };
        let v = serde_json::to_value(HookRequest {
            kind: HookType::PreCreate.name(),
            event: &event,
        })
        .unwrap();
        assert_eq!(v["Type"], "pre-create");
        assert_eq!(v["Event"]["Upload"]["ID"], "abc");
        assert_eq!(v["Event"]["Upload"]["SizeIsDeferred"], false);
        assert_eq!(v["Event"]["Upload"]["MetaData"]["filename"], "a.mp4");
        assert_eq!(
            v["Event"]["Upload"]["PartialUploads"],
            serde_json::Value::Null
        );
        assert_eq!(v["Event"]["HTTPRequest"]["URI"], "/files/");
        assert_eq!(v["Event"]["HTTPRequest"]["RemoteAddr"], "127.0.0.1:1");
        assert!(v["Event"].get("Auth").is_none(), "no Auth without a token");
    }

    #[test]
    fn the_verified_token_rides_beside_tusds_keys() {
        let identity = std::sync::Arc::new(crate::auth::Identity {
            subject: "alice".into(),
            claims: serde_json::Map::from_iter([("sub".to_owned(), "alice".into())]),
            max_size: None,
        });
        let event = HookEvent {
            upload: FileInfo::default(),
            http_request: RequestInfo {
                auth: Some(identity.clone()),
                ..RequestInfo::default()
            },
            auth: Some(identity),
        };
        let v = serde_json::to_value(HookRequest {
            kind: HookType::PreAccess.name(),
            event: &event,
        })
        .unwrap();
        assert_eq!(v["Event"]["Auth"]["Subject"], "alice");
        assert_eq!(v["Event"]["Auth"]["Claims"]["sub"], "alice");
        assert!(v["Event"]["HTTPRequest"].get("Auth").is_none());
    }

    #[test]
    fn response_json_matches_tusd() {
        let r: HookResponse = serde_json::from_str(
            r#"{"HTTPResponse":{"StatusCode":403,"Body":"no","Header":{"X-A":"b"}},
                "RejectUpload":true,"ChangeFileInfo":{"ID":"x","MetaData":{"k":"v"},"Storage":{"Key":"a/b"}}}"#,
        )
        .unwrap();
        assert!(r.reject_upload);
        assert_eq!(r.http_response.unwrap().status_code, Some(403));
        assert_eq!(r.change_file_info.unwrap().storage.unwrap()["Key"], "a/b");
        let empty: HookResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, HookResponse::default());
    }

    #[test]
    fn names_round_trip() {
        for t in HookType::ALL {
            assert_eq!(HookType::parse(t.name()), Some(t));
        }
    }
}
