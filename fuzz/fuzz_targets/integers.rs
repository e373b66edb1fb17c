//! tus integers (`Upload-Length`, `Upload-Offset`, `Content-Length`) and
//! `Upload-Defer-Length`: accepted iff the value, without surrounding
//! spaces/tabs, is 1+ ASCII digits that fit a u64; the decimal form of
//! the result parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusker_fuzz::protocol::headers::{parse_defer_length, parse_u64};

fuzz_target!(|data: &[u8]| {
    let Some(value) = tusker_fuzz::text(data) else {
        return;
    };
    let core = value.trim_matches(|c| c == ' ' || c == '\t');
    let digits = !core.is_empty() && core.bytes().all(|b| b.is_ascii_digit());
    match parse_u64("Upload-Offset", value) {
        Ok(n) => {
            assert!(digits, "{value:?} accepted");
            let significant = core.trim_start_matches('0');
            assert!(significant.len() <= 20);
            assert_eq!(
                n.to_string(),
                if significant.is_empty() {
                    "0"
                } else {
                    significant
                }
            );
            assert_eq!(parse_u64("Upload-Offset", &n.to_string()), Ok(n));
        }
        Err(_) => {
            // Rejected digits must overflow u64.
            if digits {
                assert!(
                    core.trim_start_matches('0').len() >= 20,
                    "{value:?} rejected"
                );
            }
        }
    }
    assert_eq!(
        parse_defer_length(value).is_ok(),
        value.trim() == "1",
        "{value:?}"
    );
});
