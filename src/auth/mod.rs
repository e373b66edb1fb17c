//! Built-in upload authorization: verifying the JSON Web Tokens that
//! clients present (`--auth-jwt-secret` / `--auth-jwt-public-key`) and the
//! identity a verified token carries. Pure apart from reading the key file
//! once at start; the http layer extracts tokens, the engine checks owners.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use std::path::PathBuf;

/// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;

/// Where the verification key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthKey {
    /// A shared secret: HS256, HS384 or HS512.
    Secret(String),
    /// A PEM public key file: RSA, EC (P-256/P-384) or Ed25519.
    PublicKeyFile(PathBuf),
}

/// JWT settings.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub key: AuthKey,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required member of `aud`, when set.
    pub audience: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match &self.key {
            AuthKey::Secret(_) => "secret (redacted)".to_owned(),
            AuthKey::PublicKeyFile(p) => p.display().to_string(),
        };
        f.debug_struct("AuthConfig")
            .field("key", &key)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl AuthConfig {
    /// The settings of the `--auth-jwt-*` options; `None` without a key.
    pub fn from_args(
        secret: Option<String>,
        public_key: Option<PathBuf>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Option<Self> {
        let key = match (secret.filter(|s| !s.is_empty()), public_key) {
            (Some(secret), _) => AuthKey::Secret(secret),
            (None, Some(path)) => AuthKey::PublicKeyFile(path),
            (None, None) => return None,
        };
        Some(AuthConfig {
            key,
            issuer: issuer.filter(|s| !s.is_empty()),
            audience: audience.filter(|s| !s.is_empty()),
        })
    }
}

/// Errors setting up verification (at start).
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot read JWT public key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("JWT public key {0} is not a PEM RSA, EC or Ed25519 public key")]
    Key(PathBuf),
    #[error("the JWT secret must be at least 32 bytes")]
    ShortSecret,
    #[error("JWT key: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// Why a presented token is refused; each becomes a 401 with an RFC 6750
/// `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature or algorithm is not accepted")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("the token's {0} claim is invalid")]
    InvalidClaim(&'static str),
}

/// A verified token's subject and claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Identity {
    /// `sub`: the owner of the uploads this token creates.
    pub subject: String,
    /// Every claim of the token, as sent.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `max_size`: largest upload this token may create, in bytes.
    #[serde(skip)]
    pub max_size: Option<u64>,
}

/// Verifies tokens against one key; the accepted algorithms follow from
/// the key's kind alone (never from the token), so `alg: none` and
/// HMAC-with-the-public-key confusion cannot pass.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Verifier {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        let (key, algorithms) = match &config.key {
            AuthKey::Secret(secret) => {
                if secret.len() < 32 {
                    return Err(AuthSetupError::ShortSecret);
                }
                (
                    DecodingKey::from_secret(secret.as_bytes())?,
                    vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                )
            }
            AuthKey::PublicKeyFile(path) => {
                let pem = std::fs::read(path).map_err(|source| AuthSetupError::Read {
                    path: path.clone(),
                    source,
                })?;
                public_key(&pem).ok_or_else(|| AuthSetupError::Key(path.clone()))?
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &config.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.validate_aud = true;
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Verifier { key, validation })
    }

    /// Verifies `token` (the part after `Bearer `) at time `now` (unix
    /// seconds, for the `iat` check; `exp`/`nbf` use the clock).
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        use jsonwebtoken::errors::ErrorKind as K;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .map_err(|e| match e.kind() {
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidSignature | K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                TokenError::BadSignature
            }
            K::MissingRequiredClaim(c) => TokenError::MissingClaim(match c.as_str() {
                "exp" => "exp",
                "sub" => "sub",
                "iss" => "iss",
                "aud" => "aud",
                _ => "required",
            }),
            K::InvalidIssuer => TokenError::InvalidClaim("iss"),
            K::InvalidAudience => TokenError::InvalidClaim("aud"),
            K::InvalidClaimFormat(c) if c == "exp" => TokenError::InvalidClaim("exp"),
            K::InvalidClaimFormat(c) if c == "nbf" => TokenError::InvalidClaim("nbf"),
            _ => TokenError::Malformed,
        })?;
        let claims = data.claims;
        let subject = match claims.get("sub") {
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
            Some(_) => return Err(TokenError::InvalidClaim("sub")),
            None => return Err(TokenError::MissingClaim("sub")),
        };
        match claims.get("iat") {
            None => {}
            Some(v) => match v.as_f64() {
                Some(iat) if iat <= (now + LEEWAY_SECS) as f64 => {}
                Some(_) => return Err(TokenError::NotYetValid),
                None => return Err(TokenError::InvalidClaim("iat")),
            },
        }
        let max_size = match claims.get("max_size") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or(TokenError::InvalidClaim("max_size"))?),
        };
        Ok(Identity {
            subject,
            claims,
            max_size,
        })
    }
}

