use super::*;
use tonic::Code;

fn entry(spiffe_id: &str) -> Entry {
    crate::datastore::test_records::entry("e1", spiffe_id, "spiffe://td/agent")
}

fn authority() -> SpiffeId {
    "spiffe://td/tessera/authority".parse().unwrap()
}

fn code(r: Result<SignedId, ApiError>) -> Code {
    tonic::Status::from(r.unwrap_err()).code()
}

#[test]
fn templated_entry_signs_only_valid_expansions() {
    let e = entry("spiffe://td/ci/{systemd:scope}");
    let ok = signed_id(&authority(), &e, "spiffe://td/ci/run-u1.scope").unwrap();
    assert_eq!(ok.id.as_str(), "spiffe://td/ci/run-u1.scope");
    assert_eq!(
        ok.template.as_deref(),
        Some("spiffe://td/ci/{systemd:scope}")
    );
    for forged in [
        "spiffe://td/ci/../admin",
        "spiffe://td/ci/..",
        "spiffe://td/admin",
        "spiffe://td/cx/run-u1.scope",
        "spiffe://td/ci/a/b",
        "spiffe://td/ci/{systemd:scope}",
        "spiffe://other/ci/run-u1.scope",
    ] {
        assert_eq!(
            code(signed_id(&authority(), &e, forged)),
            Code::PermissionDenied,
            "{forged}"
        );
    }
    assert_eq!(code(signed_id(&authority(), &e, "")), Code::InvalidArgument);
}

#[test]
fn expansion_into_a_reserved_name_is_refused() {
    let e = entry("spiffe://td/{unix:user}/authority");
    let r = signed_id(&authority(), &e, "spiffe://td/tessera/authority");
    assert_eq!(code(r), Code::PermissionDenied);
    assert!(signed_id(&authority(), &e, "spiffe://td/www/authority").is_ok());
}

#[test]
fn plain_entry_signs_only_its_own_id() {
    let e = entry("spiffe://td/web");
    assert_eq!(
        signed_id(&authority(), &e, "").unwrap().id.as_str(),
        "spiffe://td/web"
    );
    assert!(signed_id(&authority(), &e, "").unwrap().template.is_none());
    assert_eq!(
        signed_id(&authority(), &e, "spiffe://td/web")
            .unwrap()
            .id
            .as_str(),
        "spiffe://td/web"
    );
    assert_eq!(
        code(signed_id(&authority(), &e, "spiffe://td/admin")),
        Code::PermissionDenied
    );
}

#[test]
fn distinct_expansions_are_capped_per_agent_and_entry_per_window() {
    let l = ExpansionLimit::default();
    for i in 0..MAX_EXPANSIONS {
        l.admit("a", "e", &format!("id{i}"), 100).unwrap();
    }
    // Asking again for one already signed is not a new expansion.
    l.admit("a", "e", "id0", 101).unwrap();
    let err = l.admit("a", "e", "new", 102).unwrap_err();
    assert_eq!(tonic::Status::from(err).code(), Code::ResourceExhausted);
    // Other agents and other entries have their own budget.
    l.admit("b", "e", "new", 102).unwrap();
    l.admit("a", "f", "new", 102).unwrap();
    // The next window starts afresh.
    l.admit("a", "e", "new", 100 + WINDOW_SECS).unwrap();
}
