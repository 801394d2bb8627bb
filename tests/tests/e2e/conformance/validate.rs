//! ValidateJWTSVID.

use super::*;

struct JwtFixture {
    d: Deployment,
    raw: Raw,
    id: String,
    /// Issued by the agent for audience `validate-aud`.
    token: String,
    key: Vec<u8>,
    kid: String,
}

const VAUD: &str = "validate-aud";

fn es256_header(kid: &str) -> Value {
    json!({"alg": "ES256", "kid": kid, "typ": "JWT"})
}

fn claims(sub: &str, aud: &str, iat: i64, exp: i64) -> Value {
    json!({"sub": sub, "aud": [aud], "iat": iat, "exp": exp})
}

async fn jwt_fixture(path: &str) -> JwtFixture {
    let (d, id) = Deployment::up(path).await.expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    let token = wait_jwt(&mut raw, &[VAUD], &id).await;
    let (key, kid) = d.jwt_signing_key().expect("read the JWT key");
    assert_eq!(
        pki::decode_jws(&token)
            .header
            .get("kid")
            .and_then(Value::as_str),
        Some(kid.as_str()),
        "the agent's JWT-SVID is not signed with the authority's key on disk"
    );
    // Control: a token minted here with the authority's key is accepted, so every variant
    // below is refused for its one defect.
    let t = now();
    let good = pki::mint_es256(
        &key,
        &es256_header(&kid),
        &claims(&id, VAUD, t - 5, t + 300),
    );
    assert_accepted(
        &mut raw,
        VAUD,
        &good,
        "a well-formed token signed by the authority's key",
    )
    .await;
    assert_accepted(&mut raw, VAUD, &token, "the agent's own JWT-SVID").await;
    JwtFixture {
        d,
        raw,
        id,
        token,
        key,
        kid,
    }
}

#[tokio::test]
async fn jwt_fetch_and_validate_round_trip() {
    let (d, id) = Deployment::up("conf/jwt-round-trip")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let t0 = now();
    let resp = fetch_jwt(&mut raw, &["aud-1", "aud-2"], &id)
        .await
        .unwrap_or_else(|st| panic!("FetchJWTSVID: {st:?}"));
    assert_eq!(resp.svids.len(), 1, "{resp:?}");
    assert_eq!(resp.svids[0].spiffe_id, id);
    let token = resp.svids[0].svid.clone();
    let jws = pki::decode_jws(&token);

    let members: BTreeSet<&str> = jws.header.keys().map(String::as_str).collect();
    let allowed: BTreeSet<&str> = ["alg", "kid", "typ"].into();
    assert!(
        members.is_subset(&allowed),
        "JWT header may only hold alg, kid, typ: {:?}",
        jws.header
    );
    let alg = jws.header.get("alg").and_then(Value::as_str).unwrap_or("");
    assert!(
        ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]
            .contains(&alg),
        "alg {alg:?} is not allowed for JWT-SVIDs"
    );
    let kid = jws.header.get("kid").and_then(Value::as_str).unwrap_or("");
    assert!(!kid.is_empty(), "kid must always be set: {:?}", jws.header);
    if let Some(typ) = jws.header.get("typ") {
        assert!(
            typ == "JWT" || typ == "JOSE",
            "typ must be JWT or JOSE, got {typ}"
        );
    }

    assert_eq!(
        jws.claims.get("sub").and_then(Value::as_str),
        Some(id.as_str()),
        "sub"
    );
    let aud: BTreeSet<&str> = match jws.claims.get("aud") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => [s.as_str()].into(),
        other => panic!("aud claim missing or not a string/array: {other:?}"),
    };
    assert_eq!(
        aud,
        ["aud-1", "aud-2"].into(),
        "aud must hold all requested audiences"
    );
    let exp = jws
        .claims
        .get("exp")
        .and_then(Value::as_i64)
        .expect("exp is an integer");
    let iat = jws
        .claims
        .get("iat")
        .and_then(Value::as_i64)
        .expect("iat is an integer");
    let t1 = now();
    assert!(
        iat >= t0 - 60 && iat <= t1 + 1,
        "iat {iat} is not about now ({t0}..{t1})"
    );
    assert!(
        exp > t1,
        "a fresh JWT-SVID must not be expired (exp {exp}, now {t1})"
    );
    assert!(
        (280..=310).contains(&(exp - iat)),
        "default_jwt_ttl is 5m, but exp - iat = {}",
        exp - iat
    );

    // The signature verifies with the key of that kid in the agent's JWT bundle.
    let bundles = first(raw.fetch_jwt_bundles(req(pb::JwtBundlesRequest {})))
        .await
        .unwrap_or_else(|st| panic!("FetchJWTBundles: {st:?}"));
    let jwks: Value =
        serde_json::from_slice(bundles.bundles.get(TD_KEY).unwrap_or_else(|| {
            panic!("no JWT bundle keyed {TD_KEY}: {:?}", bundles.bundles.keys())
        }))
        .expect("JWT bundle is JSON");
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == kid))
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWT bundle {jwks}"));
    assert!(
        pki::verify_with_jwk(&token, jwk),
        "JWT-SVID signature does not verify with its kid's JWK"
    );

    // ValidateJWTSVID on the agent.
    let v = assert_accepted(&mut raw, "aud-2", &token, "its own fresh JWT-SVID").await;
    assert_eq!(v.spiffe_id, id);
    let c = v
        .claims
        .expect("ValidateJWTSVIDResponse carries the claims");
    assert_eq!(struct_str(&c, "sub"), Some(id.as_str()));
    let vaud: BTreeSet<String> = struct_strings(&c, "aud").into_iter().collect();
    assert_eq!(vaud, ["aud-1".to_string(), "aud-2".to_string()].into());
    assert_eq!(struct_num(&c, "exp").map(|e| e as i64), Some(exp));

    // The spiffe crate's client, both ways.
    let client = d.client().await.expect("connect the spiffe client");
    let sid = spiffe::SpiffeId::from_str(&id).unwrap();
    let svid = within(
        secs(20),
        "spiffe fetch_jwt_svid",
        client.fetch_jwt_svid(["aud-3"], Some(&sid)),
    )
    .await
    .unwrap_or_else(|e| panic!("spiffe fetch_jwt_svid: {e}"));
    assert_eq!(svid.spiffe_id().to_string(), id);
    assert_eq!(svid.audience(), &["aud-3".to_string()]);
    let checked = within(
        secs(20),
        "spiffe validate_jwt_token",
        client.validate_jwt_token("aud-3", svid.token()),
    )
    .await
    .unwrap_or_else(|e| panic!("spiffe validate_jwt_token: {e}"));
    assert_eq!(checked.spiffe_id().to_string(), id);
    let err = within(
        secs(20),
        "spiffe validate_jwt_token",
        client.validate_jwt_token("aud-x", svid.token()),
    )
    .await
    .expect_err("wrong audience must be refused");
    assert!(
        err.is_invalid_argument(),
        "expected InvalidArgument, got {err:?}"
    );
}

