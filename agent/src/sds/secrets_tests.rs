//! The SDS naming rules on a snapshot with real certificates.

use super::*;
use crate::cache::entry::Entry;
use crate::cache::State;

fn cert(cn: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.self_signed(&key).unwrap().der().to_vec()
}

fn svid(entry: &str, id: &str, sel: &str) -> Arc<CachedSvid> {
    Arc::new(CachedSvid {
        entry: Entry::test(entry, id, vec![Selector::parse(sel).unwrap()], ""),
        spiffe_id: id.parse().unwrap(),
        template: None,
        chain: [cert(id), cert("intermediate")].concat(),
        key: vec![7; 16].into(),
        not_before: 0,
        not_after: i64::MAX,
        rotate_at: i64::MAX,
        monotonic: None,
    })
}

fn snap(svids: Vec<Arc<CachedSvid>>) -> Snapshot {
    Snapshot {
        state: State::Ready,
        svids,
        templates: Vec::new(),
        bundle: Some(Arc::new(Bundle {
            trust_domain: "spiffe://td".into(),
            x509_der: cert("root"),
            jwks_json: b"{\"keys\":[]}".to_vec(),
        })),
        index: Default::default(),
    }
}

fn uid0() -> Vec<Selector> {
    vec![Selector::parse("unix:uid:0").unwrap()]
}

fn ask(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn decode(s: &Secrets) -> Vec<Secret> {
    s.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, SECRET_TYPE);
            Secret::decode(a.value.as_slice()).unwrap()
        })
        .collect()
}

fn names_of(s: &Secrets) -> Vec<String> {
    decode(s).into_iter().map(|s| s.name).collect()
}

fn inline_of(d: &Option<DataSource>) -> String {
    match d.as_ref().and_then(|d| d.specifier.clone()) {
        Some(Specifier::InlineBytes(b)) => String::from_utf8(b).unwrap(),
        other => panic!("not inline bytes: {other:?}"),
    }
}

fn two() -> Snapshot {
    snap(vec![
        svid("1", "spiffe://td/a", "unix:uid:0"),
        svid("2", "spiffe://td/b", "unix:uid:0"),
        svid("3", "spiffe://td/a", "unix:uid:0"),
        svid("4", "spiffe://td/other", "unix:uid:1000"),
    ])
}

#[test]
fn default_names_map_to_svid_and_bundles() {
    let snap = two();
    let s = build(
        &snap,
        &uid0(),
        &SdsNames::default(),
        &ask(&["default", "ROOTCA", "ALL"]),
    )
    .unwrap();
    let secrets = decode(&s);
    assert_eq!(names_of(&s), vec!["default", "ALL", "ROOTCA"]);
    let Some(secret::Type::TlsCertificate(tls)) = &secrets[0].r#type else {
        panic!("default is not a tls_certificate: {:?}", secrets[0]);
    };
    let chain = inline_of(&tls.certificate_chain);
    assert_eq!(chain.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    let first = x509::certs_from_pem(chain.as_bytes()).unwrap();
    assert_eq!(first[0].as_ref(), &cert_of(&snap.svids[0])[..]);
    assert!(inline_of(&tls.private_key).starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(s.svids.len(), 1);
    assert_eq!(s.svids[0].entry.id, "1", "default is the first entry");
    for vc in &secrets[1..] {
        let Some(secret::Type::ValidationContext(v)) = &vc.r#type else {
            panic!("{} is not a validation_context", vc.name);
        };
        let roots = x509::certs_from_pem(inline_of(&v.trusted_ca).as_bytes()).unwrap();
        assert_eq!(roots.len(), 1);
    }
}

fn cert_of(s: &CachedSvid) -> Vec<u8> {
    x509::split_der_chain(&s.chain).unwrap()[0].to_vec()
}

#[test]
fn spiffe_ids_and_trust_domain_ids() {
    let s = build(
        &two(),
        &uid0(),
        &SdsNames::default(),
        &ask(&["spiffe://td/b", "spiffe://td"]),
    )
    .unwrap();
    assert_eq!(names_of(&s), vec!["spiffe://td/b", "spiffe://td"]);
    assert_eq!(s.svids[0].entry.id, "2");
}

