//! IETF "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload),
//! interop versions 3 to 9: what each version defines, its structured-field
//! headers (RFC 8941/9651, parsed strictly with `sfv`), `Upload-Limit`,
//! the `104` interim response, the RFC 9457 problem types and the filename
//! a creation request names. Pure.

use sfv::{BareItem, DictSerializer, Integer, Item, KeyRef, Parser};

/// Request and response header naming the interop version.
pub const VERSION_HEADER: &str = "upload-draft-interop-version";
/// Media type of PATCH bodies from interop version 6.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";
/// Media type of problem details (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Errors in IETF request headers; all are client errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IetfError {
    #[error("{header} is not a valid structured field item: {reason}")]
    Syntax {
        header: &'static str,
        reason: String,
    },
    #[error("{header} must be {expected}")]
    Type {
        header: &'static str,
        expected: &'static str,
    },
    #[error("unsupported Upload-Draft-Interop-Version {0:?}; this server speaks 3 to 9")]
    UnsupportedVersion(String),
    #[error("{0} is required")]
    Missing(&'static str),
}

/// An interop version this server speaks (3 to 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct InteropVersion(u8);

impl InteropVersion {
    pub const OLDEST: u8 = 3;
    pub const NEWEST: u8 = 9;

    /// Parses `Upload-Draft-Interop-Version` (an sf-integer).
    pub fn parse(value: &str) -> Result<Self, IetfError> {
        let unsupported = || IetfError::UnsupportedVersion(value.chars().take(32).collect());
        let n = parse_u64("Upload-Draft-Interop-Version", value).map_err(|_| unsupported())?;
        match u8::try_from(n) {
            Ok(n) if (Self::OLDEST..=Self::NEWEST).contains(&n) => Ok(InteropVersion(n)),
            _ => Err(unsupported()),
        }
    }

    /// A version by number, if supported.
    pub fn new(n: u8) -> Option<Self> {
        (Self::OLDEST..=Self::NEWEST)
            .contains(&n)
            .then_some(InteropVersion(n))
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// Version 3 (draft -01) says `Upload-Incomplete`, the inverse of the
    /// later `Upload-Complete`.
    pub fn uses_upload_incomplete(self) -> bool {
        self.0 == 3
    }

    /// From version 6 (drafts -04/-05): `Upload-Length`, `Upload-Limit`,
    /// `application/partial-upload` on PATCH and the problem types.
    pub fn is_v6_or_later(self) -> bool {
        self.0 >= 6
    }

    /// The `Upload-Limit` key of the remaining lifetime: `expires` in
    /// version 6, `max-age` from version 7.
    pub fn lifetime_key(self) -> &'static str {
        if self.0 >= 7 {
            "max-age"
        } else {
            "expires"
        }
    }

    /// Whether OPTIONS answers `Accept-Patch: application/partial-upload`:
    /// versions 6 to 8 (drafts -10/-11 required it; version 9 dropped it,
    /// since RFC 5789 makes it a claim that the target accepts PATCH).
    pub fn options_accept_patch(self) -> bool {
        (6..=8).contains(&self.0)
    }

    /// Version 9: a GET on the upload resource is an offset retrieval (the
    /// HEAD answer, no content); before, GET is outside the draft.
    pub fn get_retrieves_offset(self) -> bool {
        self.0 >= 9
    }

    /// Version 9: `Upload-Complete: ?1` on a response means it comes from
    /// the targeted resource (the upload is complete and processed), so
    /// every error of the upload resource itself says `Upload-Complete: ?0`,
    /// also in answer to an invalid request on a completed upload.
    pub fn errors_say_incomplete(self) -> bool {
        self.0 >= 9
    }

    /// Version 9: appending a non-empty body to a completed upload is an
    /// inconsistent length (drafts -12 on); before, it is `completed-upload`.
    pub fn late_body_is_inconsistent_length(self) -> bool {
        self.0 >= 9
    }

    /// The completeness header of this version and its value.
    pub fn complete_header(self, complete: bool) -> (&'static str, &'static str) {
        if self.uses_upload_incomplete() {
            ("upload-incomplete", format_bool(!complete))
        } else {
            ("upload-complete", format_bool(complete))
        }
    }

