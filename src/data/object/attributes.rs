//! The attributes of a finished upload's object: `Content-Type` from the
//! `filetype` metadata, `Content-Disposition` from `filename`, what a
//! pre-create hook set (`Representation`), and every other metadata key
//! as user metadata (`x-amz-meta-*`, `x-goog-meta-*`, `x-ms-meta-*`).

use crate::model::UploadInfo;
use crate::protocol::representation::{content_disposition, media_type, served_type};
use crate::protocol::Metadata;
use base64::Engine as _;
use object_store::{Attribute, AttributeValue, Attributes};

/// S3's limit on user metadata: the bytes of every key and value together
/// (GCS and Azure allow 8 KiB; the smallest limit applies everywhere).
pub const USER_METADATA_LIMIT: usize = 2048;

/// Metadata keys that become headers of their own rather than user metadata.
const HEADER_KEYS: [&str; 2] = ["filename", "filetype"];

/// The attributes for `info`'s object, and the metadata keys left out
/// (a key no store accepts, a value that is not UTF-8, or past
/// [`USER_METADATA_LIMIT`]).
pub fn attributes(info: &UploadInfo, kind: &str) -> (Attributes, Vec<String>) {
    let metadata = info
        .metadata
        .as_deref()
        .and_then(|raw| Metadata::parse(raw).ok())
        .unwrap_or_default();
    let mut out = Attributes::new();
    let chosen = &info.representation;
    let content_type = chosen
        .content_type
        .clone()
        .or_else(|| metadata.get_str("filetype").and_then(media_type));
    // Shown inline only where tusker's own GET would show it inline: a
    // browser following a download link saves anything else.
    let inline = served_type(content_type.as_deref()).1;
    if let Some(content_type) = content_type {
        out.insert(Attribute::ContentType, content_type.into());
    }
    let disposition = chosen.content_disposition.clone().unwrap_or_else(|| {
        let name = metadata
            .get_str("filename")
            .or_else(|| metadata.get_str("name"));
        content_disposition(name, inline)
    });
    out.insert(Attribute::ContentDisposition, disposition.into());
    if let Some(cache) = &chosen.cache_control {
        out.insert(Attribute::CacheControl, AttributeValue::from(cache.clone()));
    }
    let (user, dropped) = user_metadata(&metadata, kind);
    for (key, value) in user {
        out.insert(Attribute::Metadata(key.into()), value.into());
    }
    (out, dropped)
}

/// Metadata keys and values as user metadata, within
/// [`USER_METADATA_LIMIT`]: keys are taken in order (sorted), and one that
/// does not fit in what is left is dropped.
fn user_metadata(metadata: &Metadata, kind: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut kept: Vec<(String, String)> = Vec::new();
    let mut dropped = Vec::new();
    let mut used = 0;
    for (key, value) in metadata.iter() {
        if HEADER_KEYS.contains(&key) {
            continue;
        }
        let stored = store_key(key, kind);
        let value = std::str::from_utf8(value).ok().map(encode_value);
        let (Some(stored), Some(value)) = (stored, value) else {
            dropped.push(key.to_owned());
            continue;
        };
        let size = stored.len() + value.len();
        if used + size > USER_METADATA_LIMIT || kept.iter().any(|(k, _)| *k == stored) {
            dropped.push(key.to_owned());
            continue;
        }
        used += size;
        kept.push((stored, value));
    }
    (kept, dropped)
}

/// A metadata key as a user-metadata key, or `None` when it has characters
/// a store refuses. S3 and GCS keep header names (stored lowercase); Azure
/// wants C# identifiers, so `-` and `.` become `_` and a leading digit gets
/// a `_` before it.
fn store_key(key: &str, kind: &str) -> Option<String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if key.is_empty() || key.len() > 128 || !key.bytes().all(allowed) {
        return None;
    }
    let key = key.to_ascii_lowercase();
    if kind != "azure" {
        return Some(key);
    }
    let key = key.replace(['-', '.'], "_");
    Some(match key.starts_with(|c: char| c.is_ascii_digit()) {
        true => format!("_{key}"),
        false => key,
    })
}

