//! Encodings: X.509-SVIDs, bundles, JWKS.

use super::*;

#[tokio::test]
async fn x509_svid_verifies_against_bundle_and_follows_profile() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (id, _) = d
        .register_self("conf/x509-profile", &["--dns", "svc.example.org"])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    let resp = wait_x509(&mut raw, &[&id]).await;
    let s = svid(&resp, &id);
    let chain = pki::split_der(&s.x509_svid);
    assert!(!chain.is_empty(), "x509_svid is empty");
    let leaf = &chain[0];
    pki::assert_leaf_profile(leaf, &id);
    assert_eq!(
        pki::dns_sans(leaf),
        vec!["svc.example.org".to_string()],
        "the entry's --dns name"
    );
    for (i, ca) in chain.iter().enumerate().skip(1) {
        pki::assert_ca(ca, &format!("x509_svid certificate {i} (after the leaf)"));
    }
    pki::assert_key_matches(&s.x509_svid_key, leaf);

    // The bundle is concatenated DER and equals the authority's trust bundle.
    let bundle = pki::split_der(&s.bundle);
    let authority: Vec<Vec<u8>> =
        pki::pem_certs(d.bundle_pem().expect("read bundle.pem").as_bytes());
    assert_eq!(
        bundle.iter().collect::<BTreeSet<_>>(),
        authority.iter().collect::<BTreeSet<_>>(),
        "X509SVID.bundle differs from `tessera-authority bundle show`"
    );
    for td in resp.federated_bundles.keys() {
        assert!(
            td.starts_with("spiffe://"),
            "federated_bundles key {td:?} is not spiffe://<td>"
        );
    }
    let issuer = pki::verify_chain(&chain, &bundle);

    // Lifetime.
    let (nb, na, t) = (pki::not_before(leaf), pki::not_after(leaf), now());
    assert!(
        nb <= t && t < na,
        "leaf is not currently valid: {nb}..{na}, now {t}"
    );
    assert!(
        na <= pki::not_after(&issuer),
        "leaf outlives its issuing CA"
    );
    assert!(
        na - t <= 3600 + 60,
        "default_x509_ttl is 1h, the leaf lives {}s more",
        na - t
    );

    // The spiffe crate parses (and itself validates) the same thing.
    let client = d.client().await.expect("connect the spiffe client");
    let ctx = within(
        secs(20),
        "spiffe fetch_x509_context",
        client.fetch_x509_context(),
    )
    .await
    .unwrap_or_else(|e| panic!("spiffe fetch_x509_context: {e}"));
    let svids = ctx.svids();
    let mine = svids
        .iter()
        .find(|s| s.spiffe_id().to_string() == id)
        .expect("spiffe client sees the SVID");
    assert_eq!(mine.leaf().as_ref(), &leaf[..]);
    let b = ctx
        .bundle_set()
        .get(&td())
        .expect("the spiffe client has a bundle for example.org");
    let auths: BTreeSet<Vec<u8>> = b
        .authorities()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    assert_eq!(auths, authority.into_iter().collect());
}

#[tokio::test]
async fn x509_stream_first_message_is_immediate_and_complete() {
    let (d, id) = Deployment::up("conf/x509-first-message")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let mut s = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let m = next(&mut s, secs(2), "the first message must go out at once")
        .await
        .unwrap_or_else(|st| panic!("FetchX509SVID: {st:?}"))
        .expect("the stream ended before its first message");
    assert!(
        !m.svids.is_empty(),
        "the first message has an empty svids list"
    );
    for v in &m.svids {
        assert!(
            !v.spiffe_id.is_empty()
                && !v.x509_svid.is_empty()
                && !v.x509_svid_key.is_empty()
                && !v.bundle.is_empty(),
            "an SVID with an empty field: {}",
            v.spiffe_id
        );
    }
    // Same through the spiffe crate's stream.
    use futures::StreamExt as _;
    let client = d.client().await.expect("connect the spiffe client");
    let mut st = within(
        secs(10),
        "spiffe stream_x509_contexts",
        client.stream_x509_contexts(),
    )
    .await
    .unwrap_or_else(|e| panic!("stream_x509_contexts: {e}"));
    let ctx = within(secs(2), "first X509Context", st.next())
        .await
        .expect("the stream ended")
        .unwrap_or_else(|e| panic!("first X509Context: {e}"));
    assert!(ctx.svids().iter().any(|s| s.spiffe_id().to_string() == id));
}

