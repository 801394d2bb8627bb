//! JWT-SVID validation. Every rule is its own check with its own error.

use super::jwks::{JwtKey, KeyMaterial};
use super::{
    b64_decode, clip, parse_object, Alg, JwtBundle, JwtError, MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LEN,
};
use crate::spiffe_id::{SpiffeId, TrustDomain};
use aws_lc_rs::signature::{
    RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ECDSA_P521_SHA512_FIXED,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384, RSA_PKCS1_2048_8192_SHA512,
    RSA_PSS_2048_8192_SHA256, RSA_PSS_2048_8192_SHA384, RSA_PSS_2048_8192_SHA512,
};
use serde_json::{Map, Value};

/// The only JOSE header members a JWT-SVID may carry.
const ALLOWED_HEADER: [&str; 3] = ["alg", "kid", "typ"];

/// A JWT-SVID that passed [`validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedJwt {
    pub spiffe_id: SpiffeId,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
}

/// Validates a JWT-SVID for `audience` against the bundle of the token's trust domain at
/// Unix time `now`.
///
/// `exp` must be strictly greater than `now` (no leeway); `nbf` and `iat`, if present, may
/// be at most [`MAX_CLOCK_SKEW_SECS`] ahead of `now`.
pub fn validate(
    token: &str,
    audience: &str,
    bundle: &JwtBundle,
    trust_domain: &TrustDomain,
    now: i64,
) -> Result<ValidatedJwt, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (h64, p64, s64) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err(malformed("not a compact JWS of three parts")),
    };
    let header = b64_decode(h64).ok_or_else(|| malformed("header is not base64url"))?;
    let payload = b64_decode(p64).ok_or_else(|| malformed("payload is not base64url"))?;
    let signature = b64_decode(s64).ok_or_else(|| malformed("signature is not base64url"))?;

    let header = parse_object(&header, "header")?;
    // A raw map, so that jku/jwk/x5u/crit/... cannot slip through unnoticed.
    if let Some(extra) = header
        .keys()
        .find(|k| !ALLOWED_HEADER.contains(&k.as_str()))
    {
        return Err(JwtError::ExtraHeader(clip(extra)));
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => Alg::parse(a).ok_or_else(|| JwtError::UnsupportedAlg(clip(a)))?,
        Some(_) => return Err(malformed("header alg is not a string")),
        None => return Err(malformed("header has no alg")),
    };
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k,
        Some(Value::String(_)) | None => return Err(JwtError::MissingKid),
        Some(_) => return Err(malformed("header kid is not a string")),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t == "JWT" || t == "JOSE" => {}
        Some(Value::String(t)) => return Err(JwtError::BadTyp(clip(t))),
        Some(other) => return Err(JwtError::BadTyp(clip(&other.to_string()))),
    }

    let key = bundle
        .find(kid)
        .ok_or_else(|| JwtError::UnknownKid(clip(kid)))?;
    key.fits(alg).map_err(JwtError::KeyMismatch)?;
    // The signing input is the token text itself, exactly as received.
    let signed_len = h64.len() + 1 + p64.len();
    let message = token
        .get(..signed_len)
        .ok_or_else(|| malformed("bad signing input"))?;
    verify_signature(key, alg, message.as_bytes(), &signature)?;

    // Only authenticated bytes from here on.
    let claims = parse_object(&payload, "claims")?;
    let spiffe_id = check_subject(&claims, trust_domain)?;
    check_audience(&claims, audience)?;
    let exp = numeric_date(&claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if exp <= now {
        return Err(JwtError::Expired);
    }
    let horizon = now.saturating_add(MAX_CLOCK_SKEW_SECS);
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if nbf > horizon {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(&claims, "iat")? {
        if iat > horizon {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(ValidatedJwt { spiffe_id, claims })
}

fn malformed(msg: &str) -> JwtError {
    JwtError::Malformed(msg.to_string())
}

fn verify_signature(key: &JwtKey, alg: Alg, message: &[u8], sig: &[u8]) -> Result<(), JwtError> {
    // The verification algorithm comes from the (already policy-checked) alg, never from the key.
    let ok = match (&key.material, alg) {
        (KeyMaterial::Ec { .. }, Alg::ES256 | Alg::ES384 | Alg::ES512) => {
            let v: &'static dyn VerificationAlgorithm = match alg {
                Alg::ES384 => &ECDSA_P384_SHA384_FIXED,
                Alg::ES512 => &ECDSA_P521_SHA512_FIXED,
                _ => &ECDSA_P256_SHA256_FIXED,
            };
            UnparsedPublicKey::new(v, key.material.ec_point())
                .verify(message, sig)
                .is_ok()
        }
        (KeyMaterial::Rsa { n, e }, _) => {
            let params: &'static RsaParameters = match alg {
                Alg::RS256 => &RSA_PKCS1_2048_8192_SHA256,
                Alg::RS384 => &RSA_PKCS1_2048_8192_SHA384,
                Alg::RS512 => &RSA_PKCS1_2048_8192_SHA512,
                Alg::PS256 => &RSA_PSS_2048_8192_SHA256,
                Alg::PS384 => &RSA_PSS_2048_8192_SHA384,
                Alg::PS512 => &RSA_PSS_2048_8192_SHA512,
                _ => return Err(JwtError::KeyMismatch("RSA key".into())),
            };
            RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok()
        }
        (KeyMaterial::Ec { .. }, _) => return Err(JwtError::KeyMismatch("EC key".into())),
    };
    if ok {
        Ok(())
    } else {
        Err(JwtError::BadSignature)
    }
}

fn check_subject(claims: &Map<String, Value>, td: &TrustDomain) -> Result<SpiffeId, JwtError> {
    let sub = match claims.get("sub") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(JwtError::BadSubject("sub is not a string".into())),
        None => return Err(JwtError::MissingClaim("sub")),
    };
    let id = SpiffeId::parse_workload(sub).map_err(|e| JwtError::BadSubject(e.to_string()))?;
    let found = id.trust_domain();
    if &found != td {
        return Err(JwtError::WrongTrustDomain(clip(found.name())));
    }
    Ok(id)
}

fn check_audience(claims: &Map<String, Value>, audience: &str) -> Result<(), JwtError> {
    let matches = |v: &Value| v.as_str() == Some(audience);
    let found = match claims.get("aud") {
        Some(Value::String(_)) => claims.get("aud").is_some_and(matches),
        Some(Value::Array(list)) => {
            if !list.iter().all(Value::is_string) {
                return Err(JwtError::BadClaim("aud"));
            }
            list.iter().any(matches)
        }
        Some(_) => return Err(JwtError::BadClaim("aud")),
        None => return Err(JwtError::MissingClaim("aud")),
    };
    // An empty audience never matches: it would accept tokens minted with aud "".
    if audience.is_empty() || !found {
        return Err(JwtError::AudienceMismatch);
    }
    Ok(())
}

/// RFC 7519 NumericDate: integer or fractional seconds (fractions are floored).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(JwtError::BadClaim(name)),
        Some(_) => Err(JwtError::BadClaim(name)),
    }
}

#[cfg(test)]
mod tests;