    /// Whether a request's body ends the upload. Version 3: absent or
    /// `Upload-Incomplete: ?0` means complete. Later versions require
    /// `Upload-Complete`.
    pub fn request_completes(
        self,
        upload_complete: Option<&str>,
        upload_incomplete: Option<&str>,
    ) -> Result<bool, IetfError> {
        if self.uses_upload_incomplete() {
            return match upload_incomplete {
                None => Ok(true),
                Some(v) => parse_bool("Upload-Incomplete", v).map(|incomplete| !incomplete),
            };
        }
        match upload_complete {
            None => Err(IetfError::Missing("Upload-Complete")),
            Some(v) => parse_bool("Upload-Complete", v),
        }
    }
}

fn parse_item(header: &'static str, value: &str) -> Result<Item, IetfError> {
    Parser::new(value)
        .parse::<Item>()
        .map_err(|e| IetfError::Syntax {
            header,
            reason: e.to_string(),
        })
}

/// Parses an sf-boolean (`?0` / `?1`); parameters are allowed and ignored,
/// as RFC 8941 asks for unknown parameters.
pub fn parse_bool(header: &'static str, value: &str) -> Result<bool, IetfError> {
    parse_item(header, value)?
        .bare_item
        .as_boolean()
        .ok_or(IetfError::Type {
            header,
            expected: "a boolean (?0 or ?1)",
        })
}

/// Parses a non-negative sf-integer (at most 15 digits).
pub fn parse_u64(header: &'static str, value: &str) -> Result<u64, IetfError> {
    let wrong = IetfError::Type {
        header,
        expected: "a non-negative integer",
    };
    match parse_item(header, value)?.bare_item {
        BareItem::Integer(n) => u64::try_from(i64::from(n)).map_err(|_| wrong),
        _ => Err(wrong),
    }
}

/// Serialises an sf-boolean.
pub fn format_bool(b: bool) -> &'static str {
    if b {
        "?1"
    } else {
        "?0"
    }
}

/// Whether a `Content-Type` is `application/partial-upload` (parameters and
/// letter case ignored).
pub fn is_partial_upload(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(PARTIAL_UPLOAD))
}

/// What the server announces in `Upload-Limit` (version 6 and later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadLimit {
    /// Largest upload accepted.
    pub max_size: Option<u64>,
    /// Largest body of one creation or append request.
    pub max_append_size: Option<u64>,
    /// Remaining lifetime of the upload resource, in seconds.
    pub lifetime: Option<u64>,
}

impl UploadLimit {
    /// The header value for `version`, or `None` when there is nothing to
    /// announce or the version has no `Upload-Limit`.
    pub fn header_value(&self, version: InteropVersion) -> Option<String> {
        if !version.is_v6_or_later() {
            return None;
        }
        let int = |n: u64| Integer::try_from(n).unwrap_or(Integer::MAX);
        let mut ser = DictSerializer::new();
        if let Some(max) = self.max_size {
            let _ = ser.bare_item(KeyRef::constant("max-size"), int(max));
        }
        if let Some(max) = self.max_append_size {
            let _ = ser.bare_item(KeyRef::constant("max-append-size"), int(max));
        }
        if let Some(age) = self.lifetime {
            let key = KeyRef::from_str(version.lifetime_key()).ok()?;
            let _ = ser.bare_item(key, int(age));
        }
        ser.finish()
    }
}