#[test]
fn empty_names_send_everything_once() {
    let s = build(&two(), &uid0(), &SdsNames::default(), &ask(&[])).unwrap();
    assert_eq!(
        names_of(&s),
        vec!["spiffe://td/a", "spiffe://td/b", "spiffe://td"]
    );
}

#[test]
fn names_the_caller_has_nothing_for_fail_the_answer() {
    for bad in ["spiffe://td/other", "spiffe://elsewhere", "nonsense"] {
        let e = build(
            &two(),
            &uid0(),
            &SdsNames::default(),
            &ask(&["default", bad]),
        )
        .unwrap_err();
        assert!(
            matches!(&e, WorkloadError::NotEntitled(m) if m.contains(bad)),
            "{bad}: {e}"
        );
    }
}

#[test]
fn caller_without_identity_is_denied_even_for_bundles() {
    let sel = vec![Selector::parse("unix:uid:4242").unwrap()];
    let e = build(&two(), &sel, &SdsNames::default(), &ask(&["ROOTCA"])).unwrap_err();
    assert!(matches!(e, WorkloadError::NoIdentity), "{e}");
}

#[test]
fn configured_names_are_used() {
    let names = SdsNames {
        default_svid: "mine".into(),
        default_bundle: "roots".into(),
        all_bundles: "every".into(),
    };
    let s = build(&two(), &uid0(), &names, &ask(&["mine", "roots"])).unwrap();
    assert_eq!(names_of(&s), vec!["mine", "roots"]);
    let e = build(&two(), &uid0(), &names, &ask(&["default"])).unwrap_err();
    assert!(matches!(e, WorkloadError::NotEntitled(_)), "{e}");
}

#[test]
fn version_follows_content_only() {
    let names = SdsNames::default();
    let mut s = two();
    let a = build(&s, &uid0(), &names, &ask(&["spiffe://td/b"])).unwrap();
    let same = build(&s, &uid0(), &names, &ask(&["spiffe://td/b"])).unwrap();
    assert_eq!(a.version, same.version);
    // Another SVID of the caller, one not asked for, changes: the version does not.
    s.svids[0] = svid("1", "spiffe://td/a", "unix:uid:0");
    let other = build(&s, &uid0(), &names, &ask(&["spiffe://td/b"])).unwrap();
    assert_eq!(a.version, other.version);
    // The asked-for one rotates: it does.
    s.svids[1] = svid("2", "spiffe://td/b", "unix:uid:0");
    let rotated = build(&s, &uid0(), &names, &ask(&["spiffe://td/b"])).unwrap();
    assert_ne!(a.version, rotated.version);
}

/// A `?snapshot` in a log line must not hand out the workloads' private keys.
#[test]
fn debug_never_shows_a_private_key() {
    let key = rcgen::KeyPair::generate().unwrap().serialize_der();
    let mut s = Arc::into_inner(svid("e1", "spiffe://td/a", "unix:uid:0")).unwrap();
    s.key = key.clone().into();
    let shown = format!("{:?}", snap(vec![Arc::new(s)]));
    assert!(shown.contains("<redacted"), "{shown}");
    // Derived Debug of bytes prints them as a decimal list.
    let as_list = format!("{:?}", &key[..8]);
    assert!(!shown.contains(as_list.trim_end_matches(']')), "{shown}");
}

/// The encoded resources of an answer hold the PEM private key.
#[test]
fn debug_of_an_answer_never_shows_its_private_key() {
    let s = build(&two(), &uid0(), &SdsNames::default(), &ask(&["default"])).unwrap();
    let shown = format!("{s:?}");
    let pem_label = format!("{:?}", b"PRIVATE KEY");
    assert!(
        !shown.contains(pem_label.trim_matches(|c| c == '[' || c == ']')),
        "{shown}"
    );
    assert!(shown.contains(&s.version), "{shown}");
}
