//! Streams: pushes, rotation, hints.

use super::*;

#[tokio::test]
async fn rotation_is_pushed_on_open_stream() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (id, _) = d
        .register_self("conf/rotation", &["--x509-ttl", "20s"])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let mut s = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let m0 = next(&mut s, secs(5), "first message")
        .await
        .unwrap()
        .unwrap();
    let leaf0 = pki::split_der(&svid(&m0, &id).x509_svid).remove(0);
    let (serial0, exp0) = (pki::serial(&leaf0), pki::not_after(&leaf0));
    assert!(
        exp0 - now() <= 21,
        "--x509-ttl 20s not honoured: the leaf expires in {}s",
        exp0 - now()
    );

    // Wait for a new leaf on the same stream, until the first one expires.
    let mut serials = vec![serial0.clone()];
    let mut rotated = None;
    while rotated.is_none() {
        let left = exp0 - now();
        if left <= 0 {
            break;
        }
        let r = tokio::time::timeout(secs(left as u64), s.message()).await;
        match r {
            Err(_) => break,
            Ok(Err(st)) => panic!("the stream failed before rotation: {st:?}"),
            Ok(Ok(None)) => panic!("the stream ended before rotation"),
            Ok(Ok(Some(m))) => {
                let leaf = pki::split_der(&svid(&m, &id).x509_svid).remove(0);
                let sn = pki::serial(&leaf);
                if !serials.contains(&sn) {
                    serials.push(sn.clone());
                }
                if sn != serial0 {
                    rotated = Some((m.clone(), leaf, now()));
                }
            }
        }
    }
    let Some((m1, leaf1, at)) = rotated else {
        // Diagnose: does it rotate late, or never?
        let late = tokio::time::timeout(secs(15), s.message()).await;
        panic!(
            "no rotated SVID was pushed on the open stream before the first leaf expired \
             (notAfter {exp0}); in the 15s after expiry the stream gave: {late:?}"
        );
    };
    assert!(
        at < exp0,
        "rotation arrived at {at}, not before expiry {exp0}"
    );
    let s1 = svid(&m1, &id);
    pki::assert_leaf_profile(&leaf1, &id);
    pki::assert_key_matches(&s1.x509_svid_key, &leaf1);
    assert!(
        pki::not_after(&leaf1) > exp0,
        "the new leaf must outlive the old one"
    );
    pki::verify_chain(&pki::split_der(&s1.x509_svid), &pki::split_der(&s1.bundle));
    assert!(
        serials.len() <= 3,
        "rotation hot loop: {} different leaves within one 20s lifetime",
        serials.len()
    );
}

#[tokio::test]
async fn entry_added_is_pushed_on_open_stream() {
    let (d, a) = Deployment::up("conf/added-a")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&a]).await;
    let mut s = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let m0 = next(&mut s, secs(5), "first message")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&m0), vec![a.clone()]);
    let a_cert = svid(&m0, &a).x509_svid.clone();

    let (b, _) = d
        .register_self("conf/added-b", &[])
        .await
        .expect("register an entry");
    let deadline = Instant::now() + PROPAGATION;
    let m = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = next(&mut s, left, "a message with the added entry")
            .await
            .unwrap_or_else(|st| panic!("stream failed: {st:?}"))
            .expect("stream ended");
        if ids(&m).contains(&b) {
            break m;
        }
    };
    let got: BTreeSet<String> = ids(&m).into_iter().collect();
    assert_eq!(
        got,
        [a.clone(), b.clone()].into(),
        "every message carries the full state"
    );
    assert_eq!(
        svid(&m, &a).x509_svid,
        a_cert,
        "adding an unrelated entry must not re-sign the existing SVID"
    );
    pki::assert_leaf_profile(&pki::split_der(&svid(&m, &b).x509_svid)[0], &b);
}