/// The bytes of `104 Upload Resumption Supported`, or `None` if `location`
/// could break the message (it must be visible ASCII).
pub fn interim_104(
    version: InteropVersion,
    location: &str,
    limit: &UploadLimit,
) -> Option<Vec<u8>> {
    if location.is_empty() || !location.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let mut out = format!(
        "HTTP/1.1 104 Upload Resumption Supported\r\nUpload-Draft-Interop-Version: {}\r\nLocation: {location}\r\n",
        version.number()
    );
    if let Some(limit) = limit.header_value(version) {
        out.push_str("Upload-Limit: ");
        out.push_str(&limit);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    Some(out.into_bytes())
}

/// Longest filename recorded from `Content-Disposition`, in bytes.
pub const MAX_FILENAME: usize = 255;

/// The filename to record from the `filename`/`filename*` parameter of a
/// creation request's `Content-Disposition`, or `None` when there is none
/// worth keeping. Only the last path segment is kept (a client's directory
/// is no business of the server's), and a name that is empty, `.` or `..`,
/// contains control characters or is longer than [`MAX_FILENAME`] bytes
/// is dropped rather than altered.
pub fn recorded_filename(name: &str) -> Option<&str> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    let ok = !last.is_empty()
        && last != "."
        && last != ".."
        && last.len() <= MAX_FILENAME
        && !last.chars().any(char::is_control);
    ok.then_some(last)
}

/// The problem types of the draft (version 6 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// 409: `Upload-Offset` does not match the upload's offset.
    MismatchingOffset { expected: u64, provided: u64 },
    /// 400: the upload is already complete.
    CompletedUpload,
    /// 400: lengths in the requests disagree.
    InconsistentLength,
}

impl Problem {
    pub fn status(self) -> u16 {
        match self {
            Problem::MismatchingOffset { .. } => 409,
            Problem::CompletedUpload | Problem::InconsistentLength => 400,
        }
    }

