//! One test per row of /work/shared/CONFORMANCE.md, against a real authority and agent,
//! with the `spiffe` crate's client where it can express the case and raw tonic where not.

mod encodings;
mod header;
mod status;
mod streams;
mod surface;
mod validate;

use crate::harness::*;
use crate::pki;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::str::FromStr as _;
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;
use tonic::{Code, Status};

async fn fetch_jwt(
    raw: &mut Raw,
    audience: &[&str],
    spiffe_id: &str,
) -> Result<pb::JwtsvidResponse, Status> {
    let msg = pb::JwtsvidRequest {
        audience: audience.iter().map(|s| s.to_string()).collect(),
        spiffe_id: spiffe_id.to_string(),
    };
    within(secs(20), "FetchJWTSVID", raw.fetch_jwtsvid(req(msg)))
        .await
        .map(|r| r.into_inner())
}

/// One JWT-SVID for `spiffe_id`; polls while the agent catches up with a new entry.
async fn wait_jwt(raw: &mut Raw, audience: &[&str], spiffe_id: &str) -> String {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let last = match fetch_jwt(raw, audience, spiffe_id).await {
            Ok(r) => {
                assert_eq!(
                    r.svids.len(),
                    1,
                    "FetchJWTSVID for one spiffe_id must answer one SVID: {r:?}"
                );
                assert_eq!(r.svids[0].spiffe_id, spiffe_id);
                return r.svids[0].svid.clone();
            }
            Err(st) => st,
        };
        if Instant::now() > deadline {
            panic!("no JWT-SVID for {spiffe_id} within {PROPAGATION:?}: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn validate(
    raw: &mut Raw,
    audience: &str,
    token: &str,
) -> Result<pb::ValidateJwtsvidResponse, Status> {
    let msg = pb::ValidateJwtsvidRequest {
        audience: audience.to_string(),
        svid: token.to_string(),
    };
    within(secs(20), "ValidateJWTSVID", raw.validate_jwtsvid(req(msg)))
        .await
        .map(|r| r.into_inner())
}

async fn assert_rejected(raw: &mut Raw, audience: &str, token: &str, what: &str) {
    assert_code(
        validate(raw, audience, token).await,
        Code::InvalidArgument,
        &format!("ValidateJWTSVID of {what}"),
    );
}

async fn assert_accepted(
    raw: &mut Raw,
    audience: &str,
    token: &str,
    what: &str,
) -> pb::ValidateJwtsvidResponse {
    validate(raw, audience, token)
        .await
        .unwrap_or_else(|st| panic!("ValidateJWTSVID must accept {what}, got {st:?}"))
}

fn struct_str<'a>(s: &'a prost_types::Struct, key: &str) -> Option<&'a str> {
    match s.fields.get(key)?.kind.as_ref()? {
        prost_types::value::Kind::StringValue(v) => Some(v),
        _ => None,
    }
}

fn struct_strings(s: &prost_types::Struct, key: &str) -> Vec<String> {
    use prost_types::value::Kind;
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => vec![v.clone()],
        Some(Kind::ListValue(l)) => l
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn struct_num(s: &prost_types::Struct, key: &str) -> Option<f64> {
    match s.fields.get(key)?.kind.as_ref()? {
        prost_types::value::Kind::NumberValue(v) => Some(*v),
        _ => None,
    }
}

/// Calls every Workload API method with the given header; ValidateJWTSVID gets a valid
/// token, so that a correct header makes every call succeed.
async fn call_all(
    raw: &mut Raw,
    h: Header,
    token: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let mut out = Vec::new();
    let r = first(raw.fetch_x509svid(request(pb::X509svidRequest {}, h))).await;
    out.push(("FetchX509SVID", r.map(drop)));
    let r = first(raw.fetch_x509_bundles(request(pb::X509BundlesRequest {}, h))).await;
    out.push(("FetchX509Bundles", r.map(drop)));
    let r = first(raw.fetch_jwt_bundles(request(pb::JwtBundlesRequest {}, h))).await;
    out.push(("FetchJWTBundles", r.map(drop)));
    let msg = pb::JwtsvidRequest {
        audience: vec!["header-test".into()],
        spiffe_id: String::new(),
    };
    let r = within(secs(20), "FetchJWTSVID", raw.fetch_jwtsvid(request(msg, h))).await;
    out.push(("FetchJWTSVID", r.map(drop)));
    let msg = pb::ValidateJwtsvidRequest {
        audience: "header-test".into(),
        svid: token.into(),
    };
    let r = within(
        secs(20),
        "ValidateJWTSVID",
        raw.validate_jwtsvid(request(msg, h)),
    )
    .await;
    out.push(("ValidateJWTSVID", r.map(drop)));
    out
}

/// A raw client on a connection made by a child process running `program` as `uid`.
async fn client_via_child(
    d: &Deployment,
    uid: u32,
    program: &str,
    args: &[&str],
) -> (Raw, ChildGuard) {
    let (fd, child) =
        connect_from_child(&d.socket_path(), uid, uid, program, args).unwrap_or_else(|e| {
            panic!(
                "a child as uid {uid} cannot connect to {}: {e} (the Workload API socket must \
                 be reachable by every local user)",
                d.socket_path().display()
            )
        });
    (
        Raw::new(
            channel_from_fd(fd)
                .await
                .expect("HTTP/2 on a pre-connected socket"),
        ),
        child,
    )
}

fn td() -> spiffe::TrustDomain {
    spiffe::TrustDomain::new(TD).unwrap()
}
