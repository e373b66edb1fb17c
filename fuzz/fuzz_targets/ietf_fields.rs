//! The IETF draft's structured fields: `Upload-Complete` /
//! `Upload-Incomplete` (sf-boolean), `Upload-Offset` / `Upload-Length`
//! (sf-integer), `Upload-Draft-Interop-Version`, and `Upload-Limit` and
//! the 104 response built by the server, and the filename recorded from a
//! creation's `Content-Disposition`. Accepted values agree with an
//! independent RFC 9651 parse; serialised values parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfv::{BareItem, Parser};
use tusker_fuzz::protocol::ietf::{
    format_bool, interim_104, parse_bool, parse_u64, recorded_filename, InteropVersion,
    UploadLimit, MAX_FILENAME,
};

fuzz_target!(|data: &[u8]| {
    let Some(value) = tusker_fuzz::text(data) else {
        return;
    };
    // A recorded filename is one non-empty path segment, without control
    // characters, within the length limit, and a part of the input.
    if let Some(name) = recorded_filename(value) {
        assert!(!name.is_empty() && name.len() <= MAX_FILENAME, "{value:?}");
        assert!(!name.contains(['/', '\\']) && !name.chars().any(char::is_control));
        assert!(name != "." && name != ".." && value.contains(name));
    }
    let item = Parser::new(value).parse::<sfv::Item>().ok();
    match parse_bool("Upload-Complete", value) {
        Ok(b) => {
            let item = item.as_ref().expect("accepted boolean is an sf-item");
            assert_eq!(item.bare_item, BareItem::Boolean(b));
            assert_eq!(parse_bool("Upload-Complete", format_bool(b)), Ok(b));
        }
        Err(_) => assert!(!matches!(
            item.as_ref().map(|i| &i.bare_item),
            Some(BareItem::Boolean(_))
        )),
    }
    match parse_u64("Upload-Offset", value) {
        Ok(n) => {
            let item = item.as_ref().expect("accepted integer is an sf-item");
            assert_eq!(item.bare_item.as_integer().map(i64::from), Some(n as i64));
            assert!(n <= 999_999_999_999_999);
            assert_eq!(parse_u64("Upload-Offset", &n.to_string()), Ok(n));
        }
        Err(_) => {
            if let Some(n) = item.as_ref().and_then(|i| i.bare_item.as_integer()) {
                assert!(i64::from(n) < 0, "{value:?} rejected");
            }
        }
    }
    if let Ok(v) = InteropVersion::parse(value) {
        assert!((3..=9).contains(&v.number()));
        assert_eq!(parse_u64("V", value), Ok(u64::from(v.number())));
    }
    // Completeness per version: v3 reads `Upload-Incomplete` (absent means
    // complete), later versions require `Upload-Complete`.
    let b = parse_bool("Upload-Complete", value).ok();
    for n in 3..=9 {
        let v = InteropVersion::new(n).expect("supported");
        if v.uses_upload_incomplete() {
            assert_eq!(v.request_completes(None, None), Ok(true));
            assert_eq!(
                v.request_completes(Some("?1"), Some(value)).ok(),
                b.map(|b| !b)
            );
        } else {
            assert!(v.request_completes(None, Some("?1")).is_err());
            assert_eq!(v.request_completes(Some(value), Some("?0")).ok(), b);
        }
        let (name, val) = v.complete_header(b.unwrap_or(true));
        assert_eq!(name == "upload-incomplete", v.uses_upload_incomplete());
        assert!(val == "?0" || val == "?1");
    }
    // Upload-Limit from two integers taken from the input: it is a valid
    // sf-dictionary with exactly the announced members.
    if data.len() >= 16 {
        let a = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
        let b = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
        let limit = UploadLimit {
            max_size: (a % 3 != 0).then_some(a),
            max_append_size: (a % 5 == 1).then_some(a / 2),
            lifetime: (b % 3 != 0).then_some(b),
        };
        for n in 3..=9 {
            let v = InteropVersion::new(n).expect("supported");
            match limit.header_value(v) {
                Some(text) => {
                    let dict: sfv::Dictionary =
                        Parser::new(&text).parse().expect("Upload-Limit parses");
                    let expected = usize::from(limit.max_size.is_some())
                        + usize::from(limit.max_append_size.is_some())
                        + usize::from(limit.lifetime.is_some());
                    assert_eq!(dict.len(), expected, "{text:?}");
                }
                None => assert!(
                    !v.is_v6_or_later()
                        || (limit.max_size.is_none()
                            && limit.max_append_size.is_none()
                            && limit.lifetime.is_none())
                ),
            }
            if let Some(bytes) = interim_104(v, value, &limit) {
                let text = String::from_utf8(bytes).expect("ASCII");
                assert!(text.ends_with("\r\n\r\n"));
                assert_eq!(text.matches("\r\n\r\n").count(), 1, "{text:?}");
                assert!(text.contains(&format!("\r\nLocation: {value}\r\n")));
            }
        }
    }
});
