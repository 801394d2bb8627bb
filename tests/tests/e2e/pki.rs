//! Independent checks of what the agent hands out: X.509 (x509-parser, aws-lc-rs) and
//! JWS (hand-rolled compact serialization, so tests can build tokens the agent must refuse).

use aws_lc_rs::signature::{self, KeyPair as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

// ---------------------------------------------------------------------------------------
// X.509

/// Splits concatenated DER certificates (the Workload API's encoding).
pub fn split_der(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (rest, _) = X509Certificate::from_der(bytes).unwrap_or_else(|e| {
            panic!(
                "not concatenated DER certificates (after {} certificates): {e}",
                out.len()
            )
        });
        out.push(bytes[..bytes.len() - rest.len()].to_vec());
        bytes = rest;
    }
    out
}

pub fn pem_blocks(pem: &[u8]) -> Vec<(String, Vec<u8>)> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| {
            let p = p.unwrap_or_else(|e| panic!("bad PEM: {e}"));
            (p.label, p.contents)
        })
        .collect()
}

pub fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    pem_blocks(pem)
        .into_iter()
        .filter(|(l, _)| l == "CERTIFICATE")
        .map(|(_, d)| d)
        .collect()
}

pub fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der)
        .unwrap_or_else(|e| panic!("bad certificate: {e}"))
        .1
}

/// Lowercase hex, no separators (as the authority's audit prints it).
pub fn serial(der: &[u8]) -> String {
    parse(der)
        .raw_serial_as_string()
        .replace(':', "")
        .to_lowercase()
}

pub fn not_after(der: &[u8]) -> i64 {
    parse(der).validity().not_after.timestamp()
}

pub fn not_before(der: &[u8]) -> i64 {
    parse(der).validity().not_before.timestamp()
}

pub fn dns_sans(der: &[u8]) -> Vec<String> {
    let c = parse(der);
    match c.subject_alternative_name().expect("SAN extension parses") {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(u) => Some(u.to_string()),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    }
}

/// The X509-SVID standard's leaf profile. Panics naming the violated rule.
pub fn assert_leaf_profile(der: &[u8], spiffe_id: &str) {
    let c = parse(der);
    let san = c
        .subject_alternative_name()
        .expect("SAN parses")
        .expect("leaf has a subjectAltName extension");
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    assert_eq!(
        uris,
        vec![spiffe_id],
        "leaf must have exactly one URI SAN, the SPIFFE ID"
    );
    let path = spiffe_id
        .strip_prefix("spiffe://")
        .and_then(|r| r.find('/').map(|i| &r[i..]))
        .unwrap_or("");
    assert!(
        path.len() > 1,
        "leaf SPIFFE ID must have a non-root path: {spiffe_id}"
    );
    if c.subject().iter().next().is_none() {
        assert!(
            san.critical,
            "subject is empty, so the SAN extension must be critical"
        );
    }
    let bc = c
        .basic_constraints()
        .expect("basicConstraints parses")
        .expect("leaf has basicConstraints");
    assert!(!bc.value.ca, "leaf basicConstraints must be cA=false");
    let ku = c
        .key_usage()
        .expect("keyUsage parses")
        .expect("leaf has keyUsage");
    assert!(ku.critical, "leaf keyUsage must be critical");
    assert!(
        ku.value.digital_signature(),
        "leaf keyUsage must include digitalSignature"
    );
    assert!(
        !ku.value.key_cert_sign(),
        "leaf keyUsage must not include keyCertSign"
    );
    assert!(
        !ku.value.crl_sign(),
        "leaf keyUsage must not include cRLSign"
    );
    if let Some(eku) = c.extended_key_usage().expect("extendedKeyUsage parses") {
        assert!(
            eku.value.server_auth && eku.value.client_auth,
            "leaf EKU, when present, must hold serverAuth and clientAuth: {:?}",
            eku.value
        );
    }
}

/// A CA certificate after the leaf: cA=true and keyCertSign.
pub fn assert_ca(der: &[u8], what: &str) {
    let c = parse(der);
    let bc = c
        .basic_constraints()
        .expect("basicConstraints parses")
        .unwrap_or_else(|| panic!("{what}: no basicConstraints"));
    assert!(bc.value.ca, "{what}: must be a CA (cA=true)");
    let ku = c
        .key_usage()
        .expect("keyUsage parses")
        .unwrap_or_else(|| panic!("{what}: no keyUsage"));
    assert!(ku.value.key_cert_sign(), "{what}: must have keyCertSign");
}