#[tokio::test]
async fn entry_removed_is_pushed_with_full_state() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (a, _) = d
        .register_self("conf/removed-a", &[])
        .await
        .expect("register an entry");
    let (b, b_entry) = d
        .register_self("conf/removed-b", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&a, &b]).await;
    let mut s = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let m0 = next(&mut s, secs(5), "first message")
        .await
        .unwrap()
        .unwrap();
    let a_cert = svid(&m0, &a).x509_svid.clone();
    d.delete_entry(&b_entry).await.expect("delete an entry");
    let deadline = Instant::now() + PROPAGATION;
    let m = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = next(&mut s, left, "a message without the removed entry")
            .await
            .unwrap_or_else(|st| panic!("the stream failed although an identity remains: {st:?}"))
            .expect("stream ended although an identity remains");
        assert!(!m.svids.is_empty(), "a message with an empty svids list");
        if !ids(&m).contains(&b) {
            break m;
        }
    };
    assert_eq!(ids(&m), vec![a.clone()], "full state after removal");
    assert_eq!(
        svid(&m, &a).x509_svid,
        a_cert,
        "removing B must not re-sign A"
    );
}

#[tokio::test]
async fn entry_deletion_ends_stream_with_permission_denied() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (a, entry) = d
        .register_self("conf/deleted", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&a]).await;
    let mut s = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    next(&mut s, secs(5), "first message")
        .await
        .unwrap()
        .unwrap();
    d.delete_entry(&entry).await.expect("delete an entry");
    let deadline = Instant::now() + PROPAGATION;
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(
            &mut s,
            left,
            "the stream to end after its last identity was removed",
        )
        .await
        {
            Ok(Some(m)) => {
                assert!(
                    !m.svids.is_empty(),
                    "the last identity's removal was sent as an empty svids list; the stream \
                     must end with PermissionDenied instead"
                );
                assert_eq!(ids(&m), vec![a.clone()], "unexpected identities");
            }
            Ok(None) => panic!("the stream ended with OK; it must end with PermissionDenied"),
            Err(st) => break st,
        }
    };
    assert_code::<()>(
        Err(end),
        Code::PermissionDenied,
        "end of the stream after the entry was deleted",
    );
    assert_code(
        first(raw.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::PermissionDenied,
        "a new FetchX509SVID after the only entry was deleted",
    );
}

