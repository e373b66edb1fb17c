//! How a finished upload is represented: its media type, its
//! `Content-Disposition` (RFC 6266) and other header values that come from
//! upload metadata or a hook. Shared by GET (served by tusker) and by the
//! object written to object storage.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Media types tusker's GET serves as themselves; anything else is served
/// as `application/octet-stream` so an upload can never become active
/// content (HTML, SVG, JavaScript) on tusker's origin.
const SAFE_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/pdf",
    "application/json",
    "application/zip",
    "application/gzip",
    "application/x-tar",
    "application/octet-stream",
];

/// Longest media type, disposition or cache-control value accepted.
pub const MAX_HEADER_VALUE: usize = 1024;

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// The `Content-Type` tusker's GET sends for a `filetype` metadata value,
/// and whether the upload may be shown inline.
pub fn served_type(filetype: Option<&str>) -> (String, bool) {
    let fallback = ("application/octet-stream".to_owned(), false);
    let Some(essence) = filetype.map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }) else {
        return fallback;
    };
    let Some((top, sub)) = essence.split_once('/') else {
        return fallback;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'))
    };
    if !token(top) || !token(sub) {
        return fallback;
    }
    let media = matches!(top, "image" | "video" | "audio") && essence != "image/svg+xml";
    if media || SAFE_TYPES.contains(&essence.as_str()) {
        let inline = media || matches!(essence.as_str(), "application/pdf" | "text/plain");
        (essence, inline)
    } else {
        fallback
    }
}

/// `value` as a media type (RFC 9110 §8.3.1: `type/subtype` with optional
/// `; name=value` parameters, values a token or a quoted string), with
/// type and subtype lowercased; `None` if it is not one or is longer than
/// [`MAX_HEADER_VALUE`].
pub fn media_type(value: &str) -> Option<String> {
    let value = value.trim_matches([' ', '\t']);
    if value.len() > MAX_HEADER_VALUE {
        return None;
    }
    let (essence, mut rest) = match value.find(';') {
        Some(at) => (&value[..at], &value[at..]),
        None => (value, ""),
    };
    let (top, sub) = essence.trim_end_matches([' ', '\t']).split_once('/')?;
    if !is_token(top) || !is_token(sub) {
        return None;
    }
    let mut out = format!("{}/{}", top.to_ascii_lowercase(), sub.to_ascii_lowercase());
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix(';')?.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            // A trailing ";" is allowed by the grammar's empty elements.
            return Some(out);
        }
        let eq = rest.find('=')?;
        let name = &rest[..eq];
        if !is_token(name) {
            return None;
        }
        rest = &rest[eq + 1..];
        let value_len = if let Some(quoted) = rest.strip_prefix('"') {
            let mut escaped = false;
            let mut end = None;
            for (i, b) in quoted.bytes().enumerate() {
                if !(b == b'\t' || (0x20..=0x7e).contains(&b)) {
                    return None;
                }
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            end? + 2
        } else {
            let len = rest.bytes().take_while(|&b| is_tchar(b)).count();
            if len == 0 {
                return None;
            }
            len
        };
        out.push(';');
        out.push_str(&name.to_ascii_lowercase());
        out.push('=');
        out.push_str(&rest[..value_len]);
        rest = &rest[value_len..];
    }
}

/// Whether `value` may be sent as a header value as it is: printable ASCII
/// with spaces or tabs inside, no CR, LF or other control characters, at
/// most [`MAX_HEADER_VALUE`] bytes, not empty.
pub fn is_header_text(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_HEADER_VALUE
        && value.trim_matches([' ', '\t']) == value
        && value
            .bytes()
            .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b))
}

/// Whether `value` is a `Content-Disposition` value fit to store: header
/// text ([`is_header_text`]) starting with a disposition type token.
pub fn is_disposition(value: &str) -> bool {
    let kind = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim_matches([' ', '\t']);
    is_header_text(value) && is_token(kind)
}

