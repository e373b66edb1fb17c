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
    }
}
