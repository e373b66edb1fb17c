//! The `Content-Type` checks (`application/offset+octet-stream` for tus,
//! `application/partial-upload` for IETF v6+): decided by the media type
//! alone, letter case and parameters ignored, and never both at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusker_fuzz::protocol::headers::is_offset_octet_stream;
use tusker_fuzz::protocol::ietf::is_partial_upload;

fuzz_target!(|data: &[u8]| {
    let Some(value) = tusker_fuzz::text(data) else {
        return;
    };
    let tus = is_offset_octet_stream(value);
    let ietf = is_partial_upload(value);
    assert!(!(tus && ietf), "{value:?} is both");
    if tus {
        assert!(value
            .to_ascii_lowercase()
            .contains("application/offset+octet-stream"));
    }
    if ietf {
        assert!(value
            .to_ascii_lowercase()
            .contains("application/partial-upload"));
    }
    // Parameters and case do not change the verdict.
    if !value.contains(';') {
        let with_params = format!("{value}; charset=x; q=\"a;b\"");
        assert_eq!(is_offset_octet_stream(&with_params), tus, "{value:?}");
        assert_eq!(is_partial_upload(&with_params), ietf, "{value:?}");
    }
    assert_eq!(is_offset_octet_stream(&value.to_ascii_uppercase()), tus);
    assert_eq!(is_partial_upload(&value.to_ascii_lowercase()), ietf);
});
