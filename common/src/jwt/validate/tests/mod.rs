use super::*;
use crate::jwt::{b64_encode, JwtSigner};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, RsaEncoding, RsaKeyPair,
    ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED_SIGNING, RSA_PKCS1_SHA256,
    RSA_PKCS1_SHA384, RSA_PKCS1_SHA512, RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512,
};
use serde_json::json;
use std::sync::OnceLock;

const NOW: i64 = 1_700_000_000;
const AUD: &str = "spiffe://example.org/db";

struct Fixture {
    signer: JwtSigner,
    bundle: JwtBundle,
    td: TrustDomain,
}

fn fx() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let signer = JwtSigner::generate().unwrap();
        let bundle = JwtBundle::from_keys(vec![signer.public_jwk()]).unwrap();
        Fixture {
            signer,
            bundle,
            td: TrustDomain::new("example.org").unwrap(),
        }
    })
}

fn header() -> Value {
    json!({"alg":"ES256","kid":fx().signer.kid(),"typ":"JWT"})
}

fn claims() -> Value {
    json!({"sub":"spiffe://example.org/web","aud":[AUD, "other"],"exp":NOW + 300,"iat":NOW,"jti":"j1"})
}

/// A correctly ES256-signed token over arbitrary header/claims bytes.
fn raw_token(header: &[u8], claims: &[u8]) -> String {
    fx().signer.sign_compact(header, claims).unwrap()
}

fn token(header: &Value, claims: &Value) -> String {
    raw_token(
        &serde_json::to_vec(header).unwrap(),
        &serde_json::to_vec(claims).unwrap(),
    )
}

fn check(token: &str) -> Result<ValidatedJwt, JwtError> {
    validate(token, AUD, &fx().bundle, &fx().td, NOW)
}

fn with(mut v: Value, member: &str, value: Value) -> Value {
    v[member] = value;
    v
}

fn without(mut v: Value, member: &str) -> Value {
    v.as_object_mut().unwrap().remove(member);
    v
}

fn ec_token(key: &EcdsaKeyPair, alg: &str, kid: &str) -> String {
    let h = b64_encode(&serde_json::to_vec(&json!({"alg":alg,"kid":kid,"typ":"JWT"})).unwrap());
    let p = b64_encode(&serde_json::to_vec(&claims()).unwrap());
    let input = format!("{h}.{p}");
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64_encode(sig.as_ref()))
}

fn ec_jwk(key: &EcdsaKeyPair, crv: &str, kid: &str) -> Value {
    let pt = key.public_key().as_ref();
    let n = (pt.len() - 1) / 2;
    json!({"kty":"EC","crv":crv,"kid":kid,"x":b64_encode(&pt[1..1 + n]),"y":b64_encode(&pt[1 + n..])})
}

fn rsa_token(key: &RsaKeyPair, enc: &'static dyn RsaEncoding, alg: &str, kid: &str) -> String {
    let h = b64_encode(&serde_json::to_vec(&json!({"alg":alg,"kid":kid})).unwrap());
    let p = b64_encode(&serde_json::to_vec(&claims()).unwrap());
    let input = format!("{h}.{p}");
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(enc, &SystemRandom::new(), input.as_bytes(), &mut sig)
        .unwrap();
    format!("{input}.{}", b64_encode(&sig))
}

fn rsa_jwk(key: &RsaKeyPair, kid: &str) -> Value {
    let c = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
    json!({"kty":"RSA","kid":kid,"n":b64_encode(&c.n),"e":b64_encode(&c.e)})
}

fn rsa_key() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
}

mod rejected_claims;
mod rejected_header;
mod rejected_structure;

// ---- accepted ----

