//! `Upload-Checksum`: an accepted value names a supported algorithm with a
//! non-empty digest (one of the wrong length is accepted and can never
//! match), and re-encodes to a value that parses to the same checksum; the
//! unknown-algorithm error is only given when the name really is unknown.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusker_fuzz::protocol::{Checksum, ChecksumAlgorithm, ProtocolError};

fuzz_target!(|data: &[u8]| {
    let Some(header) = tusker_fuzz::text(data) else {
        return;
    };
    match Checksum::parse(header) {
        Ok(c) => {
            assert!(!c.digest.is_empty(), "{header:?}");
            assert_eq!(
                c.can_match(),
                c.digest.len() == c.algorithm.digest_len(),
                "{header:?}"
            );
            let name = header.trim().split(' ').next().unwrap_or_default();
            assert_eq!(ChecksumAlgorithm::from_name(name), Some(c.algorithm));
            let encoded = c.encode();
            assert_eq!(Checksum::parse(&encoded).as_ref(), Ok(&c), "{encoded:?}");
            assert!(encoded.is_ascii() && !encoded.contains(['\r', '\n']));
        }
        Err(ProtocolError::UnsupportedChecksumAlgorithm(name)) => {
            assert!(ChecksumAlgorithm::from_name(&name).is_none(), "{header:?}");
        }
        Err(ProtocolError::InvalidChecksum(_)) => {}
        Err(other) => panic!("unexpected error kind {other:?} for {header:?}"),
    }
    // The same bytes as a digest: a value built by the encoder always parses.
    for alg in [
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha512,
        ChecksumAlgorithm::Md5,
        ChecksumAlgorithm::Crc32,
    ] {
        let digest = data.iter().copied().cycle().take(alg.digest_len());
        let c = Checksum {
            algorithm: alg,
            digest: if data.is_empty() {
                vec![0; alg.digest_len()]
            } else {
                digest.collect()
            },
        };
        assert_eq!(Checksum::parse(&c.encode()), Ok(c));
    }
});
