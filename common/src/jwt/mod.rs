//! JWT-SVIDs (SPIFFE JWT-SVID standard): ES256 signing for the authority, JWK Sets of
//! JWT authorities, and strict validation.
//!
//! All cryptography goes through aws-lc-rs directly, so no process-wide
//! jsonwebtoken crypto provider is needed and the header/claims policy is ours alone.

mod jwks;
mod sign;
mod validate;

pub use jwks::JwtBundle;
pub use sign::{JwtSigner, SignedJwt};
pub use validate::{validate, ValidatedJwt};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Longest compact token accepted; checked before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Largest JWK Set document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys a JWK Set may hold.
pub const MAX_JWKS_KEYS: usize = 256;
/// How far `iat`/`nbf` may lie ahead of the validator's clock (authority and agent clocks
/// differ a little). `exp` gets no leeway at all: a token is dead at `exp`.
pub const MAX_CLOCK_SKEW_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("unsupported alg {0:?}")]
    UnsupportedAlg(String),
    #[error("header member {0:?} is not allowed")]
    ExtraHeader(String),
    #[error("header has no kid")]
    MissingKid,
    #[error("header typ {0:?} is neither JWT nor JOSE")]
    BadTyp(String),
    #[error("no key with kid {0:?} in the bundle")]
    UnknownKid(String),
    #[error("key does not fit the token's alg: {0}")]
    KeyMismatch(String),
    #[error("signature verification failed")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid (nbf or iat in the future)")]
    NotYetValid,
    #[error("audience not accepted")]
    AudienceMismatch,
    #[error("sub is not a workload SPIFFE ID: {0}")]
    BadSubject(String),
    #[error("sub is in trust domain {0:?}, not the expected one")]
    WrongTrustDomain(String),
    #[error("claim {0} is missing")]
    MissingClaim(&'static str),
    #[error("claim {0} has an invalid value")]
    BadClaim(&'static str),
    #[error("key error: {0}")]
    Key(String),
    #[error("invalid JWT bundle: {0}")]
    Bundle(String),
}

/// Signature algorithms the SPIFFE JWT-SVID standard allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
}

impl Alg {
    pub(crate) fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "ES512" => Alg::ES512,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
        }
    }
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url: no padding, no non-canonical trailing bits (no signature malleability).
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Attacker-chosen strings end up in errors and logs: keep them short.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A JSON object that rejects duplicate members: parsers disagree on which duplicate wins,
/// which is a classic way to smuggle a second `alg` or `sub` past one of them.
pub(crate) struct StrictObject(pub(crate) Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<StrictObject, A::Error> {
                let mut m = Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    if m.contains_key(&k) {
                        return Err(A::Error::custom(format!("duplicate member {:?}", clip(&k))));
                    }
                    let v: Value = a.next_value()?;
                    m.insert(k, v);
                }
                Ok(StrictObject(m))
            }
        }
        d.deserialize_map(V)
    }
}

pub(crate) fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, JwtError> {
    serde_json::from_slice::<StrictObject>(bytes)
        .map(|o| o.0)
        .map_err(|e| JwtError::Malformed(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_object_rejects_duplicates_and_non_objects() {
        assert!(parse_object(br#"{"a":1,"b":2}"#, "x").is_ok());
        assert!(matches!(
            parse_object(br#"{"a":1,"a":2}"#, "x"),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_object(br#"[1]"#, "x"),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_object(br#"{"a":1} x"#, "x"),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn b64_is_strict() {
        assert_eq!(b64_decode("AQ").as_deref(), Some(&[1u8][..]));
        assert!(b64_decode("AQ==").is_none());
        assert!(b64_decode("AR").is_none()); // non-canonical trailing bits
        assert!(b64_decode("A+").is_none());
    }

    #[test]
    fn alg_names_round_trip() {
        for a in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
        ] {
            assert_eq!(Alg::parse(a).map(Alg::name), Some(a));
        }
        assert!(Alg::parse("none").is_none());
        assert!(Alg::parse("HS256").is_none());
        assert!(Alg::parse("es256").is_none());
    }

    #[test]
    fn clip_is_char_safe() {
        let long = "é".repeat(100);
        assert!(clip(&long).chars().count() <= 67);
        assert_eq!(clip("short"), "short");
    }
}
