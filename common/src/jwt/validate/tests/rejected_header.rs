use super::*;

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