/// Is `child` signed by `issuer`'s key?
pub fn signed_by(child: &[u8], issuer: &[u8]) -> bool {
    let c = parse(child);
    let i = parse(issuer);
    c.issuer() == i.subject() && c.verify_signature(Some(i.public_key())).is_ok()
}

/// Verifies `chain` (leaf first) up to one of `roots`; returns the leaf's issuer.
pub fn verify_chain(chain: &[Vec<u8>], roots: &[Vec<u8>]) -> Vec<u8> {
    assert!(!chain.is_empty(), "empty certificate chain");
    for i in 0..chain.len() {
        let next = chain.get(i + 1);
        match next {
            Some(parent) => assert!(
                signed_by(&chain[i], parent),
                "certificate {i} of the SVID chain is not signed by certificate {}",
                i + 1
            ),
            None => assert!(
                roots.iter().any(|r| signed_by(&chain[i], r)),
                "the last certificate of the SVID chain is not signed by any bundle authority"
            ),
        }
    }
    match chain.get(1) {
        Some(c) => c.clone(),
        None => roots
            .iter()
            .find(|r| signed_by(&chain[0], r))
            .unwrap()
            .clone(),
    }
}

/// The private key (unencrypted PKCS#8 DER) belongs to the leaf's public key.
pub fn assert_key_matches(pkcs8: &[u8], leaf: &[u8]) {
    let c = parse(leaf);
    let spki = &c.public_key().subject_public_key.data;
    let public: Vec<u8> = if let Ok(k) =
        signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
    {
        k.public_key().as_ref().to_vec()
    } else if let Ok(k) =
        signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8)
    {
        k.public_key().as_ref().to_vec()
    } else if let Ok(k) = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8) {
        k.public_key().as_ref().to_vec()
    } else if let Ok(k) = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
        k.public_key().as_ref().to_vec()
    } else {
        panic!("x509_svid_key is not an unencrypted PKCS#8 P-256/P-384/RSA/Ed25519 key");
    };
    assert_eq!(
        &public[..],
        &spki[..],
        "x509_svid_key does not match the leaf certificate's public key"
    );
}

// ---------------------------------------------------------------------------------------
// JWS / JWT

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64url: {s:?}: {e}"))
}

pub struct Jws {
    pub header: serde_json::Map<String, Value>,
    pub claims: serde_json::Map<String, Value>,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

pub fn decode_jws(token: &str) -> Jws {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS has three parts: {token:?}");
    let obj = |s: &str, what: &str| -> serde_json::Map<String, Value> {
        match serde_json::from_slice(&unb64(s)) {
            Ok(Value::Object(m)) => m,
            other => panic!("JWT {what} is not a JSON object: {other:?}"),
        }
    };
    Jws {
        header: obj(parts[0], "header"),
        claims: obj(parts[1], "claims"),
        signing_input: format!("{}.{}", parts[0], parts[1]),
        signature: unb64(parts[2]),
    }
}

fn encode_parts(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(serde_json::to_string(header).unwrap().as_bytes()),
        b64(serde_json::to_string(claims).unwrap().as_bytes())
    )
}

/// ES256 over exactly this header and these claims with a P-256 PKCS#8 key.
pub fn mint_es256(pkcs8: &[u8], header: &Value, claims: &Value) -> String {
    let key =
        signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .expect("the authority's JWT key is a P-256 PKCS#8 key");
    let input = encode_parts(header, claims);
    let sig = key
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

/// A fresh P-256 key (PKCS#8) nobody else knows.
pub fn fresh_p256() -> Vec<u8> {
    let k = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    k.to_pkcs8v1().unwrap().as_ref().to_vec()
}

pub fn mint_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = encode_parts(header, claims);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// `alg: none`: an empty signature.
pub fn mint_unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.", encode_parts(header, claims))
}

/// Verifies an ES256/ES384 JWS against an EC JWK.
pub fn verify_with_jwk(token: &str, jwk: &Value) -> bool {
    let jws = decode_jws(token);
    let alg = jws.header.get("alg").and_then(Value::as_str).unwrap_or("");
    let (x, y) = (
        unb64(jwk["x"].as_str().expect("EC JWK has x")),
        unb64(jwk["y"].as_str().expect("EC JWK has y")),
    );
    let mut point = vec![4u8];
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let alg: &dyn signature::VerificationAlgorithm = match alg {
        "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
        "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
        other => panic!("test helper only verifies ES256/ES384, got {other}"),
    };
    signature::UnparsedPublicKey::new(alg, point)
        .verify(jws.signing_input.as_bytes(), &jws.signature)
        .is_ok()
}