#[test]
fn round_trip_sign_then_validate() {
    let aud = vec![AUD.to_string(), "x".to_string()];
    let id: SpiffeId = "spiffe://example.org/ns/prod/web".parse().unwrap();
    let t = fx().signer.sign(&id, &aud, NOW, NOW + 300).unwrap();
    let v = check(&t.token).unwrap();
    assert_eq!(v.spiffe_id, id);
    assert_eq!(v.claims["jti"], t.jti);
    assert_eq!(v.claims["exp"], NOW + 300);
    assert_eq!(v.claims["iat"], NOW);
    assert_eq!(v.claims["aud"], json!(aud));
    // Also valid for the second audience, and against a bundle holding more keys.
    let other = JwtSigner::generate().unwrap();
    let b = JwtBundle::from_keys(vec![other.public_jwk(), fx().signer.public_jwk()]).unwrap();
    assert!(validate(&t.token, "x", &b, &fx().td, NOW).is_ok());
}

#[test]
fn accepts_typ_jose_or_absent_and_aud_string() {
    assert!(check(&token(&with(header(), "typ", json!("JOSE")), &claims())).is_ok());
    assert!(check(&token(&without(header(), "typ"), &claims())).is_ok());
    assert!(check(&token(&header(), &with(claims(), "aud", json!(AUD)))).is_ok());
    // Custom claims are returned untouched.
    let v = check(&token(
        &header(),
        &with(claims(), "x-extra", json!({"a":1})),
    ))
    .unwrap();
    assert_eq!(v.claims["x-extra"], json!({"a":1}));
}

#[test]
fn validates_es384_and_es512() {
    for (alg, crv, signing) in [
        (
            "ES384",
            "P-384",
            &ECDSA_P384_SHA384_FIXED_SIGNING as &'static EcdsaSigningAlgorithm,
        ),
        ("ES512", "P-521", &ECDSA_P521_SHA512_FIXED_SIGNING),
    ] {
        let key = EcdsaKeyPair::generate(signing).unwrap();
        let bundle = JwtBundle::from_keys(vec![ec_jwk(&key, crv, "k")]).unwrap();
        let t = ec_token(&key, alg, "k");
        let v = validate(&t, AUD, &bundle, &fx().td, NOW).unwrap();
        assert_eq!(v.spiffe_id.as_str(), "spiffe://example.org/web");
    }
}

#[test]
fn validates_rsa_pkcs1_and_pss() {
    let key = rsa_key();
    let bundle = JwtBundle::from_keys(vec![rsa_jwk(key, "rsa")]).unwrap();
    let cases: [(&str, &'static dyn RsaEncoding); 6] = [
        ("RS256", &RSA_PKCS1_SHA256),
        ("RS384", &RSA_PKCS1_SHA384),
        ("RS512", &RSA_PKCS1_SHA512),
        ("PS256", &RSA_PSS_SHA256),
        ("PS384", &RSA_PSS_SHA384),
        ("PS512", &RSA_PSS_SHA512),
    ];
    for (alg, enc) in cases {
        let t = rsa_token(key, enc, alg, "rsa");
        assert!(validate(&t, AUD, &bundle, &fx().td, NOW).is_ok(), "{alg}");
    }
    // A PKCS#1 v1.5 signature relabelled as PSS (same hash) must not verify.
    let t = rsa_token(key, &RSA_PKCS1_SHA256, "PS256", "rsa");
    assert!(matches!(
        validate(&t, AUD, &bundle, &fx().td, NOW),
        Err(JwtError::BadSignature)
    ));
}

#[test]
fn boundary_times_are_accepted() {
    let c = with(
        with(claims(), "exp", json!(NOW + 1)),
        "iat",
        json!(NOW + MAX_CLOCK_SKEW_SECS),
    );
    assert!(check(&token(
        &header(),
        &with(c, "nbf", json!(NOW + MAX_CLOCK_SKEW_SECS))
    ))
    .is_ok());
    assert!(check(&token(
        &header(),
        &with(claims(), "exp", json!((NOW + 10) as f64 + 0.5))
    ))
    .is_ok());
}