/// A value as sent in a header: printable ASCII as it is; anything else
/// (non-ASCII, control characters, spaces at either end, or text that
/// would read as an encoded word) as one RFC 2047 encoded word, which S3
/// decodes back to the UTF-8 text when it stores the value.
fn encode_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim() == value
        && !value.starts_with("=?");
    if plain {
        value.to_owned()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Representation;
    use crate::protocol::UploadId;

    fn info(pairs: &[(&str, &[u8])]) -> UploadInfo {
        UploadInfo {
            metadata: Some(
                Metadata::from_pairs(pairs.iter().map(|(k, v)| (*k, v.to_vec()))).encode(),
            ),
            ..UploadInfo::new(UploadId::generate(), Some(1), 0)
        }
    }

    fn get(a: &Attributes, key: Attribute) -> Option<String> {
        a.get(&key).map(|v| v.as_ref().to_owned())
    }

    #[test]
    fn metadata_becomes_headers_and_user_metadata() {
        let upload = info(&[
            ("filename", "vidéo.mp4".as_bytes()),
            ("filetype", b"Video/MP4"),
            ("Owner", b"alice"),
            ("caption", "café au lait".as_bytes()),
            ("note", b" padded"),
        ]);
        let (a, dropped) = attributes(&upload, "s3");
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(
            get(&a, Attribute::ContentType).as_deref(),
            Some("video/mp4")
        );
        assert_eq!(
            get(&a, Attribute::ContentDisposition).as_deref(),
            Some("inline; filename=\"vid_o.mp4\"; filename*=UTF-8''vid%C3%A9o.mp4")
        );
        assert_eq!(
            get(&a, Attribute::Metadata("owner".into())).as_deref(),
            Some("alice")
        );
        assert_eq!(
            get(&a, Attribute::Metadata("caption".into())).as_deref(),
            Some("=?UTF-8?B?Y2Fmw6kgYXUgbGFpdA==?=")
        );
        assert_eq!(
            get(&a, Attribute::Metadata("note".into())).as_deref(),
            Some("=?UTF-8?B?IHBhZGRlZA==?=")
        );
        assert!(a.get(&Attribute::Metadata("filename".into())).is_none());
        assert!(a.get(&Attribute::CacheControl).is_none());
    }

    #[test]
    fn unsafe_types_are_stored_but_never_inline() {
        let (a, _) = attributes(
            &info(&[("filetype", b"text/html"), ("filename", b"x.html")]),
            "s3",
        );
        assert_eq!(
            get(&a, Attribute::ContentType).as_deref(),
            Some("text/html")
        );
        assert_eq!(
            get(&a, Attribute::ContentDisposition).as_deref(),
            Some("attachment; filename=\"x.html\"")
        );
        // No valid media type: no Content-Type at all (the store's default).
        let (a, _) = attributes(&info(&[("filetype", b"video/mp4\r\nX-Evil: 1")]), "s3");
        assert!(a.get(&Attribute::ContentType).is_none());
        assert_eq!(
            get(&a, Attribute::ContentDisposition).as_deref(),
            Some("attachment")
        );
    }

    #[test]
    fn a_hooks_choice_wins() {
        let mut upload = info(&[("filetype", b"video/mp4"), ("filename", b"a.mp4")]);
        upload.representation = Representation {
            content_type: Some("video/webm".into()),
            content_disposition: Some("attachment; filename=\"b.webm\"".into()),
            cache_control: Some("max-age=3600".into()),
        };
        let (a, _) = attributes(&upload, "gcs");
        assert_eq!(
            get(&a, Attribute::ContentType).as_deref(),
            Some("video/webm")
        );
        assert_eq!(
            get(&a, Attribute::ContentDisposition).as_deref(),
            Some("attachment; filename=\"b.webm\"")
        );
        assert_eq!(
            get(&a, Attribute::CacheControl).as_deref(),
            Some("max-age=3600")
        );
    }

    #[test]
    fn user_metadata_stays_within_the_limit_in_key_order() {
        let big = vec![b'x'; 1500];
        let mid = vec![b'y'; 600];
        let upload = info(&[("a", &big), ("b", &mid), ("c", b"small"), ("bad:key", b"v")]);
        let (a, dropped) = attributes(&upload, "s3");
        assert_eq!(dropped, vec!["b".to_owned(), "bad:key".to_owned()]);
        assert!(a.get(&Attribute::Metadata("a".into())).is_some());
        assert_eq!(
            get(&a, Attribute::Metadata("c".into())).as_deref(),
            Some("small")
        );
        let total: usize = a
            .iter()
            .filter_map(|(k, v)| match k {
                Attribute::Metadata(k) => Some(k.len() + v.as_ref().len()),
                _ => None,
            })
            .sum();
        assert!(total <= USER_METADATA_LIMIT, "{total}");
    }

    #[test]
    fn keys_fit_each_store() {
        assert_eq!(store_key("My-Key.v2", "s3").as_deref(), Some("my-key.v2"));
        assert_eq!(
            store_key("My-Key.v2", "azure").as_deref(),
            Some("my_key_v2")
        );
        assert_eq!(store_key("2nd", "azure").as_deref(), Some("_2nd"));
        assert_eq!(store_key("a:b", "s3"), None);
        assert_eq!(store_key("", "s3"), None);
        // Two keys that are one once lowercased: the first in order stays.
        let upload = info(&[("Tag", b"1"), ("tag", b"2")]);
        let (a, dropped) = attributes(&upload, "s3");
        assert_eq!(
            get(&a, Attribute::Metadata("tag".into())).as_deref(),
            Some("1")
        );
        assert_eq!(dropped, vec!["tag".to_owned()]);
        // Bytes that are not UTF-8 are left out rather than mislabelled.
        let (_, dropped) = attributes(&info(&[("raw", &[0xff, 0xfe])]), "s3");
        assert_eq!(dropped, vec!["raw".to_owned()]);
    }

    #[test]
    fn values_are_always_header_safe() {
        for v in [
            "plain",
            "tab\there",
            "line\r\nbreak",
            "=?UTF-8?B?x?=",
            "ünï",
            "",
        ] {
            let e = encode_value(v);
            assert!(
                e.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "{v:?} -> {e:?}"
            );
        }
        assert_eq!(encode_value("plain"), "plain");
    }
}