    pub fn type_uri(self) -> &'static str {
        match self {
            Problem::MismatchingOffset { .. } => {
                "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
            }
            Problem::CompletedUpload => {
                "https://iana.org/assignments/http-problem-types#completed-upload"
            }
            Problem::InconsistentLength => {
                "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
            }
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Problem::MismatchingOffset { .. } => "Upload-Offset does not match the upload's offset",
            Problem::CompletedUpload => "the upload is already complete",
            Problem::InconsistentLength => "the upload lengths in the requests disagree",
        }
    }

    /// The RFC 9457 body.
    pub fn body(self) -> serde_json::Value {
        let mut body = serde_json::json!({ "type": self.type_uri(), "title": self.title() });
        if let Problem::MismatchingOffset { expected, provided } = self {
            body["expected-offset"] = expected.into();
            body["provided-offset"] = provided.into();
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(n: u8) -> InteropVersion {
        InteropVersion::new(n).unwrap()
    }

    #[test]
    fn versions() {
        for n in 3..=9u8 {
            assert_eq!(InteropVersion::parse(&n.to_string()).unwrap().number(), n);
        }
        for bad in [
            "2",
            "10",
            "-3",
            "3.0",
            "\"3\"",
            "",
            "three",
            "3, 4",
            "99999999999999999",
        ] {
            assert!(InteropVersion::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(InteropVersion::parse(" 6 ").unwrap().number(), 6);
        assert_eq!(v(6).lifetime_key(), "expires");
        assert_eq!(v(7).lifetime_key(), "max-age");
        assert!(!v(5).is_v6_or_later() && v(6).is_v6_or_later());
    }

    /// What changes with version 9, per version.
    #[test]
    fn version_9_table() {
        // (version, Accept-Patch on OPTIONS, GET = offset retrieval,
        //  errors say Upload-Complete: ?0, late body = inconsistent length)
        let table = [
            (3, false, false, false, false),
            (5, false, false, false, false),
            (6, true, false, false, false),
            (7, true, false, false, false),
            (8, true, false, false, false),
            (9, false, true, true, true),
        ];
        for (n, accept_patch, get, incomplete, late) in table {
            let version = v(n);
            assert_eq!(version.options_accept_patch(), accept_patch, "v{n}");
            assert_eq!(version.get_retrieves_offset(), get, "v{n}");
            assert_eq!(version.errors_say_incomplete(), incomplete, "v{n}");
            assert_eq!(version.late_body_is_inconsistent_length(), late, "v{n}");
        }
        assert_eq!(v(9).lifetime_key(), "max-age");
        assert_eq!(v(9).complete_header(true), ("upload-complete", "?1"));
    }

    #[test]
    fn recorded_filenames() {
        let long = "a".repeat(MAX_FILENAME + 1);
        let table: [(&str, Option<&str>); 12] = [
            ("file name.jpg", Some("file name.jpg")),
            ("vidéo.mp4", Some("vidéo.mp4")),
            ("../../etc/passwd", Some("passwd")),
            ("C:\\Users\\me\\report.pdf", Some("report.pdf")),
            ("dir/", None),
            ("..", None),
            (".", None),
            ("", None),
            ("  ", None),
            ("a\r\nX-Injected: 1", None),
            ("nul\0byte", None),
            (long.as_str(), None),
        ];
        for (raw, want) in table {
            assert_eq!(recorded_filename(raw), want, "{raw:?}");
        }
        assert!(recorded_filename(&"é".repeat(MAX_FILENAME / 2)).is_some());
    }

    #[test]
    fn booleans_are_strict() {
        assert_eq!(parse_bool("H", "?1"), Ok(true));
        assert_eq!(parse_bool("H", "?0"), Ok(false));
        assert_eq!(parse_bool("H", "?1;x=2"), Ok(true));
        for bad in ["1", "true", "?2", "?", "?1, ?0", "", "?1 ?0", "(?1)"] {
            assert!(parse_bool("H", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_u64("H", "0"), Ok(0));
        assert_eq!(parse_u64("H", "999999999999999"), Ok(999_999_999_999_999));
        for bad in [
            "-1",
            "1.5",
            "1e3",
            "0x10",
            "",
            "?1",
            "1000000000000000",
            "1 2",
        ] {
            assert!(parse_u64("H", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn completeness_per_version() {
        assert_eq!(v(3).request_completes(None, None), Ok(true));
        assert_eq!(v(3).request_completes(None, Some("?1")), Ok(false));
        assert_eq!(v(3).request_completes(Some("?0"), Some("?0")), Ok(true));
        assert_eq!(v(4).request_completes(Some("?0"), None), Ok(false));
        assert_eq!(v(8).request_completes(Some("?1"), None), Ok(true));
        assert!(v(4).request_completes(None, Some("?0")).is_err());
        assert_eq!(v(3).complete_header(true), ("upload-incomplete", "?0"));
        assert_eq!(v(4).complete_header(false), ("upload-complete", "?0"));
    }

    #[test]
    fn upload_limit() {
        let limit = UploadLimit {
            max_size: Some(1000),
            max_append_size: None,
            lifetime: Some(60),
        };
        assert_eq!(limit.header_value(v(5)), None);
        assert_eq!(
            limit.header_value(v(6)).unwrap(),
            "max-size=1000, expires=60"
        );
        assert_eq!(
            limit.header_value(v(8)).unwrap(),
            "max-size=1000, max-age=60"
        );
        assert_eq!(UploadLimit::default().header_value(v(8)), None);
        let with_append = UploadLimit {
            max_append_size: Some(500),
            ..limit
        };
        assert_eq!(
            with_append.header_value(v(9)).unwrap(),
            "max-size=1000, max-append-size=500, max-age=60"
        );
    }

    #[test]
    fn interim() {
        let limit = UploadLimit {
            max_size: None,
            max_append_size: None,
            lifetime: Some(5),
        };
        let bytes = interim_104(v(7), "http://h/files/x", &limit).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 104 Upload Resumption Supported\r\nUpload-Draft-Interop-Version: 7\r\nLocation: http://h/files/x\r\nUpload-Limit: max-age=5\r\n\r\n"
        );
        assert!(interim_104(v(3), "http://h/\r\nX: y", &limit).is_none());
        assert!(!String::from_utf8(interim_104(v(5), "/x", &limit).unwrap())
            .unwrap()
            .contains("Upload-Limit"));
    }

    #[test]
    fn problems() {
        let p = Problem::MismatchingOffset {
            expected: 5,
            provided: 7,
        };
        assert_eq!(p.status(), 409);
        assert_eq!(p.body()["expected-offset"], 5);
        assert_eq!(p.body()["provided-offset"], 7);
        assert!(Problem::CompletedUpload.body()["type"]
            .as_str()
            .unwrap()
            .ends_with("#completed-upload"));
        assert_eq!(Problem::InconsistentLength.status(), 400);
    }

    #[test]
    fn partial_upload_type() {
        assert!(is_partial_upload("application/partial-upload"));
        assert!(is_partial_upload("Application/Partial-Upload; x=y"));
        assert!(!is_partial_upload("application/offset+octet-stream"));
    }

    proptest! {
        #[test]
        fn integers_round_trip(n in 0u64..=999_999_999_999_999) {
            prop_assert_eq!(parse_u64("H", &n.to_string()), Ok(n));
        }

        #[test]
        fn booleans_round_trip(b: bool) {
            prop_assert_eq!(parse_bool("H", format_bool(b)), Ok(b));
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,40}") {
            if let Some(name) = recorded_filename(&s) {
                prop_assert!(!name.contains(['/', '\\']) && !name.chars().any(char::is_control));
                prop_assert!(!name.is_empty() && name.len() <= MAX_FILENAME);
            }
            let _ = parse_u64("H", &s);
            let _ = parse_bool("H", &s);
            let _ = InteropVersion::parse(&s);
        }

        #[test]
        fn only_versions_3_to_9(n: i64) {
            prop_assert_eq!(InteropVersion::parse(&n.to_string()).is_ok(), (3..=9).contains(&n));
        }

        #[test]
        fn upload_limit_parses_back(max in proptest::option::of(0u64..=999_999_999_999_999),
                                    append in proptest::option::of(0u64..=999_999_999_999_999),
                                    age in proptest::option::of(0u64..=999_999_999_999_999),
                                    n in 6u8..=9) {
            let version = v(n);
            let value = UploadLimit { max_size: max, max_append_size: append, lifetime: age }.header_value(version);
            prop_assert_eq!(value.is_none(), max.is_none() && append.is_none() && age.is_none());
            if let Some(value) = value {
                let dict: sfv::Dictionary = Parser::new(&value).parse().unwrap();
                let get = |k: &str| dict.get(k).and_then(|e| match e {
                    sfv::ListEntry::Item(i) => i.bare_item.as_integer().map(i64::from),
                    _ => None,
                });
                prop_assert_eq!(get("max-size"), max.map(|m| m as i64));
                prop_assert_eq!(get("max-append-size"), append.map(|m| m as i64));
                prop_assert_eq!(get(version.lifetime_key()), age.map(|a| a as i64));
            }
        }

        #[test]
        fn interim_is_one_message(loc in "[ -~]{0,40}", n in 3u8..=9) {
            if let Some(bytes) = interim_104(v(n), &loc, &UploadLimit::default()) {
                let text = String::from_utf8(bytes).unwrap();
                prop_assert!(text.ends_with("\r\n\r\n"));
                prop_assert_eq!(text.matches("\r\n\r\n").count(), 1);
            }
        }

        #[test]
        fn booleans_reject_other_items(item in "-?[0-9]{1,5}|\"[a-z]{0,5}\"|[a-z][a-z0-9]{0,5}|:[A-Za-z0-9+/]{0,8}=*:|\\?[2-9a-z]") {
            prop_assert!(parse_bool("Upload-Complete", &item).is_err(), "{:?}", item);
        }

        #[test]
        fn integers_reject_negatives_and_over_15_digits(n in 1i64..=999_999_999_999_999, extra in 1000000000000000u64..u64::MAX) {
            for bad in [format!("-{n}"), extra.to_string(), format!("{n}.0")] {
                prop_assert!(parse_u64("Upload-Offset", &bad).is_err(), "{:?}", bad);
            }
        }

        #[test]
        fn partial_upload_type_ignores_case_and_parameters(upper in proptest::collection::vec(any::<bool>(), 26), params in "(;[ ]?[a-z]{1,8}=[a-z0-9]{0,8}){0,3}") {
            let essence: String = PARTIAL_UPLOAD.chars().zip(upper).map(|(c, u)| if u { c.to_ascii_uppercase() } else { c }).collect();
            let good = format!("{essence}{params}");
            prop_assert!(is_partial_upload(&good), "{:?}", good);
            for bad in [format!("application/offset+octet-stream{params}"), format!("text/plain; x={PARTIAL_UPLOAD}")] {
                prop_assert!(!is_partial_upload(&bad), "{:?}", bad);
            }
        }
    }
}
