//! Upload identifiers.

use super::ProtocolError;
use std::fmt;

/// Longest id accepted on the wire.
pub const MAX_ID_LEN: usize = 128;

/// A validated upload id: 1–128 characters of `[A-Za-z0-9_-]`, so it is safe
/// as a file name, an object key segment and a URL path segment. Generated
/// ids are UUIDv4 in simple form (122 random bits).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn generate() -> Self {
        UploadId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Validates an id taken from a request path or a stored record.
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        let valid = !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(UploadId(s.to_owned()))
        } else {
            Err(ProtocolError::InvalidId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UploadId {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UploadId::parse(&s)
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = UploadId::generate();
        let b = UploadId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(UploadId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn rejects_traversal_and_encodings() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "%2e%2e",
            "a b",
            "é",
            &"a".repeat(129),
        ] {
            assert!(UploadId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn accepted_iff_safe_charset_and_length(s in "[A-Za-z0-9_./%\\\\é-]{0,140}") {
            let safe = (1..=MAX_ID_LEN).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            prop_assert_eq!(UploadId::parse(&s).is_ok(), safe, "{:?}", s);
        }

        #[test]
        fn valid_ids_round_trip_through_serde(s in "[A-Za-z0-9_-]{1,128}") {
            let id = UploadId::parse(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<UploadId>(&json).unwrap(), id);
        }

        #[test]
        fn traversal_never_parses(prefix in "[a-z0-9]{0,8}", sep in "\\.\\.|/|%2[eEfF]|\\\\|\\x00", suffix in "[a-z0-9]{0,8}") {
            let s = format!("{prefix}{sep}{suffix}");
            prop_assert!(UploadId::parse(&s).is_err(), "{:?}", s);
            prop_assert!(serde_json::from_str::<UploadId>(&serde_json::to_string(&s).unwrap()).is_err());
        }
    }
}