/// A file name fit for a header: no control characters, quotes, slashes.
fn clean_filename(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if matches!(c, '/' | '\\' | '"') {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect();
    let cleaned = cleaned.trim().to_owned();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then_some(cleaned)
}

/// RFC 8187 `attr-char`s stay as they are in `filename*`; everything
/// else is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition` (RFC 6266): `inline` or `attachment`, with an
/// ASCII `filename` and, for non-ASCII names, `filename*=UTF-8''…`. The
/// result is always ASCII without control characters.
pub fn content_disposition(filename: Option<&str>, inline: bool) -> String {
    let mut out = String::from(if inline { "inline" } else { "attachment" });
    if let Some(name) = filename.and_then(clean_filename) {
        let ascii: String = name
            .chars()
            .map(|c| if c.is_ascii() { c } else { '_' })
            .collect();
        out.push_str("; filename=\"");
        out.push_str(&ascii);
        out.push('"');
        if !name.is_ascii() {
            out.push_str("; filename*=UTF-8''");
            out.extend(percent_encoding::utf8_percent_encode(&name, ATTR_CHAR));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn served_types() {
        assert_eq!(served_type(Some("video/mp4")), ("video/mp4".into(), true));
        assert_eq!(served_type(Some("Image/PNG")), ("image/png".into(), true));
        assert_eq!(
            served_type(Some("application/zip")),
            ("application/zip".into(), false)
        );
        for unsafe_type in [
            "text/html",
            "image/svg+xml",
            "application/javascript",
            "video/mp4\r\nX: y",
            "",
            "nonsense",
        ] {
            assert_eq!(
                served_type(Some(unsafe_type)).0,
                "application/octet-stream",
                "{unsafe_type:?}"
            );
        }
        assert_eq!(served_type(None).0, "application/octet-stream");
    }

    #[test]
    fn media_types() {
        for (input, want) in [
            ("video/mp4", Some("video/mp4")),
            (" Video/MP4 ", Some("video/mp4")),
            ("text/html", Some("text/html")),
            (
                "text/plain; charset=UTF-8",
                Some("text/plain;charset=UTF-8"),
            ),
            (
                "multipart/mixed; boundary=\"a b;c\"",
                Some("multipart/mixed;boundary=\"a b;c\""),
            ),
            ("application/vnd.api+json", Some("application/vnd.api+json")),
            ("text/plain;", Some("text/plain")),
            ("video", None),
            ("video/", None),
            ("/mp4", None),
            ("vi deo/mp4", None),
            ("video/mp4\r\nX-Evil: 1", None),
            ("video/mp4; x", None),
            ("video/mp4; x=", None),
            ("video/mp4; x=\"open", None),
            ("video/mp4; x=\"a\r\"", None),
            ("video/mp4 x", None),
            ("vidéo/mp4", None),
            ("", None),
        ] {
            assert_eq!(media_type(input).as_deref(), want, "{input:?}");
        }
        assert!(media_type(&format!("a/{}", "b".repeat(2000))).is_none());
    }

    #[test]
    fn header_texts() {
        assert!(is_header_text("max-age=3600, public"));
        for bad in ["", " x", "x ", "a\r\nb", "a\nb", "a\u{0}b", "é", "a\u{7f}"] {
            assert!(!is_header_text(bad), "{bad:?}");
        }
        assert!(is_disposition("attachment; filename=\"a.mp4\""));
        assert!(is_disposition("inline"));
        assert!(!is_disposition("; filename=a"));
        assert!(!is_disposition("attach ment"));
        assert!(!is_disposition("inline\r\nX: y"));
    }

    #[test]
    fn non_ascii_filenames_use_rfc6266() {
        assert_eq!(
            content_disposition(Some("vidéo 🎬.mp4"), true),
            "inline; filename=\"vid_o _.mp4\"; filename*=UTF-8''vid%C3%A9o%20%F0%9F%8E%AC.mp4"
        );
        let d = content_disposition(Some("../evil\"\r\n.txt"), false);
        assert!(d.starts_with("attachment; filename=\""), "{d}");
        assert!(!d.contains('\r') && !d.contains('\n') && !d.contains('/'));
        assert_eq!(content_disposition(None, false), "attachment");
        assert_eq!(content_disposition(Some(" .. "), true), "inline");
    }

    proptest! {
        /// Whatever the name, the disposition is one safe header value.
        #[test]
        fn dispositions_are_header_text(name in any::<String>(), inline in any::<bool>()) {
            let d = content_disposition(Some(&name), inline);
            prop_assert!(is_disposition(&d), "{d:?}");
        }

        /// What `media_type` accepts is header text and accepted again as is.
        #[test]
        fn media_types_are_stable(value in "[ -~]{0,40}") {
            if let Some(m) = media_type(&value) {
                prop_assert!(is_header_text(&m), "{m:?}");
                prop_assert_eq!(media_type(&m), Some(m.clone()));
            }
        }
    }
}
