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
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn integers_round_trip_with_padding(n: u64, zeros in 0usize..5, pad in "[ \t]{0,3}") {
            let text = format!("{pad}{}{n}{pad}", "0".repeat(zeros));
            prop_assert_eq!(parse_u64("Upload-Offset", &text), Ok(n));
        }

        #[test]
        fn integers_reject_any_non_digit(n: u64, at in any::<prop::sample::Index>(), c in "[^0-9 \t]") {
            let mut text = n.to_string();
            let i = at.index(text.len() + 1);
            text.insert_str(i, &c);
            prop_assert!(parse_u64("Upload-Length", &text).is_err(), "{:?} accepted", text);
        }

        #[test]
        fn integers_reject_inner_whitespace(a in 1u64..1_000_000, b in 0u64..1_000_000, ws in "[ \t]{1,3}") {
            let text = format!("{a}{ws}{b}");
            prop_assert!(parse_u64("Upload-Offset", &text).is_err());
        }

        #[test]
        fn integers_reject_overflow(extra in 1u64..u64::MAX) {
            // u64::MAX + extra, written out in decimal.
            let big = u128::from(u64::MAX) + u128::from(extra);
            prop_assert!(parse_u64("Upload-Length", &big.to_string()).is_err());
        }

        #[test]
        fn integers_reject_signs_and_notations(n: u64, prefix in "[-+]|0x|0X") {
            let text = format!("{prefix}{n}");
            prop_assert!(parse_u64("Upload-Length", &text).is_err(), "{:?}", text);
        }

        #[test]
        fn defer_length_is_exactly_one(s in "[ -~]{0,4}") {
            prop_assert_eq!(parse_defer_length(&s).is_ok(), s.trim() == "1");
        }

        #[test]
        fn content_type_ignores_case_and_parameters(
            upper in proptest::collection::vec(any::<bool>(), 31),
            params in "(;[ ]?[a-z]{1,8}=[a-z0-9\"]{0,8}){0,3}",
            ws in "[ \t]{0,2}",
        ) {
            let essence: String = crate::protocol::OFFSET_OCTET_STREAM
                .chars()
                .zip(upper)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect();
            let value = format!("{ws}{essence}{ws}{params}");
            prop_assert!(is_offset_octet_stream(&value), "{:?}", value);
        }

        #[test]
        fn content_type_rejects_other_types(t in "[a-z]{1,12}/[a-z+.-]{1,20}", params in "(;[a-z]=[a-z]){0,2}") {
            prop_assume!(t != crate::protocol::OFFSET_OCTET_STREAM);
            let value = format!("{t}{params}");
            prop_assert!(!is_offset_octet_stream(&value), "{:?}", value);
            // The tus type as a parameter value does not count.
            let tricky = format!("{t}; x=application/offset+octet-stream");
            prop_assert!(!is_offset_octet_stream(&tricky));
        }
    }
}
