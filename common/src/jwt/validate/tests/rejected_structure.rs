use super::*;

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
