use super::*;
use AuthorityError::*;

fn call(code: Code) -> AuthorityError {
    tonic::Status::new(code, "why").into()
}

fn item(code: Code) -> pb::X509SignResult {
    pb::X509SignResult {
        status: Some(pb::ItemStatus {
            code: code as i32,
            message: "why".into(),
        }),
        svid: (code == Code::Ok).then(|| pb::X509Svid {
            entry_id: "e".into(),
            ..Default::default()
        }),
    }
}

fn one(r: pb::X509SignResult) -> Result<pb::X509Svid, AuthorityError> {
    let resp = pb::BatchSignX509Response { results: vec![r] };
    x509_results(1, resp).unwrap().remove(0)
}

#[test]
fn call_status_table() {
    for code in [Code::Unauthenticated, Code::PermissionDenied] {
        assert!(matches!(call(code), AgentRefused(_)), "{code:?}");
    }
    for code in [
        Code::InvalidArgument,
        Code::FailedPrecondition,
        Code::NotFound,
        Code::AlreadyExists,
        Code::OutOfRange,
        Code::Unimplemented,
    ] {
        assert!(matches!(call(code), RequestRefused(_)), "{code:?}");
    }
    for code in [
        Code::Cancelled,
        Code::Unknown,
        Code::DeadlineExceeded,
        Code::ResourceExhausted,
        Code::Aborted,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
    ] {
        assert!(matches!(call(code), RetryLater(_)), "{code:?}");
    }
    assert!(matches!(call(Code::Ok), InvalidResponse(_)));
}

#[test]
fn entry_status_table() {
    assert!(one(item(Code::Ok)).is_ok());
    for code in [
        Code::PermissionDenied,
        Code::NotFound,
        Code::InvalidArgument,
        Code::FailedPrecondition,
        Code::Unauthenticated,
    ] {
        assert_eq!(one(item(code)), Err(EntryRefused("why".into())), "{code:?}");
    }
    // A transient failure for one entry keeps its SVID until the next round.
    for code in [Code::Internal, Code::Unavailable, Code::ResourceExhausted] {
        assert!(matches!(one(item(code)), Err(RetryLater(_))), "{code:?}");
    }
    // A code this agent does not know is not a refusal.
    let mut odd = item(Code::Internal);
    odd.status.as_mut().unwrap().code = 99;
    assert!(matches!(one(odd), Err(RetryLater(_))));
}

#[test]
fn answers_without_per_entry_results_are_never_success() {
    // An older authority's answer: SVIDs but no results (field 1 is reserved now).
    let old = pb::BatchSignX509Response { results: vec![] };
    assert!(matches!(x509_results(2, old), Err(InvalidResponse(_))));
    let short = pb::BatchSignX509Response {
        results: vec![item(Code::Ok)],
    };
    assert!(matches!(x509_results(2, short), Err(InvalidResponse(_))));
    let no_status = pb::X509SignResult {
        status: None,
        ..item(Code::Ok)
    };
    assert!(matches!(one(no_status), Err(InvalidResponse(_))));
    let no_svid = pb::X509SignResult {
        svid: None,
        ..item(Code::Ok)
    };
    assert!(matches!(one(no_svid), Err(InvalidResponse(_))));
    let old_jwt = pb::SignJwtResponse {
        token: "t".into(),
        expires_at: 1,
        status: None,
    };
    assert!(matches!(jwt_result(old_jwt), Err(InvalidResponse(_))));
}

#[test]
fn jwt_refusal_is_the_entrys() {
    let refused = pb::SignJwtResponse {
        status: Some(pb::ItemStatus {
            code: Code::PermissionDenied as i32,
            message: "entry gone".into(),
        }),
        ..Default::default()
    };
    assert_eq!(jwt_result(refused), Err(EntryRefused("entry gone".into())));
    let ok = pb::SignJwtResponse {
        token: "t".into(),
        expires_at: 1,
        status: Some(pb::ItemStatus::default()),
    };
    assert!(jwt_result(ok).is_ok());
}
