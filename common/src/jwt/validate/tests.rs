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

// ---- rejected: structure ----

#[test]
fn rejects_two_part_token() {
    let good = token(&header(), &claims());
    let two = good.rsplit_once('.').unwrap().0;
    assert!(matches!(check(two), Err(JwtError::Malformed(m)) if m.contains("three parts")));
    assert!(matches!(check("abc"), Err(JwtError::Malformed(m)) if m.contains("three parts")));
}

#[test]
fn rejects_four_part_token() {
    let good = token(&header(), &claims());
    for t in [
        format!("{good}.AAAA"),
        format!("{good}."),
        format!("{good}.a.b"),
    ] {
        assert!(matches!(check(&t), Err(JwtError::Malformed(m)) if m.contains("three parts")));
    }
}

#[test]
fn rejects_oversize_token() {
    // Correctly signed, so only the length cap can stop it.
    let big = with(claims(), "pad", json!("x".repeat(MAX_TOKEN_LEN)));
    let t = token(&header(), &big);
    assert!(t.len() > MAX_TOKEN_LEN);
    assert!(matches!(check(&t), Err(JwtError::TooLong)));
    let garbage = "a".repeat(MAX_TOKEN_LEN + 1);
    assert!(matches!(check(&garbage), Err(JwtError::TooLong)));
}

#[test]
fn rejects_malformed_base64() {
    let good = token(&header(), &claims());
    let p: Vec<&str> = good.split('.').collect();
    let cases = [
        format!("{}=.{}.{}", p[0], p[1], p[2]),  // padding
        format!("{}.{}.{}==", p[0], p[1], p[2]), // padded signature
        format!("{}.{}+.{}", p[0], p[1], p[2]),  // standard alphabet
        format!(
            "{}.{}.{}",
            p[0],
            p[1],
            p[2].replace(|c: char| c.is_ascii_alphabetic(), "/")
        ),
        format!("{} .{}.{}", p[0], p[1], p[2]),
    ];
    for t in cases {
        assert!(
            matches!(check(&t), Err(JwtError::Malformed(m)) if m.contains("base64url")),
            "{t}"
        );
    }
}

