use super::*;

fn sels(list: &[&str]) -> Vec<Selector> {
    list.iter().map(|s| Selector::parse(s).unwrap()).collect()
}

#[test]
fn parse_accepts_whole_and_partial_segments() {
    for ok in [
        "spiffe://td/ci/{systemd:scope}",
        "spiffe://td/svc/{systemd:unit}/{unix:user}",
        "spiffe://td/job-{systemd:scope}-x",
        "spiffe://td/{k8s:pod_uid}",
        "spiffe://td/a/{unix:uid}.{unix:gid}",
    ] {
        assert!(SpiffeTemplate::parse(ok).is_ok(), "{ok}");
        assert!(is_template(ok));
    }
    assert!(!is_template("spiffe://td/plain"));
}

#[test]
fn parse_rejects_hostile_templates() {
    let nine = format!("spiffe://td/{}", ["{unix:uid}"; 9].join("/"));
    let cases: &[(&str, TemplateError)] = &[
        ("spiffe://td/a/{", TemplateError::Unclosed),
        ("spiffe://td/a/}{", TemplateError::StrayClose),
        ("spiffe://td/a/}", TemplateError::StrayClose),
        ("spiffe://td/a/{{unix:uid}}", TemplateError::Nested),
        ("spiffe://td/a/{unix:{uid}}", TemplateError::Nested),
        (
            "spiffe://td/a/{unix:path}",
            TemplateError::UnknownKey("unix:path".into()),
        ),
        (
            "spiffe://td/a/{unix:supplementary_gid}",
            TemplateError::UnknownKey("unix:supplementary_gid".into()),
        ),
        ("spiffe://td/a/{}", TemplateError::UnknownKey(String::new())),
        ("spiffe://{unix:uid}/a", TemplateError::NotInPath),
        ("spiffe://td{unix:uid}/a", TemplateError::NotInPath),
        ("{unix:uid}", TemplateError::NotInPath),
        ("spiffe://td/{unix:uid}{unix:gid}", TemplateError::Adjacent),
        (&nine, TemplateError::TooMany),
    ];
    for (t, want) in cases {
        assert_eq!(SpiffeTemplate::parse(t).unwrap_err(), *want, "{t}");
    }
    for invalid in [
        "spiffe://td/a//{unix:uid}",
        "spiffe://td/a/{unix:uid}/",
        "spiffe://td/a/é{unix:uid}",
        "spiffe://TD/{unix:uid}",
        "http://td/{unix:uid}",
        "spiffe://td/../{unix:uid}",
    ] {
        assert!(
            matches!(
                SpiffeTemplate::parse(invalid),
                Err(TemplateError::Invalid(_))
            ),
            "{invalid}"
        );
    }
    let huge = format!("spiffe://td/{}", "{unix:uid}-".repeat(10_000));
    assert_eq!(
        SpiffeTemplate::parse(&huge).unwrap_err(),
        TemplateError::TooMany
    );
}

#[test]
fn expand_fills_values_and_fails_closed() {
    let t = SpiffeTemplate::parse("spiffe://td/svc/{systemd:unit}/{unix:user}").unwrap();
    let ok = sels(&["systemd:unit:web.service", "unix:user:www", "unix:uid:33"]);
    assert_eq!(
        t.expand(&ok).unwrap().as_str(),
        "spiffe://td/svc/web.service/www"
    );

    let long = format!("systemd:unit:{}", "a".repeat(MAX_VALUE_LEN + 1));
    let cases: Vec<(Vec<Selector>, ExpandError)> = vec![
        (
            sels(&["unix:user:www"]),
            ExpandError::Missing("systemd:unit".into()),
        ),
        (
            sels(&[
                "systemd:unit:a.service",
                "systemd:unit:b.service",
                "unix:user:www",
            ]),
            ExpandError::Ambiguous("systemd:unit".into()),
        ),
    ];
    for (s, want) in cases {
        assert_eq!(t.expand(&s).unwrap_err(), want);
    }
    for bad in [
        "systemd:unit:user@1000.service/app.service",
        "systemd:unit:..",
        "systemd:unit:.",
        "systemd:unit:getty@tty1.service",
        "systemd:unit:caf\u{e9}.service",
        "systemd:unit:a b",
        long.as_str(),
    ] {
        let s = sels(&[bad, "unix:user:www"]);
        assert!(
            matches!(t.expand(&s), Err(ExpandError::BadValue { .. })),
            "{bad}"
        );
    }
    // A key that is a prefix of another does not pick up its value.
    let t = SpiffeTemplate::parse("spiffe://td/{unix:gid}").unwrap();
    assert_eq!(
        t.expand(&sels(&["unix:gidx:5"])).unwrap_err(),
        ExpandError::Missing("unix:gid".into())
    );
}

#[test]
fn is_expansion_accepts_only_filled_templates() {
    let t = SpiffeTemplate::parse("spiffe://td/ci/job-{systemd:scope}/{unix:user}").unwrap();
    assert!(t.is_expansion("spiffe://td/ci/job-run-u1.scope/root"));
    for forged in [
        "spiffe://td/ci/job-{systemd:scope}/{unix:user}",
        "spiffe://td/ci/job-../root",
        "spiffe://td/ci/job-a/..",
        "spiffe://td/ci/job-a/.",
        "spiffe://td/ci/job-a/b/c",
        "spiffe://td/cj/job-a/root",
        "spiffe://td/ci/jab-a/root",
        "spiffe://td/ci/job-/root",
        "spiffe://other/ci/job-a/root",
        "spiffe://td/admin",
        "spiffe://td/ci/job-a/root/",
        "spiffe://td/ci/job-a%2f/root",
    ] {
        assert!(!t.is_expansion(forged), "{forged}");
    }
    let long = format!("spiffe://td/ci/job-{}/root", "a".repeat(MAX_VALUE_LEN + 1));
    assert!(!t.is_expansion(&long));
    let t = SpiffeTemplate::parse("spiffe://td/ci/{systemd:scope}").unwrap();
    assert!(!t.is_expansion("spiffe://td/ci/../admin"));
}

#[test]
fn every_expansion_is_accepted_by_is_expansion() {
    let t = SpiffeTemplate::parse("spiffe://td/a-{unix:uid}.{unix:gid}/x").unwrap();
    for (uid, gid) in [("0", "0"), ("1.2", "3"), ("a-b", "c.d"), ("..x", "y..")] {
        let s = sels(&[&format!("unix:uid:{uid}"), &format!("unix:gid:{gid}")]);
        let id = t.expand(&s).unwrap();
        assert!(t.is_expansion(id.as_str()), "{id}");
    }
}
