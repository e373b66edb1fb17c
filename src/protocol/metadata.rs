//! `Upload-Metadata`: comma-separated `key base64value` pairs.

use super::ProtocolError;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use std::collections::BTreeMap;

/// Standard alphabet; padding optional on input (some clients strip it),
/// always written on output.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Default longest `Upload-Metadata` header, in bytes (`--max-metadata-size`).
pub const MAX_METADATA_LEN: usize = 4 * 1024;

/// Most key-value pairs one `Upload-Metadata` header may carry.
pub const MAX_METADATA_PAIRS: usize = 256;

/// Parsed upload metadata. Keys are unique; values are arbitrary bytes.
/// The header text as sent is kept by the caller so HEAD can echo it exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pairs: BTreeMap<String, Vec<u8>>,
}

impl Metadata {
    /// Parses a header value of at most [`MAX_METADATA_LEN`] bytes.
    pub fn parse(header: &str) -> Result<Self, ProtocolError> {
        Self::parse_within(header, MAX_METADATA_LEN)
    }

    /// Parses a header value of at most `max_len` bytes and
    /// [`MAX_METADATA_PAIRS`] pairs. An empty (or all-whitespace) value means
    /// no metadata, which tuspy sends.
    pub fn parse_within(header: &str, max_len: usize) -> Result<Self, ProtocolError> {
        if header.len() > max_len {
            return Err(ProtocolError::MetadataTooLarge(format!(
                "{} bytes, at most {max_len} allowed",
                header.len()
            )));
        }
        let mut pairs = BTreeMap::new();
        if header.trim().is_empty() {
            return Ok(Metadata { pairs });
        }
        for (i, raw) in header.split(',').enumerate() {
            if i == MAX_METADATA_PAIRS {
                return Err(ProtocolError::MetadataTooLarge(format!(
                    "more than {MAX_METADATA_PAIRS} keys"
                )));
            }
            let pair = raw.trim_matches(|c| c == ' ' || c == '\t');
            if pair.is_empty() {
                return Err(ProtocolError::InvalidMetadata("empty pair".into()));
            }
            let (key, value) = match pair.split_once(' ') {
                Some((k, v)) => (k, v.trim_start_matches(' ')),
                None => (pair, ""),
            };
            if !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(ProtocolError::InvalidMetadata(format!(
                    "key {:?} is not printable ASCII",
                    truncate(key)
                )));
            }
            if value.contains(' ') {
                return Err(ProtocolError::InvalidMetadata(format!(
                    "value of {:?} contains a space",
                    truncate(key)
                )));
            }
            let decoded = B64.decode(value).map_err(|_| {
                ProtocolError::InvalidMetadata(format!(
                    "value of {:?} is not valid base64",
                    truncate(key)
                ))
            })?;
            if pairs.insert(key.to_owned(), decoded).is_some() {
                return Err(ProtocolError::InvalidMetadata(format!(
                    "duplicate key {:?}",
                    truncate(key)
                )));
            }
        }
        Ok(Metadata { pairs })
    }

    /// The raw bytes of a value.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs.get(key).map(Vec::as_slice)
    }

    /// A value decoded as UTF-8, if it is valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Values as (lossy) UTF-8 strings, e.g. for hook payloads.
    pub fn to_string_map(&self) -> BTreeMap<String, String> {
        self.pairs
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// Builds metadata from key/value pairs (keys must be valid header keys).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<Vec<u8>>,
    {
        Metadata {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Serialises to the header form (`key value,key value`, padded base64).
    pub fn encode(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k} {}", B64.encode(v))
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_spec_example() {
        let m = Metadata::parse("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(m.get_str("filename"), Some("world_domination_plan.pdf"));
        assert_eq!(m.get("is_confidential"), Some(&b""[..]));
    }

    #[test]
    fn empty_header_is_no_metadata() {
        assert!(Metadata::parse("").unwrap().is_empty());
        assert!(Metadata::parse("  ").unwrap().is_empty());
    }

    #[test]
    fn tolerates_space_after_comma_and_missing_padding() {
        let m = Metadata::parse("a YQ, b Yg").unwrap();
        assert_eq!(m.get_str("a"), Some("a"));
        assert_eq!(m.get_str("b"), Some("b"));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "a YQ==,a Yg==",
            "a !!!",
            "a YQ== extra",
            ",",
            "a YQ==,",
            "clé YQ==",
            "a\u{1} YQ==",
        ] {
            assert!(Metadata::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            Metadata::parse(&"a".repeat(MAX_METADATA_LEN + 1)),
            Err(ProtocolError::MetadataTooLarge(_))
        ));
    }

    #[test]
    fn limits() {
        let keys = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            Metadata::parse(&keys(MAX_METADATA_PAIRS))
                .unwrap()
                .iter()
                .count(),
            MAX_METADATA_PAIRS
        );
        assert!(matches!(
            Metadata::parse(&keys(MAX_METADATA_PAIRS + 1)),
            Err(ProtocolError::MetadataTooLarge(_))
        ));
        let value = format!("name {}", "QUJD".repeat(100));
        assert!(Metadata::parse_within(&value, value.len()).is_ok());
        assert!(matches!(
            Metadata::parse_within(&value, value.len() - 1),
            Err(ProtocolError::MetadataTooLarge(_))
        ));
    }

    #[test]
    fn non_ascii_values_round_trip() {
        let m = Metadata::from_pairs([("filename", "vidéo 🎬.mp4")]);
        let back = Metadata::parse(&m.encode()).unwrap();
        assert_eq!(back.get_str("filename"), Some("vidéo 🎬.mp4"));
    }

    proptest! {
        #[test]
        fn encode_then_parse_is_identity(
            pairs in proptest::collection::btree_map("[!-+--~]{1,16}", proptest::collection::vec(any::<u8>(), 0..64), 0..8)
        ) {
            let m = Metadata::from_pairs(pairs);
            prop_assert_eq!(Metadata::parse(&m.encode()).unwrap(), m);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = Metadata::parse(&s);
        }

        #[test]
        fn size_limit_is_on_the_whole_header(key in "[a-z]{1,8}", len in (MAX_METADATA_LEN - 64)..(MAX_METADATA_LEN + 64)) {
            // One pair whose header is exactly `len` bytes: a key, a space and
            // base64 of `len - key - 1` characters (a multiple of 4).
            let b64_len = (len - key.len() - 1) / 4 * 4;
            let header = format!("{key} {}", "A".repeat(b64_len));
            let parsed = Metadata::parse(&header);
            prop_assert_eq!(parsed.is_ok(), header.len() <= MAX_METADATA_LEN, "{} bytes", header.len());
            if let Ok(m) = parsed {
                prop_assert_eq!(m.get(&key).map(<[u8]>::len), Some(b64_len / 4 * 3));
            }
        }

        #[test]
        fn duplicate_keys_are_rejected(key in "[!-+--~]{1,16}", a in proptest::collection::vec(any::<u8>(), 0..16), b in proptest::collection::vec(any::<u8>(), 0..16)) {
            let header = format!("{},{}", Metadata::from_pairs([(key.clone(), a)]).encode(), Metadata::from_pairs([(key, b)]).encode());
            prop_assert!(Metadata::parse(&header).is_err(), "{:?}", header);
        }

        #[test]
        fn keys_outside_visible_ascii_are_rejected(prefix in "[a-z]{1,4}", bad in "[\\x00-\\x08\\x0a-\\x1f\\x7f-\\u{10ffff}]", value in proptest::collection::vec(any::<u8>(), 0..16)) {
            let m = Metadata::from_pairs([("v", value)]).encode();
            let header = format!("{prefix}{bad}{}", &m[1..]);
            prop_assert!(Metadata::parse(&header).is_err(), "{:?}", header);
        }

        #[test]
        fn values_are_one_base64_token(v1 in proptest::collection::vec(any::<u8>(), 1..16), v2 in proptest::collection::vec(any::<u8>(), 1..16)) {
            let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
            // Two tokens, or characters outside the alphabet, are not a value.
            for bad in [format!("k {} {}", b64(&v1), b64(&v2)), format!("k {}!", b64(&v1)), format!("k -{}", b64(&v1))] {
                prop_assert!(Metadata::parse(&bad).is_err(), "{:?}", bad);
            }
        }

        #[test]
        fn unpadded_values_equal_padded(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let padded = Metadata::from_pairs([("k", v.clone())]);
            let unpadded = padded.encode().trim_end_matches('=').to_owned();
            let parsed = Metadata::parse(&unpadded).unwrap();
            prop_assert_eq!(parsed.get("k"), Some(v.as_slice()));
        }
    }
}
