use super::*;

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