#[test]
fn rejects_malformed_json() {
    let c = serde_json::to_vec(&claims()).unwrap();
    let kid = fx().signer.kid();
    for h in [
        b"not json".to_vec(),
        b"[\"alg\"]".to_vec(),
        format!(r#"{{"alg":"ES256","kid":"{kid}"}} trailing"#).into_bytes(),
        // Duplicate members: which one wins differs between parsers.
        format!(r#"{{"alg":"ES256","alg":"none","kid":"{kid}"}}"#).into_bytes(),
    ] {
        assert!(matches!(
            check(&raw_token(&h, &c)),
            Err(JwtError::Malformed(_))
        ));
    }
    let h = serde_json::to_vec(&header()).unwrap();
    let dup_sub = br#"{"sub":"spiffe://example.org/web","sub":"spiffe://example.org/admin","aud":"spiffe://example.org/db","exp":9999999999}"#;
    for p in [&b"not json"[..], b"[]", b"\"str\"", dup_sub] {
        assert!(matches!(
            check(&raw_token(&h, p)),
            Err(JwtError::Malformed(_))
        ));
    }
    // Sanity: the dup_sub payload is otherwise acceptable.
    let single =
        br#"{"sub":"spiffe://example.org/web","aud":"spiffe://example.org/db","exp":9999999999}"#;
    assert!(check(&raw_token(&h, single)).is_ok());
}

// ---- rejected: header policy ----

#[test]
fn rejects_alg_none() {
    for alg in ["none", "None", "NONE"] {
        let h = with(header(), "alg", json!(alg));
        let t = token(&h, &claims());
        let unsigned = format!("{}.", t.rsplit_once('.').unwrap().0);
        for t in [t, unsigned] {
            assert!(matches!(check(&t), Err(JwtError::UnsupportedAlg(a)) if a == alg));
        }
    }
}

#[test]
fn rejects_hs256_with_public_key_as_secret() {
    use aws_lc_rs::hmac;
    let jwk = fx().signer.public_jwk();
    let jwk_bytes = serde_json::to_vec(&jwk).unwrap();
    let jwks_bytes = fx().bundle.to_jwks_json();
    let point = fx()
        .bundle
        .find(fx().signer.kid())
        .unwrap()
        .material
        .ec_point();
    for (alg, halg) in [
        ("HS256", hmac::HMAC_SHA256),
        ("HS384", hmac::HMAC_SHA384),
        ("HS512", hmac::HMAC_SHA512),
    ] {
        for secret in [&point[..], &jwk_bytes, &jwks_bytes] {
            let h = b64_encode(&serde_json::to_vec(&with(header(), "alg", json!(alg))).unwrap());
            let p = b64_encode(&serde_json::to_vec(&claims()).unwrap());
            let input = format!("{h}.{p}");
            let tag = hmac::sign(&hmac::Key::new(halg, secret), input.as_bytes());
            let t = format!("{input}.{}", b64_encode(tag.as_ref()));
            assert!(matches!(check(&t), Err(JwtError::UnsupportedAlg(a)) if a == alg));
        }
    }
}

#[test]
fn rejects_other_unsupported_algs() {
    for alg in [
        json!("EdDSA"),
        json!("ES256K"),
        json!("es256"),
        json!("RS1"),
    ] {
        let t = token(&with(header(), "alg", alg), &claims());
        assert!(matches!(check(&t), Err(JwtError::UnsupportedAlg(_))));
    }
    let t = token(&with(header(), "alg", json!(7)), &claims());
    assert!(matches!(check(&t), Err(JwtError::Malformed(_))));
    let t = token(&without(header(), "alg"), &claims());
    assert!(matches!(check(&t), Err(JwtError::Malformed(_))));
}

#[test]
fn rejects_extra_header_member() {
    for member in [
        "jku", "jwk", "x5u", "x5c", "crit", "cty", "b64", "zip", "foo",
    ] {
        let t = token(
            &with(header(), member, json!("https://evil.example/keys")),
            &claims(),
        );
        assert!(
            matches!(check(&t), Err(JwtError::ExtraHeader(m)) if m == member),
            "{member}"
        );
    }
}

#[test]
fn rejects_missing_kid() {
    let t = token(&without(header(), "kid"), &claims());
    assert!(matches!(check(&t), Err(JwtError::MissingKid)));
    let t = token(&with(header(), "kid", json!("")), &claims());
    assert!(matches!(check(&t), Err(JwtError::MissingKid)));
    let t = token(&with(header(), "kid", json!(["k"])), &claims());
    assert!(matches!(check(&t), Err(JwtError::Malformed(_))));
}

#[test]
fn rejects_bad_typ() {
    for typ in [
        json!("foo"),
        json!("jwt"),
        json!("at+jwt"),
        json!(""),
        json!(1),
        json!(null),
    ] {
        let t = token(&with(header(), "typ", typ.clone()), &claims());
        assert!(matches!(check(&t), Err(JwtError::BadTyp(_))), "{typ}");
    }
}

#[test]
fn rejects_unknown_kid() {
    let t = token(&with(header(), "kid", json!("not-in-bundle")), &claims());
    assert!(matches!(check(&t), Err(JwtError::UnknownKid(k)) if k == "not-in-bundle"));
    let good = token(&header(), &claims());
    let empty = JwtBundle::default();
    assert!(matches!(
        validate(&good, AUD, &empty, &fx().td, NOW),
        Err(JwtError::UnknownKid(_))
    ));
}

#[test]
fn rejects_key_that_does_not_fit_alg() {
    // ES384 / RS256 / PS256 header naming our P-256 key (correctly signed with it).
    for alg in ["ES384", "ES512", "RS256", "PS256"] {
        let t = token(&with(header(), "alg", json!(alg)), &claims());
        assert!(matches!(check(&t), Err(JwtError::KeyMismatch(_))), "{alg}");
    }
    // ES256 naming an RSA key; and an RSA key pinned to RS256 used for PS256.
    let key = rsa_key();
    let mut jwk = rsa_jwk(key, "rsa");
    jwk["alg"] = json!("RS256");
    let b = JwtBundle::from_keys(vec![jwk, fx().signer.public_jwk()]).unwrap();
    let t = token(&with(header(), "kid", json!("rsa")), &claims());
    assert!(matches!(
        validate(&t, AUD, &b, &fx().td, NOW),
        Err(JwtError::KeyMismatch(_))
    ));
    let t = rsa_token(key, &RSA_PSS_SHA256, "PS256", "rsa");
    assert!(matches!(
        validate(&t, AUD, &b, &fx().td, NOW),
        Err(JwtError::KeyMismatch(_))
    ));
    assert!(validate(
        &rsa_token(key, &RSA_PKCS1_SHA256, "RS256", "rsa"),
        AUD,
        &b,
        &fx().td,
        NOW
    )
    .is_ok());
}

// ---- rejected: signature ----

#[test]
fn rejects_tampered_payload() {
    let good = token(&header(), &claims());
    let p: Vec<&str> = good.split('.').collect();
    let evil = with(claims(), "sub", json!("spiffe://example.org/admin"));
    let forged = format!(
        "{}.{}.{}",
        p[0],
        b64_encode(&serde_json::to_vec(&evil).unwrap()),
        p[2]
    );
    assert!(matches!(check(&forged), Err(JwtError::BadSignature)));
    // Re-labelled header (typ JOSE instead of JWT) also breaks the signature.
    let h = b64_encode(&serde_json::to_vec(&with(header(), "typ", json!("JOSE"))).unwrap());
    assert!(matches!(
        check(&format!("{h}.{}.{}", p[1], p[2])),
        Err(JwtError::BadSignature)
    ));
}

#[test]
fn rejects_tampered_signature() {
    let good = token(&header(), &claims());
    let (input, sig) = good.rsplit_once('.').unwrap();
    let sig = b64_decode(sig).unwrap();
    for i in [0, 31, 32, 63] {
        let mut bad = sig.clone();
        bad[i] ^= 1;
        let t = format!("{input}.{}", b64_encode(&bad));
        assert!(matches!(check(&t), Err(JwtError::BadSignature)));
    }
    // Truncated, empty, and DER-encoded-length signatures.
    for bad in [&sig[..63], &[][..], &[0u8; 72][..]] {
        let t = format!("{input}.{}", b64_encode(bad));
        assert!(matches!(check(&t), Err(JwtError::BadSignature)));
    }
    // Signed by another key that claims our kid.
    let other = JwtSigner::from_pkcs8_der(
        JwtSigner::generate().unwrap().pkcs8_der(),
        fx().signer.kid().into(),
    )
    .unwrap();
    let t = other
        .sign_compact(
            &serde_json::to_vec(&header()).unwrap(),
            &serde_json::to_vec(&claims()).unwrap(),
        )
        .unwrap();
    assert!(matches!(check(&t), Err(JwtError::BadSignature)));
}

// ---- rejected: claims ----

#[test]
fn rejects_expired() {
    for exp in [
        json!(NOW),
        json!(NOW - 1),
        json!(0),
        json!(-5),
        json!(NOW as f64 + 0.5),
    ] {
        let t = token(&header(), &with(claims(), "exp", exp.clone()));
        assert!(matches!(check(&t), Err(JwtError::Expired)), "{exp}");
    }
}

#[test]
fn rejects_missing_or_bad_exp() {
    let t = token(&header(), &without(claims(), "exp"));
    assert!(matches!(check(&t), Err(JwtError::MissingClaim("exp"))));
    for exp in [json!("9999999999"), json!(null), json!([1])] {
        let t = token(&header(), &with(claims(), "exp", exp));
        assert!(matches!(check(&t), Err(JwtError::BadClaim("exp"))));
    }
}

#[test]
fn rejects_not_yet_valid_nbf() {
    let t = token(
        &header(),
        &with(claims(), "nbf", json!(NOW + MAX_CLOCK_SKEW_SECS + 1)),
    );
    assert!(matches!(check(&t), Err(JwtError::NotYetValid)));
    let t = token(&header(), &with(claims(), "nbf", json!("soon")));
    assert!(matches!(check(&t), Err(JwtError::BadClaim("nbf"))));
}

#[test]
fn rejects_iat_far_in_future() {
    let t = token(
        &header(),
        &with(claims(), "iat", json!(NOW + MAX_CLOCK_SKEW_SECS + 1)),
    );
    assert!(matches!(check(&t), Err(JwtError::NotYetValid)));
    let t = token(&header(), &with(claims(), "iat", json!(true)));
    assert!(matches!(check(&t), Err(JwtError::BadClaim("iat"))));
}

#[test]
fn rejects_wrong_audience() {
    let t = token(&header(), &claims());
    for aud in [
        "spiffe://example.org/other",
        "SPIFFE://example.org/db",
        "spiffe://example.org/db/",
        "",
    ] {
        assert!(matches!(
            validate(&t, aud, &fx().bundle, &fx().td, NOW),
            Err(JwtError::AudienceMismatch)
        ));
    }
    let t = token(&header(), &with(claims(), "aud", json!([])));
    assert!(matches!(check(&t), Err(JwtError::AudienceMismatch)));
    let t = token(&header(), &with(claims(), "aud", json!("")));
    assert!(matches!(
        validate(&t, "", &fx().bundle, &fx().td, NOW),
        Err(JwtError::AudienceMismatch)
    ));
}

#[test]
fn rejects_missing_or_bad_aud() {
    let t = token(&header(), &without(claims(), "aud"));
    assert!(matches!(check(&t), Err(JwtError::MissingClaim("aud"))));
    for aud in [json!([AUD, 1]), json!({"a": AUD}), json!(7)] {
        let t = token(&header(), &with(claims(), "aud", aud));
        assert!(matches!(check(&t), Err(JwtError::BadClaim("aud"))));
    }
}

#[test]
fn rejects_sub_not_spiffe_id() {
    for sub in [
        json!("web"),
        json!("https://example.org/web"),
        json!("spiffe://example.org"),
        json!("spiffe://example.org/a/../b"),
        json!(""),
        json!(5),
    ] {
        let t = token(&header(), &with(claims(), "sub", sub.clone()));
        assert!(matches!(check(&t), Err(JwtError::BadSubject(_))), "{sub}");
    }
    let t = token(&header(), &without(claims(), "sub"));
    assert!(matches!(check(&t), Err(JwtError::MissingClaim("sub"))));
}

#[test]
fn rejects_sub_in_other_trust_domain() {
    let t = token(
        &header(),
        &with(claims(), "sub", json!("spiffe://evil.org/web")),
    );
    assert!(matches!(check(&t), Err(JwtError::WrongTrustDomain(td)) if td == "evil.org"));
    let t = token(
        &header(),
        &with(claims(), "sub", json!("spiffe://example.org.evil.org/web")),
    );
    assert!(matches!(check(&t), Err(JwtError::WrongTrustDomain(_))));
}

// ---- interoperability with an independent implementation ----

fn jsonwebtoken_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only if some other code already installed one, which is fine too.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

#[test]
fn interop_jsonwebtoken_accepts_our_token() {
    jsonwebtoken_provider();
    let id: SpiffeId = "spiffe://example.org/web".parse().unwrap();
    let t = fx()
        .signer
        .sign(
            &id,
            &[AUD.to_string()],
            NOW,
            jsonwebtoken::get_current_timestamp() as i64 + 300,
        )
        .unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(fx().signer.public_jwk()).unwrap();
    assert_eq!(
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap(),
        fx().signer.kid()
    );
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[AUD]);
    let data = jsonwebtoken::decode::<Value>(&t.token, &key, &v).unwrap();
    assert_eq!(data.claims["sub"], id.as_str());
    assert_eq!(data.header.kid.as_deref(), Some(fx().signer.kid()));
}

#[test]
fn interop_we_accept_jsonwebtoken_token() {
    jsonwebtoken_provider();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some(fx().signer.kid().to_string());
    let key = jsonwebtoken::EncodingKey::from_ec_der(fx().signer.pkcs8_der());
    let t = jsonwebtoken::encode(&h, &claims(), &key).unwrap();
    assert!(check(&t).is_ok());
    // The same library adding a jku header is refused.
    h.jku = Some("https://evil.example/jwks".into());
    let t = jsonwebtoken::encode(&h, &claims(), &key).unwrap();
    assert!(matches!(check(&t), Err(JwtError::ExtraHeader(m)) if m == "jku"));
}