/// A decoding key and its algorithms from a PEM public key.
fn public_key(pem: &[u8]) -> Option<(DecodingKey, Vec<Algorithm>)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((
            key,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        ));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Some((key, vec![Algorithm::EdDSA]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        crate::model::now_secs()
    }

    fn verifier() -> Verifier {
        Verifier::new(&AuthConfig {
            key: AuthKey::Secret(SECRET.into()),
            issuer: None,
            audience: None,
        })
        .unwrap()
    }

    fn hs(alg: Algorithm, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn the_token_matrix() {
        let v = verifier();
        let t = now();
        let ok = json!({"sub": "alice", "exp": t + 600, "max_size": 1000});
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let id = v.verify(&hs(alg, ok.clone()), t).unwrap();
            assert_eq!(id.subject, "alice");
            assert_eq!(id.max_size, Some(1000));
        }
        let good = hs(Algorithm::HS256, ok.clone());
        let (head, rest) = good.split_once('.').unwrap();
        let sig = rest.rsplit('.').next().unwrap();
        let tampered = format!(
            "{head}.{}.{sig}",
            b64(&json!({"sub": "mallory", "exp": t + 600}))
        );
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&ok)
        );
        let other_key = encode(
            &Header::new(Algorithm::HS256),
            &ok,
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!!").unwrap(),
        )
        .unwrap();
        for (name, token, want) in [
            (
                "expired",
                hs(Algorithm::HS256, json!({"sub": "a", "exp": t - 3600})),
                TokenError::Expired,
            ),
            (
                "not yet valid",
                hs(
                    Algorithm::HS256,
                    json!({"sub": "a", "exp": t + 7200, "nbf": t + 3600}),
                ),
                TokenError::NotYetValid,
            ),
            (
                "issued in the future",
                hs(
                    Algorithm::HS256,
                    json!({"sub": "a", "exp": t + 7200, "iat": t + 3600}),
                ),
                TokenError::NotYetValid,
            ),
            ("tampered", tampered, TokenError::BadSignature),
            ("alg none", none, TokenError::Malformed),
            ("wrong key", other_key, TokenError::BadSignature),
            (
                "no sub",
                hs(Algorithm::HS256, json!({"exp": t + 600})),
                TokenError::MissingClaim("sub"),
            ),
            (
                "no exp",
                hs(Algorithm::HS256, json!({"sub": "a"})),
                TokenError::MissingClaim("exp"),
            ),
            (
                "numeric sub",
                hs(Algorithm::HS256, json!({"sub": 7, "exp": t + 600})),
                TokenError::MissingClaim("sub"),
            ),
            (
                "bad max_size",
                hs(
                    Algorithm::HS256,
                    json!({"sub": "a", "exp": t + 600, "max_size": -1}),
                ),
                TokenError::InvalidClaim("max_size"),
            ),
            ("garbage", "not.a.jwt".into(), TokenError::Malformed),
        ] {
            assert_eq!(v.verify(&token, t), Err(want), "{name}");
        }
    }

    #[test]
    fn within_the_leeway_is_accepted() {
        let t = now();
        let token = hs(
            Algorithm::HS256,
            json!({"sub": "a", "exp": t + 600, "nbf": t + 5, "iat": t + 5}),
        );
        assert!(verifier().verify(&token, t).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let v = Verifier::new(&AuthConfig {
            key: AuthKey::Secret(SECRET.into()),
            issuer: Some("app".into()),
            audience: Some("uploads".into()),
        })
        .unwrap();
        let t = now();
        let good = json!({"sub": "a", "exp": t + 600, "iss": "app", "aud": ["uploads", "x"]});
        assert!(v.verify(&hs(Algorithm::HS256, good), t).is_ok());
        for (claims, want) in [
            (
                json!({"sub": "a", "exp": t + 600, "iss": "evil", "aud": "uploads"}),
                TokenError::InvalidClaim("iss"),
            ),
            (
                json!({"sub": "a", "exp": t + 600, "iss": "app", "aud": "other"}),
                TokenError::InvalidClaim("aud"),
            ),
            (
                json!({"sub": "a", "exp": t + 600, "aud": "uploads"}),
                TokenError::MissingClaim("iss"),
            ),
        ] {
            assert_eq!(v.verify(&hs(Algorithm::HS256, claims), t), Err(want));
        }
    }

    /// Test-only key pairs (generated for these tests, never used elsewhere).
    const KEYS: [(&str, &str, &str, Algorithm); 3] = [
        (
            "rsa",
            include_str!("testdata/rsa.pem"),
            include_str!("testdata/rsa.pub.pem"),
            Algorithm::RS256,
        ),
        (
            "ec",
            include_str!("testdata/ec256.pem"),
            include_str!("testdata/ec256.pub.pem"),
            Algorithm::ES256,
        ),
        (
            "ed25519",
            include_str!("testdata/ed25519.pem"),
            include_str!("testdata/ed25519.pub.pem"),
            Algorithm::EdDSA,
        ),
    ];

    #[test]
    fn public_keys_fix_their_algorithms() {
        let dir = tempfile::tempdir().unwrap();
        let t = now();
        let claims = json!({"sub": "alice", "exp": t + 600});
        for (name, private, public, alg) in KEYS {
            let path = dir.path().join(format!("{name}.pub.pem"));
            std::fs::write(&path, public).unwrap();
            let v = Verifier::new(&AuthConfig {
                key: AuthKey::PublicKeyFile(path),
                issuer: None,
                audience: None,
            })
            .unwrap();
            let signing = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()),
                Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
                _ => EncodingKey::from_ed_pem(private.as_bytes()),
            }
            .unwrap();
            let token = encode(&Header::new(alg), &claims, &signing).unwrap();
            assert_eq!(v.verify(&token, t).unwrap().subject, "alice", "{name}");
            // Algorithm confusion: HMAC keyed with the public key's bytes.
            let confused = encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(public.as_bytes()).unwrap(),
            )
            .unwrap();
            assert_eq!(
                v.verify(&confused, t),
                Err(TokenError::BadSignature),
                "{name}"
            );
            // A token of another key kind is refused too.
            assert_eq!(
                v.verify(&hs(Algorithm::HS256, claims.clone()), t),
                Err(TokenError::BadSignature),
                "{name}"
            );
        }
    }

    #[test]
    fn a_file_that_is_no_public_key_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.pem");
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            Verifier::new(&AuthConfig {
                key: AuthKey::PublicKeyFile(path),
                issuer: None,
                audience: None,
            }),
            Err(AuthSetupError::Key(_))
        ));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Verifier::new(&AuthConfig {
                key: AuthKey::Secret("short".into()),
                issuer: None,
                audience: None,
            }),
            Err(AuthSetupError::ShortSecret)
        ));
    }
}