#[tokio::test]
async fn hints_unique_and_default_first() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (a, _) = d
        .register_self("conf/hint-a", &["--hint", "alpha"])
        .await
        .expect("register an entry");
    let (b, _) = d
        .register_self("conf/hint-b", &["--hint", "beta"])
        .await
        .expect("register an entry");
    let (c, _) = d
        .register_self("conf/hint-c", &["--hint", "alpha"])
        .await
        .expect("register an entry");
    let (e1, _) = d
        .register_self("conf/hint-none-1", &[])
        .await
        .expect("register an entry");
    let (e2, _) = d
        .register_self("conf/hint-none-2", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    // Wait for a response with B, E1, E2 and at least one of the two "alpha" identities.
    let m = poll(PROPAGATION, "all hinted identities to be served", || {
        let mut raw = raw.clone();
        let (a, b, c, e1, e2) = (a.clone(), b.clone(), c.clone(), e1.clone(), e2.clone());
        async move {
            let m = first(raw.fetch_x509svid(req(pb::X509svidRequest {})))
                .await
                .ok()?;
            let got = ids(&m);
            let all = [&b, &e1, &e2].iter().all(|w| got.contains(w));
            (all && (got.contains(&a) || got.contains(&c))).then_some(m)
        }
    })
    .await;
    let got = ids(&m);
    let hints: Vec<&str> = m
        .svids
        .iter()
        .map(|s| s.hint.as_str())
        .filter(|h| !h.is_empty())
        .collect();
    let unique: BTreeSet<&str> = hints.iter().copied().collect();
    assert_eq!(
        hints.len(),
        unique.len(),
        "non-empty hints must be unique: {hints:?} ({got:?})"
    );
    assert_eq!(
        hints.iter().filter(|h| **h == "alpha").count(),
        1,
        "one of the two 'alpha' identities must be served under that hint: {got:?}"
    );
    assert!(
        got.contains(&a) || got.contains(&c),
        "neither alpha identity served: {got:?}"
    );
    for s in &m.svids {
        if s.spiffe_id == b {
            assert_eq!(s.hint, "beta");
        }
    }
    // svids[0] is the default: stable, and the same identity the other APIs default to.
    let default = m.svids[0].spiffe_id.clone();
    for _ in 0..2 {
        let again = first(raw.fetch_x509svid(req(pb::X509svidRequest {})))
            .await
            .unwrap();
        assert_eq!(
            again.svids[0].spiffe_id, default,
            "the default identity is not stable"
        );
    }
    let jwts = fetch_jwt(&mut raw, &["hint-aud"], "").await.unwrap();
    assert!(!jwts.svids.is_empty());
    assert_eq!(
        jwts.svids[0].spiffe_id, default,
        "JWT default differs from the X.509 default"
    );
    let jhints: Vec<&str> = jwts
        .svids
        .iter()
        .map(|s| s.hint.as_str())
        .filter(|h| !h.is_empty())
        .collect();
    let junique: BTreeSet<&str> = jhints.iter().copied().collect();
    assert_eq!(
        jhints.len(),
        junique.len(),
        "JWT hints must be unique too: {jhints:?}"
    );
    let client = d.client().await.expect("connect the spiffe client");
    let x = within(secs(20), "spiffe fetch_x509_svid", client.fetch_x509_svid())
        .await
        .unwrap();
    assert_eq!(x.spiffe_id().to_string(), default);
    let by_hint = within(
        secs(20),
        "spiffe fetch_jwt_svid_by_hint",
        client.fetch_jwt_svid_by_hint(["hint-aud"], None, "beta"),
    )
    .await
    .unwrap_or_else(|e| panic!("fetch_jwt_svid_by_hint(beta): {e}"));
    assert_eq!(by_hint.spiffe_id().to_string(), b);
}

#[tokio::test]
async fn bundle_streams_do_not_repeat_identical_messages() {
    let (d, a) = Deployment::up("conf/bundle-repeat")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&a]).await;
    let mut x = open(
        "FetchX509Bundles",
        raw.fetch_x509_bundles(req(pb::X509BundlesRequest {})),
    )
    .await;
    let mut j = open(
        "FetchJWTBundles",
        raw.fetch_jwt_bundles(req(pb::JwtBundlesRequest {})),
    )
    .await;
    next(&mut x, secs(5), "first X.509 bundles message")
        .await
        .unwrap()
        .unwrap();
    next(&mut j, secs(5), "first JWT bundles message")
        .await
        .unwrap()
        .unwrap();
    // Churn that changes SVIDs but not bundles, and several sync intervals.
    let (b, b_entry) = d
        .register_self("conf/bundle-repeat-b", &[])
        .await
        .expect("register an entry");
    wait_x509(&mut raw, &[&a, &b]).await;
    d.delete_entry(&b_entry).await.expect("delete an entry");
    let mut svids = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    loop {
        let m = next(&mut svids, PROPAGATION, "the removal of B")
            .await
            .unwrap()
            .unwrap();
        if !ids(&m).contains(&b) {
            break;
        }
    }
    tokio::time::sleep(secs(2)).await; // four more sync intervals
    let xr = tokio::time::timeout(Duration::from_millis(200), x.message()).await;
    assert!(
        xr.is_err(),
        "FetchX509Bundles repeated a message although the bundle did not change: {xr:?}"
    );
    let jr = tokio::time::timeout(Duration::from_millis(200), j.message()).await;
    assert!(
        jr.is_err(),
        "FetchJWTBundles repeated a message although the bundle did not change: {jr:?}"
    );
}
