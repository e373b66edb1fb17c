//! Small scalar header grammars shared by the tus headers.

use super::ProtocolError;

/// Parses a tus integer header (`Upload-Length`, `Upload-Offset`): ASCII
/// digits only (no sign, no whitespace inside), at most `u64::MAX`.
pub fn parse_u64(header: &'static str, value: &str) -> Result<u64, ProtocolError> {
    let err = || ProtocolError::InvalidInteger {
        header,
        value: value.chars().take(64).collect(),
    };
    let trimmed = value.trim_matches(|c| c == ' ' || c == '\t');
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    trimmed.parse::<u64>().map_err(|_| err())
}

/// Parses `Upload-Defer-Length`, whose only valid value is `1`.
pub fn parse_defer_length(value: &str) -> Result<(), ProtocolError> {
    if value.trim() == "1" {
        Ok(())
    } else {
        Err(ProtocolError::InvalidDeferLength)
    }
}

/// Whether a `Content-Type` value names `application/offset+octet-stream`
/// (parameters and letter case ignored).
pub fn is_offset_octet_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .map(|essence| {
            essence
                .trim()
                .eq_ignore_ascii_case(super::OFFSET_OCTET_STREAM)
        })
        .unwrap_or(false)
}

/// Formats a unix timestamp (seconds) as an IMF-fixdate, the format of
/// `Upload-Expires`.
pub fn http_date(unix_secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(parse_u64("Upload-Length", "0"), Ok(0));
        assert_eq!(
            parse_u64("Upload-Length", "18446744073709551615"),
            Ok(u64::MAX)
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "1e3",
            "0x10",
            "18446744073709551616",
            "1 2",
            "abc",
        ] {
            assert!(parse_u64("Upload-Length", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn content_type() {
        assert!(is_offset_octet_stream("application/offset+octet-stream"));
        assert!(is_offset_octet_stream(
            "Application/Offset+Octet-Stream; charset=x"
        ));
        assert!(!is_offset_octet_stream("application/octet-stream"));
        assert!(!is_offset_octet_stream(""));
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
