//! Upload ids from request paths and concat URLs: accepted iff 1–128
//! characters of `[A-Za-z0-9_-]`, so an id can never name another
//! directory (`..`, `/`, `%2e`) or break a header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusker_fuzz::protocol::id::MAX_ID_LEN;
use tusker_fuzz::protocol::UploadId;

fuzz_target!(|data: &[u8]| {
    let Some(value) = tusker_fuzz::text(data) else {
        return;
    };
    let valid = (1..=MAX_ID_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match UploadId::parse(value) {
        Ok(id) => {
            assert!(valid, "{value:?} accepted");
            assert_eq!(id.as_str(), value);
            assert!(!id.as_str().contains(['.', '/', '%', '\\']));
            let json = serde_json::to_string(&id).expect("serialises");
            assert_eq!(serde_json::from_str::<UploadId>(&json).ok(), Some(id));
        }
        Err(_) => {
            assert!(!valid, "{value:?} rejected");
            let json = serde_json::to_string(value).expect("serialises");
            assert!(serde_json::from_str::<UploadId>(&json).is_err());
        }
    }
});
