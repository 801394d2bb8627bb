//! A JWT-SVID handed to `ValidateJWTSVID`, and a JWKS document as bundles
//! carry it: the token is validated against a bundle holding the fixed
//! key below at [`NOW`], so signed seeds are valid and mutations get far.

use crate::NOW;
use base64::Engine;
use std::sync::OnceLock;
use tessera_common::jwt::{self, JwtBundle, JwtSigner};
use tessera_common::TrustDomain;

/// A P-256 key made for this fuzz target only (PKCS#8, base64).
const KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWZPcVi3v82TRwi9AgxtSsAoBpSywvpuLm+LijCp9SjihRANCAASzOsOClmq5JuzWOEO/a4F2PthsAh80jpswskiZN8jam0TMOP7sI4GagSoLve5hlC2VB77zOZ9GM1yIP0Gspz+v";
pub const AUDIENCE: &str = "fuzz-audience";

pub(crate) struct Keys {
    pub signer: JwtSigner,
    pub bundle: JwtBundle,
    pub td: TrustDomain,
}

pub(crate) fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let der = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap_or_else(|e| panic!("key: {e}"));
        let signer =
            JwtSigner::from_pkcs8_der(&der, "fuzz".into()).unwrap_or_else(|e| panic!("key: {e}"));
        let bundle =
            JwtBundle::from_keys(vec![signer.public_jwk()]).unwrap_or_else(|e| panic!("{e}"));
        let td = TrustDomain::new("example.org").unwrap_or_else(|e| panic!("{e}"));
        Keys { signer, bundle, td }
    })
}

/// Validates `token` the way the Workload API's `ValidateJWTSVID` does.
pub(crate) fn validate(token: &str, audience: &str) {
    let k = keys();
    let _ = jwt::validate(token, audience, &k.bundle, &k.td, NOW);
}

pub fn fuzz_one(data: &[u8]) {
    let _ = JwtBundle::from_jwks_json(data);
    if let Ok(token) = std::str::from_utf8(data) {
        validate(token, AUDIENCE);
    }
}

/// Valid tokens (one audience, two) and the bundle's JWKS.
pub(crate) fn tokens() -> Vec<String> {
    let k = keys();
    let sub = k.td.id("/fuzz").unwrap_or_else(|e| panic!("{e}"));
    [
        vec![AUDIENCE.to_string()],
        vec![AUDIENCE.to_string(), "other".to_string()],
    ]
    .iter()
    .map(|aud| {
        k.signer
            .sign(&sub, aud, NOW - 60, NOW + 3600)
            .unwrap_or_else(|e| panic!("sign: {e}"))
            .token
    })
    .collect()
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut s: Vec<Vec<u8>> = tokens().into_iter().map(String::into_bytes).collect();
    s.push(keys().bundle.to_jwks_json());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed tokens pass validation, so mutations start past every check.
    #[test]
    fn seed_tokens_are_valid() {
        let k = keys();
        for t in tokens() {
            jwt::validate(&t, AUDIENCE, &k.bundle, &k.td, NOW).expect("seed token validates");
        }
    }
}