#[tokio::test]
async fn validate_rejects_tampered_signature() {
    let JwtFixture {
        d: _d,
        mut raw,
        token,
        ..
    } = jwt_fixture("conf/validate-tampered").await;
    let parts: Vec<&str> = token.split('.').collect();
    let mut sig = pki::unb64(parts[2]);
    sig[10] ^= 0x01;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], pki::b64(&sig));
    assert_rejected(
        &mut raw,
        VAUD,
        &flipped,
        "a token with one signature bit flipped",
    )
    .await;
    let short = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        pki::b64(&sig[..sig.len() - 1])
    );
    assert_rejected(&mut raw, VAUD, &short, "a token with a truncated signature").await;
    // Claims changed under the original signature.
    let mut c = pki::decode_jws(&token).claims;
    c.insert("sub".into(), json!("spiffe://example.org/conf/admin"));
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        pki::b64(serde_json::to_string(&c).unwrap().as_bytes()),
        parts[2]
    );
    assert_rejected(
        &mut raw,
        VAUD,
        &swapped,
        "a token whose sub was changed after signing",
    )
    .await;
    // No signature at all.
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_rejected(
        &mut raw,
        VAUD,
        &unsigned,
        "an ES256 token with the signature removed",
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_wrong_audience() {
    let JwtFixture {
        d: _d,
        mut raw,
        token,
        ..
    } = jwt_fixture("conf/validate-audience").await;
    for aud in ["other-aud", "validate", "validate-aud ", "VALIDATE-AUD"] {
        assert_rejected(
            &mut raw,
            aud,
            &token,
            &format!("a token for {VAUD:?} presented for audience {aud:?}"),
        )
        .await;
    }
}

#[tokio::test]
async fn validate_rejects_expired() {
    let mut f = jwt_fixture("conf/validate-expired").await;
    let t = now();
    // Signed by the authority's key, everything right but exp (5s ago).
    let expired = pki::mint_es256(
        &f.key,
        &es256_header(&f.kid),
        &claims(&f.id, VAUD, t - 65, t - 5),
    );
    assert_rejected(&mut f.raw, VAUD, &expired, "a token that expired 5s ago").await;

    // An agent-issued JWT-SVID with a 2s TTL, validated after it has expired.
    let short = format!("spiffe://{TD}/conf/validate-expired-short");
    f.d.create_entry(&short, &["unix:uid:0"], &["--jwt-ttl", "2s"])
        .await
        .expect("create an entry");
    let token = wait_jwt(&mut f.raw, &["exp-aud"], &short).await;
    let exp = pki::decode_jws(&token).claims["exp"].as_i64().expect("exp");
    assert!(
        exp - now() <= 3,
        "--jwt-ttl 2s not honoured: exp is {}s away",
        exp - now()
    );
    // Wait out the lifetime (time must pass; there is no condition to poll).
    let wait = (exp + 1 - now()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 200)).await;
    if validate(&mut f.raw, "exp-aud", &token).await.is_ok() {
        // Measure how long it keeps being accepted, for a precise report.
        let mut last_ok = now();
        while now() < exp + 75 {
            tokio::time::sleep(secs(1)).await;
            match validate(&mut f.raw, "exp-aud", &token).await {
                Ok(_) => last_ok = now(),
                Err(_) => break,
            }
        }
        panic!(
            "ValidateJWTSVID accepted an agent-issued token after its exp ({exp}); still accepted \
             {}s after exp (a clock-skew leeway on exp?)",
            last_ok - exp
        );
    }
    assert_rejected(
        &mut f.raw,
        "exp-aud",
        &token,
        "an agent-issued JWT-SVID after its exp",
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_unknown_kid() {
    let JwtFixture {
        d: _d,
        mut raw,
        id,
        key,
        kid,
        ..
    } = jwt_fixture("conf/validate-kid").await;
    let t = now();
    let c = claims(&id, VAUD, t - 5, t + 300);
    let unknown = pki::mint_es256(&key, &es256_header("no-such-kid"), &c);
    assert_rejected(
        &mut raw,
        VAUD,
        &unknown,
        "a token whose kid is not in the bundle",
    )
    .await;
    let stranger = pki::fresh_p256();
    let foreign = pki::mint_es256(&stranger, &es256_header("stranger-kid"), &c);
    assert_rejected(
        &mut raw,
        VAUD,
        &foreign,
        "a token signed by a foreign key with its own kid",
    )
    .await;
    let impostor = pki::mint_es256(&stranger, &es256_header(&kid), &c);
    assert_rejected(
        &mut raw,
        VAUD,
        &impostor,
        "a token signed by a foreign key claiming the real kid",
    )
    .await;
    let no_kid = pki::mint_es256(&key, &json!({"alg": "ES256", "typ": "JWT"}), &c);
    assert_rejected(&mut raw, VAUD, &no_kid, "a token without kid").await;
}

#[tokio::test]
async fn validate_rejects_alg_none() {
    let JwtFixture {
        d: _d,
        mut raw,
        id,
        kid,
        token,
        ..
    } = jwt_fixture("conf/validate-none").await;
    let t = now();
    let c = claims(&id, VAUD, t - 5, t + 300);
    for alg in ["none", "None", "NONE"] {
        let h = json!({"alg": alg, "kid": kid, "typ": "JWT"});
        assert_rejected(
            &mut raw,
            VAUD,
            &pki::mint_unsigned(&h, &c),
            &format!("an unsigned token with alg {alg:?}"),
        )
        .await;
    }
    // alg swapped to none, the genuine signature left in place.
    let parts: Vec<&str> = token.split('.').collect();
    let h = json!({"alg": "none", "kid": kid, "typ": "JWT"});
    let swapped = format!(
        "{}.{}.{}",
        pki::b64(h.to_string().as_bytes()),
        parts[1],
        parts[2]
    );
    assert_rejected(
        &mut raw,
        VAUD,
        &swapped,
        "a genuine token relabelled alg none",
    )
    .await;
}

#[tokio::test]
async fn validate_rejects_hs256() {
    let JwtFixture {
        d: _d,
        mut raw,
        id,
        kid,
        ..
    } = jwt_fixture("conf/validate-hs256").await;
    let t = now();
    let c = claims(&id, VAUD, t - 5, t + 300);
    // Key confusion: HMAC keyed with public material the attacker knows.
    let bundles = first(raw.fetch_jwt_bundles(req(pb::JwtBundlesRequest {})))
        .await
        .unwrap();
    let jwks_bytes = bundles.bundles.get(TD_KEY).cloned().unwrap_or_default();
    let jwks: Value = serde_json::from_slice(&jwks_bytes).unwrap_or(Value::Null);
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == kid.as_str()).cloned())
        .unwrap_or(Value::Null);
    let mut secrets: Vec<Vec<u8>> = vec![
        Vec::new(),
        jwks_bytes.to_vec(),
        jwk.to_string().into_bytes(),
    ];
    if let (Some(x), Some(y)) = (jwk["x"].as_str(), jwk["y"].as_str()) {
        let mut point = vec![4u8];
        point.extend(pki::unb64(x));
        point.extend(pki::unb64(y));
        secrets.push(point);
    }
    for alg in ["HS256", "HS384", "HS512"] {
        for (i, s) in secrets.iter().enumerate() {
            let h = json!({"alg": alg, "kid": kid, "typ": "JWT"});
            // Only HMAC-SHA256 is computed; for HS384/512 the tag is wrong anyway, which
            // must be refused just the same.
            let token = pki::mint_hs256(s, &h, &c);
            assert_rejected(
                &mut raw,
                VAUD,
                &token,
                &format!("an {alg} token (secret #{i})"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn validate_rejects_extra_header_member() {
    let JwtFixture {
        d: _d,
        mut raw,
        id,
        key,
        kid,
        ..
    } = jwt_fixture("conf/validate-extra-header").await;
    let t = now();
    let c = claims(&id, VAUD, t - 5, t + 300);
    let cases = [
        (
            "x5u",
            json!({"alg": "ES256", "kid": kid, "typ": "JWT", "x5u": "https://evil.example/keys"}),
        ),
        (
            "jku",
            json!({"alg": "ES256", "kid": kid, "typ": "JWT", "jku": "https://evil.example/jwks"}),
        ),
        (
            "crit",
            json!({"alg": "ES256", "kid": kid, "typ": "JWT", "crit": ["exp"]}),
        ),
        (
            "cty",
            json!({"alg": "ES256", "kid": kid, "typ": "JWT", "cty": "JWT"}),
        ),
        (
            "typ at+jwt",
            json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"}),
        ),
    ];
    for (what, h) in cases {
        let token = pki::mint_es256(&key, &h, &c);
        assert_rejected(
            &mut raw,
            VAUD,
            &token,
            &format!("a correctly signed token with header {what}"),
        )
        .await;
    }
    // typ is optional, and JOSE is allowed: these are accepted (so the above fail for the member).
    let ok = pki::mint_es256(&key, &json!({"alg": "ES256", "kid": kid}), &c);
    assert_accepted(&mut raw, VAUD, &ok, "a token without typ").await;
    let ok = pki::mint_es256(
        &key,
        &json!({"alg": "ES256", "kid": kid, "typ": "JOSE"}),
        &c,
    );
    assert_accepted(&mut raw, VAUD, &ok, "a token with typ JOSE").await;
}

#[tokio::test]
async fn validate_rejects_empty_fields() {
    let JwtFixture {
        d: _d,
        mut raw,
        token,
        ..
    } = jwt_fixture("conf/validate-empty").await;
    assert_rejected(&mut raw, "", &token, "a valid token with an empty audience").await;
    assert_rejected(&mut raw, VAUD, "", "an empty svid").await;
    assert_rejected(&mut raw, "", "", "an empty audience and svid").await;
}

#[tokio::test]
async fn validate_rejects_malformed_token() {
    let JwtFixture {
        d: _d,
        mut raw,
        token,
        ..
    } = jwt_fixture("conf/validate-malformed").await;
    let parts: Vec<&str> = token.split('.').collect();
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(200_000), parts[2]);
    let cases = [
        "garbage".to_string(),
        "a.b.c".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{token}.extra"),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", pki::b64(b"not json"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], pki::b64(b"[1,2,3]"), parts[2]),
        huge,
    ];
    for (i, t) in cases.iter().enumerate() {
        assert_rejected(&mut raw, VAUD, t, &format!("malformed token #{i}")).await;
    }
    // Still alive and well.
    assert_accepted(
        &mut raw,
        VAUD,
        &token,
        "the genuine token after the malformed ones",
    )
    .await;
}
