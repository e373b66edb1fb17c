//! `Upload-Concat`: `partial`, or `final;<url> <url> …`.

use super::ProtocolError;

/// Most partial uploads one final upload may name.
pub const MAX_PARTS: usize = 1000;

/// A parsed `Upload-Concat` header. URLs of a final upload are kept as sent;
/// turning them into upload ids is the http layer's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadConcat {
    Partial,
    Final(Vec<String>),
}

impl UploadConcat {
    pub fn parse(header: &str) -> Result<Self, ProtocolError> {
        let header = header.trim();
        if header == "partial" {
            return Ok(UploadConcat::Partial);
        }
        let list = header.strip_prefix("final;").ok_or_else(|| {
            ProtocolError::InvalidConcat("expected \"partial\" or \"final;<urls>\"".into())
        })?;
        let urls: Vec<String> = list.split_ascii_whitespace().map(str::to_owned).collect();
        if urls.is_empty() {
            return Err(ProtocolError::InvalidConcat(
                "final upload names no partial uploads".into(),
            ));
        }
        if urls.len() > MAX_PARTS {
            return Err(ProtocolError::InvalidConcat(format!(
                "more than {MAX_PARTS} partial uploads"
            )));
        }
        Ok(UploadConcat::Final(urls))
    }
}

/// Extracts the path of a URL that is either absolute (`http://host/path`,
/// `https://…`) or a path (`/files/x`). Query and fragment are rejected.
pub fn url_path(url: &str) -> Result<&str, ProtocolError> {
    let path = if let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) if i > 0 => &rest[i..],
            _ => return Err(ProtocolError::InvalidConcat(format!("{url:?} has no path"))),
        }
    } else if url.starts_with('/') {
        url
    } else {
        return Err(ProtocolError::InvalidConcat(format!(
            "{url:?} is not an absolute URL or path"
        )));
    };
    if path.contains(['?', '#']) {
        return Err(ProtocolError::InvalidConcat(format!(
            "{url:?} has a query or fragment"
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(UploadConcat::parse("partial"), Ok(UploadConcat::Partial));
        assert_eq!(
            UploadConcat::parse("final;/files/a http://x:1/files/b"),
            Ok(UploadConcat::Final(vec![
                "/files/a".into(),
                "http://x:1/files/b".into()
            ]))
        );
        for bad in ["", "final;", "final; ", "partial;x", "FINAL;/a", "final"] {
            assert!(UploadConcat::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("http://h:80/files/a"), Ok("/files/a"));
        assert_eq!(url_path("https://h/files/a"), Ok("/files/a"));
        assert_eq!(url_path("/files/a"), Ok("/files/a"));
        for bad in [
            "files/a",
            "ftp://h/a",
            "http://h",
            "http:///a",
            "/files/a?x=1",
        ] {
            assert!(url_path(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn final_lists_round_trip(ids in proptest::collection::vec("[a-z0-9]{1,32}", 1..20)) {
            let urls: Vec<String> = ids.iter().map(|i| format!("/files/{i}")).collect();
            let header = format!("final;{}", urls.join(" "));
            prop_assert_eq!(UploadConcat::parse(&header).unwrap(), UploadConcat::Final(urls));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            if let Ok(UploadConcat::Final(urls)) = UploadConcat::parse(&s) {
                for u in urls { let _ = url_path(&u); }
            }
        }

        #[test]
        fn absolute_urls_yield_their_path(scheme in "https?", host in "[a-z0-9.-]{1,20}(:[0-9]{1,5})?", path in "(/[A-Za-z0-9._~%-]{0,12}){1,4}") {
            let url = format!("{scheme}://{host}{path}");
            prop_assert_eq!(url_path(&url), Ok(path.as_str()));
            prop_assert_eq!(url_path(&path), Ok(path.as_str()));
        }

        #[test]
        fn queries_fragments_and_relative_urls_are_rejected(path in "(/[a-z0-9]{1,8}){1,3}", tail in "[?#][ -~]{0,10}", rel in "[a-z0-9.]{1,8}(/[a-z0-9]{1,8}){0,2}") {
            let with_tail = format!("{path}{tail}");
            let absolute_tail = format!("http://h{path}{tail}");
            prop_assert!(url_path(&with_tail).is_err());
            prop_assert!(url_path(&absolute_tail).is_err());
            prop_assert!(url_path(&rel).is_err());
        }

        #[test]
        fn at_most_max_parts(n in (MAX_PARTS - 3)..(MAX_PARTS + 3)) {
            let header = format!("final;{}", vec!["/files/a"; n].join(" "));
            prop_assert_eq!(UploadConcat::parse(&header).is_ok(), n <= MAX_PARTS);
        }

        #[test]
        fn separators_are_any_ascii_whitespace(ids in proptest::collection::vec("[a-z0-9]{1,8}", 1..6), sep in "[ \t]{1,3}", pad in "[ \t]{0,2}") {
            let urls: Vec<String> = ids.iter().map(|i| format!("/files/{i}")).collect();
            let header = format!("{pad}final;{pad}{}{pad}", urls.join(&sep));
            prop_assert_eq!(UploadConcat::parse(&header), Ok(UploadConcat::Final(urls)));
            prop_assert_eq!(UploadConcat::parse(&format!("{pad}partial{pad}")), Ok(UploadConcat::Partial));
        }
    }
}
