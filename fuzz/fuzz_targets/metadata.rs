//! `Upload-Metadata`: whatever is accepted has printable-ASCII keys, fits
//! the size limit, and survives encode → parse unchanged; encoding is
//! canonical (encode ∘ parse ∘ encode = encode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusker_fuzz::protocol::metadata::MAX_METADATA_LEN;
use tusker_fuzz::protocol::Metadata;

fuzz_target!(|data: &[u8]| {
    let Some(header) = tusker_fuzz::text(data) else {
        return;
    };
    let Ok(m) = Metadata::parse(header) else {
        return;
    };
    assert!(
        header.len() <= MAX_METADATA_LEN,
        "over-long header accepted"
    );
    if header.trim().is_empty() {
        assert!(m.is_empty());
    }
    for (key, _) in m.iter() {
        assert!(!key.is_empty(), "empty key from {header:?}");
        assert!(
            key.bytes().all(|b| b.is_ascii_graphic() && b != b','),
            "key {key:?} from {header:?}"
        );
    }
    // Every key of the output appears literally in the input.
    for (key, _) in m.iter() {
        assert!(header.contains(key));
    }
    let encoded = m.encode();
    let back = Metadata::parse(&encoded).expect("the encoder's output parses");
    assert_eq!(back, m, "round trip of {header:?} via {encoded:?}");
    assert_eq!(back.encode(), encoded, "encoding is not canonical");
});
