//! `Upload-Checksum`: `<algorithm> <base64 digest>`, and the digests themselves.

use super::ProtocolError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// Value of `Tus-Checksum-Algorithm` (no spaces after commas).
pub const SUPPORTED_ALGORITHMS: &str = "sha1,sha256,sha512,md5,crc32";

/// A checksum algorithm of the tus checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
    Sha512,
    Md5,
    /// CRC-32 (IEEE), digest as 4 bytes big-endian.
    Crc32,
}

impl ChecksumAlgorithm {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "sha512" => Self::Sha512,
            "md5" => Self::Md5,
            "crc32" => Self::Crc32,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
            Self::Md5 => "md5",
            Self::Crc32 => "crc32",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
            Self::Md5 => 16,
            Self::Crc32 => 4,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Self::Sha1 => Hasher::Sha1(Sha1::new()),
            Self::Sha256 => Hasher::Sha256(Sha256::new()),
            Self::Sha512 => Hasher::Sha512(Box::new(Sha512::new())),
            Self::Md5 => Hasher::Md5(Md5::new()),
            Self::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
        }
    }
}

/// An expected checksum of one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

impl Checksum {
    /// Parses `Upload-Checksum`. An unknown algorithm and a malformed value
    /// are distinct errors (both answered with 400). A digest that is valid
    /// base64 but not [`ChecksumAlgorithm::digest_len`] bytes long is
    /// well-formed and accepted: it cannot match any body, so verification
    /// fails and the client gets 460 Checksum Mismatch, as for any other
    /// wrong digest.
    pub fn parse(header: &str) -> Result<Self, ProtocolError> {
        let header = header.trim();
        let (name, value) = header.split_once(' ').ok_or_else(|| {
            ProtocolError::InvalidChecksum("expected \"<algorithm> <base64>\"".into())
        })?;
        let algorithm = ChecksumAlgorithm::from_name(name).ok_or_else(|| {
            ProtocolError::UnsupportedChecksumAlgorithm(name.chars().take(32).collect())
        })?;
        let digest = STANDARD
            .decode(value.trim())
            .map_err(|_| ProtocolError::InvalidChecksum("digest is not valid base64".into()))?;
        Ok(Checksum { algorithm, digest })
    }

    /// Whether some body could have this digest (its length fits the
    /// algorithm).
    pub fn can_match(&self) -> bool {
        self.digest.len() == self.algorithm.digest_len()
    }

    /// The header form.
    pub fn encode(&self) -> String {
        format!(
            "{} {}",
            self.algorithm.name(),
            STANDARD.encode(&self.digest)
        )
    }
}

/// Incremental digest of a request body.
pub enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Box<Sha512>),
    Md5(Md5),
    Crc32(crc32fast::Hasher),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Crc32(h) => h.update(data),
        }
    }

    pub fn finalize(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest(alg: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
        let mut h = alg.hasher();
        h.update(data);
        h.finalize()
    }

    #[test]
    fn known_digests() {
        assert_eq!(
            hex::encode(digest(ChecksumAlgorithm::Sha1, b"hello")),
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
        );
        assert_eq!(
            hex::encode(digest(ChecksumAlgorithm::Md5, b"hello")),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(
            hex::encode(digest(ChecksumAlgorithm::Crc32, b"hello")),
            "3610a686"
        );
    }

    #[test]
    fn parse_errors_are_distinguished() {
        assert!(matches!(
            Checksum::parse("whirlpool AAAA"),
            Err(ProtocolError::UnsupportedChecksumAlgorithm(_))
        ));
        for bad in ["sha1", "sha1 !!!", "sha1 AAA", ""] {
            assert!(
                matches!(Checksum::parse(bad), Err(ProtocolError::InvalidChecksum(_))),
                "{bad:?}"
            );
        }
        let ok = Checksum::parse("SHA1 qvTGHdzF6KLavt4PO0gs2a6pQ00=").unwrap();
        assert_eq!(ok.algorithm, ChecksumAlgorithm::Sha1);
        assert!(ok.can_match());
    }

    /// Valid base64 of the wrong length for its algorithm (tus conformance:
    /// such a checksum is a mismatch, 460, not a malformed header, 400).
    #[test]
    fn wrong_lengths_are_well_formed_mismatches() {
        for (header, len) in [
            ("sha1 AAAA", 3),
            ("sha256 qvTGHdzF6KLavt4PO0gs2a6pQ00=", 20),
            ("md5 AA==", 1),
            ("crc32 AAAAAAAA", 6),
            ("sha512 AAAAAAAAAAAAAAAAAAAAAA==", 16),
        ] {
            let c = Checksum::parse(header).unwrap();
            assert_eq!(c.digest.len(), len, "{header:?}");
            assert!(!c.can_match(), "{header:?}");
        }
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(data in proptest::collection::vec(any::<u8>(), 0..256), alg in 0usize..5) {
            let alg = [ChecksumAlgorithm::Sha1, ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Sha512, ChecksumAlgorithm::Md5, ChecksumAlgorithm::Crc32][alg];
            let c = Checksum { algorithm: alg, digest: digest(alg, &data) };
            prop_assert_eq!(Checksum::parse(&c.encode()).unwrap(), c);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,120}") {
            let _ = Checksum::parse(&s);
        }

        #[test]
        fn wrong_digest_lengths_parse_but_cannot_match(alg in 0usize..5, len in 1usize..80) {
            let alg = [ChecksumAlgorithm::Sha1, ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Sha512, ChecksumAlgorithm::Md5, ChecksumAlgorithm::Crc32][alg];
            let header = format!("{} {}", alg.name(), STANDARD.encode(vec![7u8; len]));
            let parsed = Checksum::parse(&header).unwrap();
            prop_assert_eq!(parsed.can_match(), len == alg.digest_len(), "{:?}", header);
        }

        #[test]
        fn algorithm_names_ignore_case_only(alg in 0usize..5, upper in proptest::collection::vec(any::<bool>(), 6), data in proptest::collection::vec(any::<u8>(), 0..32)) {
            let alg = [ChecksumAlgorithm::Sha1, ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Sha512, ChecksumAlgorithm::Md5, ChecksumAlgorithm::Crc32][alg];
            let name: String = alg.name().chars().zip(upper.iter().chain(std::iter::repeat(&false))).map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c }).collect();
            let digest = STANDARD.encode(digest(alg, &data));
            prop_assert_eq!(Checksum::parse(&format!("{name} {digest}")).map(|c| c.algorithm), Ok(alg));
            // A prefix, suffix or look-alike is an unknown algorithm.
            for other in [format!("{name}x"), format!("x{name}"), name.replace('1', "l")] {
                if other != name {
                    prop_assert!(matches!(Checksum::parse(&format!("{other} {digest}")), Err(ProtocolError::UnsupportedChecksumAlgorithm(_))), "{:?}", other);
                }
            }
        }
    }
}
