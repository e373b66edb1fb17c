//! `Upload-Concat` and the URL paths of a final upload: accepted lists are
//! non-empty, bounded, free of whitespace and re-serialise to an equal
//! value; an accepted URL path is an absolute path without query or
//! fragment and is the tail of the URL it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusker_fuzz::protocol::concat::{url_path, MAX_PARTS};
use tusker_fuzz::protocol::UploadConcat;

fuzz_target!(|data: &[u8]| {
    let Some(header) = tusker_fuzz::text(data) else {
        return;
    };
    check_path(header);
    match UploadConcat::parse(header) {
        Ok(UploadConcat::Partial) => assert_eq!(header.trim(), "partial"),
        Ok(UploadConcat::Final(urls)) => {
            assert!(header.trim().starts_with("final;"));
            assert!(!urls.is_empty() && urls.len() <= MAX_PARTS);
            for url in &urls {
                assert!(!url.is_empty());
                assert!(!url.contains(|c: char| c.is_ascii_whitespace()), "{url:?}");
                check_path(url);
            }
            let again = format!("final;{}", urls.join(" "));
            assert_eq!(
                UploadConcat::parse(&again),
                Ok(UploadConcat::Final(urls.clone()))
            );
        }
        Err(_) => {}
    }
});

fn check_path(url: &str) {
    if let Ok(path) = url_path(url) {
        assert!(path.starts_with('/'), "{url:?} -> {path:?}");
        assert!(!path.contains(['?', '#']), "{url:?} -> {path:?}");
        assert!(url.ends_with(path), "{url:?} -> {path:?}");
        assert!(
            path.len() == url.len() || url.starts_with("http://") || url.starts_with("https://"),
            "{url:?} -> {path:?}"
        );
    }
}