#[tokio::test]
async fn x509_bundles_stream_first_message_and_keyed_by_trust_domain() {
    let (d, id) = Deployment::up("conf/x509-bundles")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let mut s = open(
        "FetchX509Bundles",
        raw.fetch_x509_bundles(req(pb::X509BundlesRequest {})),
    )
    .await;
    let m = next(&mut s, secs(2), "the first FetchX509Bundles message")
        .await
        .unwrap_or_else(|st| panic!("FetchX509Bundles: {st:?}"))
        .expect("the stream ended before its first message");
    let keys: Vec<&String> = m.bundles.keys().collect();
    assert_eq!(
        keys,
        vec![TD_KEY],
        "bundles must be keyed spiffe://<trust domain>"
    );
    let authority = pki::pem_certs(d.bundle_pem().expect("read bundle.pem").as_bytes());
    let got = pki::split_der(&m.bundles[TD_KEY]);
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>(),
        authority.iter().collect::<BTreeSet<_>>(),
        "the X.509 bundle differs from `tessera-authority bundle show`"
    );

    use futures::StreamExt as _;
    let client = d.client().await.expect("connect the spiffe client");
    let mut st = within(
        secs(10),
        "spiffe stream_x509_bundles",
        client.stream_x509_bundles(),
    )
    .await
    .unwrap_or_else(|e| panic!("stream_x509_bundles: {e}"));
    let set = within(secs(2), "first X509BundleSet", st.next())
        .await
        .expect("the stream ended")
        .unwrap_or_else(|e| panic!("first X509BundleSet: {e}"));
    let b = set
        .get(&td())
        .expect("spiffe client: a bundle for example.org");
    assert_eq!(b.authorities().len(), authority.len());
}

#[tokio::test]
async fn jwt_bundles_are_plain_jwks_with_kid() {
    let (d, id) = Deployment::up("conf/jwt-bundles")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    let token = wait_jwt(&mut raw, &["jwks-aud"], &id).await;
    let m = first(raw.fetch_jwt_bundles(req(pb::JwtBundlesRequest {})))
        .await
        .unwrap_or_else(|st| panic!("FetchJWTBundles: {st:?}"));
    let keys: Vec<&String> = m.bundles.keys().collect();
    assert_eq!(
        keys,
        vec![TD_KEY],
        "JWT bundles must be keyed spiffe://<trust domain>"
    );
    let jwks: Value = serde_json::from_slice(&m.bundles[TD_KEY]).expect("the JWT bundle is JSON");
    let obj = jwks.as_object().expect("a JWK Set is a JSON object");
    let members: Vec<&String> = obj.keys().collect();
    assert_eq!(
        members,
        vec!["keys"],
        "a plain RFC 7517 JWK Set (no spiffe_sequence/spiffe_refresh_hint): {jwks}"
    );
    let ks = jwks["keys"].as_array().expect("keys is an array");
    assert!(!ks.is_empty(), "the JWT bundle has no keys");
    let mut kids = BTreeSet::new();
    for k in ks {
        let kid = k["kid"].as_str().unwrap_or("");
        assert!(!kid.is_empty(), "every JWT key needs a kid: {k}");
        assert!(k["kty"].is_string(), "JWK without kty: {k}");
        assert!(
            k.get("x5c").is_none(),
            "x5c belongs to the SPIFFE bundle format: {k}"
        );
        assert!(
            k.get("use").is_none(),
            "use belongs to the SPIFFE bundle format: {k}"
        );
        kids.insert(kid.to_string());
    }
    // Exactly the authority's JWT authorities.
    let spiffe_fmt: Value = serde_json::from_str(
        &d.admin_ok(&["bundle", "show", "--format", "spiffe"])
            .await
            .expect("admin command"),
    )
    .unwrap();
    let want: BTreeSet<String> = spiffe_fmt["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kids, want,
        "the JWT bundle's kids differ from the authority's JWT authorities"
    );
    // The SVID's kid is there and its key verifies it.
    let kid = pki::decode_jws(&token).header["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let jwk = ks
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("SVID kid in the bundle");
    assert!(pki::verify_with_jwk(&token, jwk));
    // The spiffe crate reads it.
    let client = d.client().await.expect("connect the spiffe client");
    let set = within(
        secs(20),
        "spiffe fetch_jwt_bundles",
        client.fetch_jwt_bundles(),
    )
    .await
    .unwrap_or_else(|e| panic!("spiffe fetch_jwt_bundles: {e}"));
    let b = set
        .get(&td())
        .expect("spiffe client: a JWT bundle for example.org");
    assert!(
        b.find_jwt_authority(&kid).is_some(),
        "spiffe client does not find kid {kid}"
    );
}
