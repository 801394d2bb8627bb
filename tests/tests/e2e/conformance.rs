//! One test per row of /work/shared/CONFORMANCE.md, against a real authority and agent,
//! with the `spiffe` crate's client where it can express the case and raw tonic where not.

use crate::harness::*;
use crate::pki;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::str::FromStr as _;
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;
use tonic::{Code, Status};

// ---------------------------------------------------------------------------------------
// helpers

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

// ---------------------------------------------------------------------------------------
// Wire: security header

#[tokio::test]
async fn missing_security_header_is_invalid_argument() {
    let (d, id) = Deployment::up("conf/missing-header")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let token = wait_jwt(&mut raw, &["header-test"], &id).await;
    // Control: with the header every call succeeds, so what fails below fails for the header.
    for (m, r) in call_all(&mut raw, Header::Ok, &token).await {
        r.unwrap_or_else(|st| panic!("{m} with a correct security header must succeed: {st:?}"));
    }
    for (m, r) in call_all(&mut raw, Header::Missing, &token).await {
        assert_code(
            r,
            Code::InvalidArgument,
            &format!("{m} without the security header"),
        );
    }
    // "Decided before any attestation work": a caller that has already exited would get
    // Unavailable from attestation; without the header it must still get InvalidArgument.
    let (mut dead, mut child) = client_via_child(&d, 0, "true", &[]).await;
    child.0.wait().unwrap();
    for (m, r) in call_all(&mut dead, Header::Missing, &token).await {
        assert_code(
            r,
            Code::InvalidArgument,
            &format!("{m} without the header from a caller that has exited"),
        );
    }
}

#[tokio::test]
async fn wrong_security_header_value_is_invalid_argument() {
    let (d, id) = Deployment::up("conf/wrong-header")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let token = wait_jwt(&mut raw, &["header-test"], &id).await;
    for (m, r) in call_all(&mut raw, Header::Ok, &token).await {
        r.unwrap_or_else(|st| panic!("{m} with a correct security header must succeed: {st:?}"));
    }
    for h in [
        Header::Value("false"),
        Header::Value(""),
        Header::Value("1"),
        Header::Twice,
    ] {
        for (m, r) in call_all(&mut raw, h, &token).await {
            assert_code(
                r,
                Code::InvalidArgument,
                &format!("{m} with security header {h:?}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Status codes

#[tokio::test]
async fn unregistered_caller_gets_permission_denied() {
    let (d, id) = Deployment::up("conf/unregistered")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    // The agent is synced: an unregistered caller now gets a definite PermissionDenied.
    wait_x509(&mut raw, &[&id]).await;

    // The connection is made by `sleep` running as nobody (uid 65534), which no entry
    // matches; it stays alive while we talk over its connection.
    let (mut nobody, _child) = client_via_child(&d, NOBODY, "sleep", &["60"]).await;
    assert_code(
        first(nobody.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::PermissionDenied,
        "FetchX509SVID by an unregistered caller",
    );
    assert_code(
        first(nobody.fetch_x509_bundles(req(pb::X509BundlesRequest {}))).await,
        Code::PermissionDenied,
        "FetchX509Bundles by an unregistered caller",
    );
    assert_code(
        first(nobody.fetch_jwt_bundles(req(pb::JwtBundlesRequest {}))).await,
        Code::PermissionDenied,
        "FetchJWTBundles by an unregistered caller",
    );
    assert_code(
        fetch_jwt(&mut nobody, &["some-audience"], "").await,
        Code::PermissionDenied,
        "FetchJWTSVID by an unregistered caller",
    );

    // The same through the agent's own CLI, run as nobody.
    let out = run_cmd(
        &bin("tessera-agent").expect("binary built"),
        &["api", "fetch", "x509", "--socket", &d.socket_uri()],
        Some(NOBODY),
        &[],
    )
    .await
    .expect("run a command");
    let line = out.assert_one_line_error("`tessera-agent api fetch x509` as uid 65534");
    let lower = line.to_lowercase();
    assert!(
        lower.contains("permission") || lower.contains("no identity"),
        "the CLI error should say the caller has no identity / permission denied: {line}"
    );
}

#[tokio::test]
async fn exited_caller_gets_unavailable() {
    let (d, id) = Deployment::up("conf/exited-caller")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;

    // Control: a connection made by a live root child (which the entry matches) is served,
    // so the fd hand-over itself is not what fails below.
    let (mut live, _sleeper) = client_via_child(&d, 0, "sleep", &["60"]).await;
    let resp = first(live.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap_or_else(|st| panic!("a live root caller must get its SVID: {st:?}"));
    assert!(ids(&resp).contains(&id));

    // A root process connects and exits; its connection is then used by this process.
    // The agent can no longer attest the peer, and must not serve the peer's identity.
    let (mut dead, mut child) = client_via_child(&d, 0, "true", &[]).await;
    let st = child.0.wait().unwrap();
    assert!(st.success());
    assert_code(
        first(dead.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::Unavailable,
        "FetchX509SVID on a connection whose caller has exited",
    );
    assert_code(
        fetch_jwt(&mut dead, &["aud"], "").await,
        Code::Unavailable,
        "FetchJWTSVID on a connection whose caller has exited",
    );
}

#[tokio::test]
async fn unsynced_agent_answers_unavailable() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (id, _) = d
        .register_self("conf/unsynced", &[])
        .await
        .expect("register an entry");
    // The agent starts while the authority is down: it cannot attest nor sync.
    d.stop_authority().await.expect("stop the authority");
    d.spawn_agent().expect("start the agent");
    let deadline = Instant::now() + secs(15);
    loop {
        if let Some(st) = d.agent_exited() {
            panic!(
                "tessera-agent exited ({st}) because the authority was unreachable at start; \
                 it should keep retrying and answer Unavailable meanwhile"
            );
        }
        if std::os::unix::net::UnixStream::connect(d.socket_path()).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "tessera-agent does not serve the Workload API while it cannot reach the \
                 authority (no socket after 15s); callers get connection errors instead of \
                 Unavailable"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut problems = Vec::new();
    let mut raw = d.raw().await.expect("connect to the agent");
    let r = tokio::time::timeout(
        secs(5),
        first(raw.fetch_x509svid(req(pb::X509svidRequest {}))),
    )
    .await;
    check_prompt_code(
        &mut problems,
        "FetchX509SVID before the agent has synced",
        Code::Unavailable,
        r,
    );
    let r = tokio::time::timeout(secs(5), fetch_jwt(&mut raw, &["aud"], "")).await;
    check_prompt_code(
        &mut problems,
        "FetchJWTSVID before the agent has synced",
        Code::Unavailable,
        r,
    );
    // The authority comes up: the agent attests with its still-unused token and serves
    // (allowing for its retry backoff).
    d.start_authority().await.expect("start the authority");
    let up = Instant::now();
    let mut recovered = false;
    while up.elapsed() < secs(45) {
        let mut r = d.raw().await.expect("connect to the agent");
        let res = tokio::time::timeout(
            secs(3),
            first(r.fetch_x509svid(req(pb::X509svidRequest {}))),
        )
        .await;
        if let Ok(Ok(m)) = res {
            if ids(&m).contains(&id) {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !recovered {
        problems.push(
            "the agent did not attest and serve within 45s of the authority coming up".into(),
        );
    }
    assert!(
        problems.is_empty(),
        "an agent that has not synced yet:\n  {}",
        problems.join("\n  ")
    );
}

/// Records a problem unless `r` is the server-sent status `code`, received in time.
fn check_prompt_code<T: std::fmt::Debug>(
    problems: &mut Vec<String>,
    what: &str,
    code: Code,
    r: Result<Result<T, Status>, tokio::time::error::Elapsed>,
) {
    match r {
        Err(_) => problems.push(format!(
            "{what}: no answer within 5s (the call hangs; expected {code:?} at once)"
        )),
        Ok(Ok(v)) => problems.push(format!("{what}: succeeded ({v:?}); expected {code:?}")),
        Ok(Err(st)) if st.code() != code || std::error::Error::source(&st).is_some() => problems
            .push(format!(
                "{what}: got {st:?}; expected {code:?} from the agent"
            )),
        Ok(Err(_)) => {}
    }
}

#[tokio::test]
async fn jwt_fetch_empty_audience_is_invalid_argument() {
    let (d, id) = Deployment::up("conf/jwt-empty-aud")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_jwt(&mut raw, &["control"], &id).await;
    assert_code(
        fetch_jwt(&mut raw, &[], "").await,
        Code::InvalidArgument,
        "FetchJWTSVID with no audience",
    );
    assert_code(
        fetch_jwt(&mut raw, &[], &id).await,
        Code::InvalidArgument,
        "FetchJWTSVID with no audience for an entitled spiffe_id",
    );
    assert_code(
        fetch_jwt(&mut raw, &[""], &id).await,
        Code::InvalidArgument,
        "FetchJWTSVID with an empty audience string",
    );
    // And through the spiffe crate (it passes the empty list through unchanged).
    let client = d.client().await.expect("connect the spiffe client");
    let err = within(
        secs(20),
        "spiffe fetch_jwt_svid",
        client.fetch_jwt_svid(Vec::<String>::new(), None),
    )
    .await
    .expect_err("an empty audience must be refused");
    assert!(
        err.is_invalid_argument(),
        "spiffe client: expected InvalidArgument, got {err:?}"
    );
}

#[tokio::test]
async fn jwt_fetch_malformed_spiffe_id_is_invalid_argument() {
    let (d, id) = Deployment::up("conf/jwt-malformed-id")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_jwt(&mut raw, &["control"], &id).await;
    for bad in [
        "not-a-spiffe-id",
        "http://example.org/conf/jwt-malformed-id",
        "spiffe:///conf/jwt-malformed-id",
        "spiffe://example.org/conf//jwt-malformed-id",
        "spiffe://example.org/conf/jwt-malformed-id?x=1",
        "spiffe://EXAMPLE.org/conf/jwt-malformed-id",
    ] {
        assert_code(
            fetch_jwt(&mut raw, &["aud"], bad).await,
            Code::InvalidArgument,
            &format!("FetchJWTSVID for malformed spiffe_id {bad:?}"),
        );
    }
}

#[tokio::test]
async fn jwt_fetch_unentitled_spiffe_id_is_permission_denied() {
    let (d, id) = Deployment::up("conf/jwt-unentitled")
        .await
        .expect("start a deployment");
    // A real entry, but for another uid: it exists, just not for this caller.
    let other = format!("spiffe://{TD}/conf/someone-else");
    d.create_entry(&other, &["unix:uid:65534"], &[])
        .await
        .expect("create an entry");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_jwt(&mut raw, &["control"], &id).await;
    for unentitled in [
        other.as_str(),
        "spiffe://example.org/conf/nobody-has-this",
        "spiffe://other.org/conf/jwt-unentitled",
    ] {
        assert_code(
            fetch_jwt(&mut raw, &["aud"], unentitled).await,
            Code::PermissionDenied,
            &format!("FetchJWTSVID for {unentitled}, which the caller is not entitled to"),
        );
    }
}

// ---------------------------------------------------------------------------------------
// ValidateJWTSVID

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

// ---------------------------------------------------------------------------------------
// Encodings

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

// ---------------------------------------------------------------------------------------
// Streams

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

// ---------------------------------------------------------------------------------------
// Wire: methods, paths, side services, endpoint address

#[tokio::test]
async fn wit_methods_unimplemented() {
    let (d, id) = Deployment::up("conf/wit")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    assert_code(
        first(raw.fetch_witsvid(req(pb::WitsvidRequest {
            spiffe_id: String::new(),
        })))
        .await,
        Code::Unimplemented,
        "FetchWITSVID",
    );
    assert_code(
        first(raw.fetch_wit_bundles(req(pb::WitBundlesRequest {}))).await,
        Code::Unimplemented,
        "FetchWITBundles",
    );
}

#[tokio::test]
async fn method_paths_have_no_proto_package() {
    let (d, id) = Deployment::up("conf/paths")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let ch = d.channel().await.expect("connect to the agent");
    let mut grpc = tonic::client::Grpc::new(ch);
    let call = |path: &'static str| {
        let mut grpc = grpc.clone();
        async move {
            within(secs(10), "channel ready", grpc.ready())
                .await
                .unwrap();
            let codec =
                tonic_prost::ProstCodec::<pb::X509svidRequest, pb::X509svidResponse>::default();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
            first(grpc.server_streaming(req(pb::X509svidRequest {}), path, codec)).await
        }
    };
    let m = call("/SpiffeWorkloadAPI/FetchX509SVID")
        .await
        .unwrap_or_else(|st| panic!("/SpiffeWorkloadAPI/FetchX509SVID: {st:?}"));
    assert!(ids(&m).contains(&id));
    assert_code(
        call("/spiffe.workload.SpiffeWorkloadAPI/FetchX509SVID").await,
        Code::Unimplemented,
        "a packaged method path",
    );
    // Unary methods are unary on the wire.
    within(secs(10), "ready", grpc.ready()).await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::JwtsvidRequest, pb::JwtsvidResponse>::default();
    let r = within(
        secs(20),
        "unary FetchJWTSVID",
        grpc.unary(
            req(pb::JwtsvidRequest {
                audience: vec!["p".into()],
                spiffe_id: id.clone(),
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchJWTSVID"),
            codec,
        ),
    )
    .await
    .unwrap_or_else(|st| panic!("unary /SpiffeWorkloadAPI/FetchJWTSVID: {st:?}"));
    assert_eq!(r.into_inner().svids[0].spiffe_id, id);
}

#[tokio::test]
async fn health_and_reflection_served_on_socket() {
    let (mut d, id) = Deployment::up("conf/health")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut health = HealthClient::new(d.channel().await.expect("connect to the agent"));
    let r = within(
        secs(10),
        "grpc.health.v1.Health/Check",
        health.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap_or_else(|st| panic!("grpc.health.v1.Health/Check on the agent socket: {st:?}"))
    .into_inner();
    assert_eq!(
        r.status,
        ServingStatus::Serving as i32,
        "overall health: {r:?}"
    );

    // Reflection (v1, else v1alpha) lists the Workload API without a package.
    let services = reflection_services(&d).await;
    assert!(
        services.contains("SpiffeWorkloadAPI"),
        "reflection services: {services:?}"
    );
    // The authority's APIs are not served here (their descriptors may be compiled in).
    use tessera_proto::authority as apb;
    let mut admin =
        apb::admin_client::AdminClient::new(d.channel().await.expect("connect to the agent"));
    assert_code(
        within(
            secs(10),
            "Admin/ListEntries",
            admin.list_entries(apb::ListEntriesRequest::default()),
        )
        .await,
        Code::Unimplemented,
        "the authority's Admin API called on the agent's Workload API socket",
    );
    let mut node =
        apb::node_client::NodeClient::new(d.channel().await.expect("connect to the agent"));
    assert_code(
        within(
            secs(10),
            "Node/GetBundle",
            node.get_bundle(apb::GetBundleRequest {}),
        )
        .await,
        Code::Unimplemented,
        "the authority's Node API called on the agent's Workload API socket",
    );
    let served = [
        "SpiffeWorkloadAPI",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let unserved: Vec<&String> = services
        .iter()
        .filter(|s| !served.contains(&s.as_str()))
        .collect();

    // The agent CLI's healthcheck agrees, both ways of finding the agent.
    let cfg = d.agent_config().display().to_string();
    let out = d
        .agent_cli(&["healthcheck", "--config", &cfg])
        .await
        .expect("run tessera-agent");
    assert!(
        out.success(),
        "healthcheck --config on a healthy agent: {out:?}"
    );
    let out = d
        .agent_cli(&["healthcheck", "--socket", &d.socket_uri()])
        .await
        .expect("run tessera-agent");
    assert!(
        out.success(),
        "healthcheck --socket on a healthy agent: {out:?}"
    );
    d.stop_agent_cleanly()
        .await
        .expect("stop the agent cleanly");
    let out = d
        .agent_cli(&["healthcheck", "--socket", &d.socket_uri()])
        .await
        .expect("run tessera-agent");
    out.assert_one_line_error("healthcheck with the agent stopped");
    assert!(
        unserved.is_empty(),
        "reflection on the agent socket advertises services that the socket does not serve \
         (calling them gives Unimplemented): {unserved:?}"
    );
}

async fn reflection_services(d: &Deployment) -> BTreeSet<String> {
    use tonic_reflection::pb::v1 as r1;
    use tonic_reflection::pb::v1alpha as r0;
    let mut c = r1::server_reflection_client::ServerReflectionClient::new(
        d.channel().await.expect("connect to the agent"),
    );
    let rq = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let v1 = first(c.server_reflection_info(tokio_stream::iter(vec![rq]))).await;
    match v1 {
        Ok(m) => match m.message_response {
            Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                return l.service.into_iter().map(|s| s.name).collect();
            }
            other => panic!("reflection v1 ListServices answered {other:?}"),
        },
        Err(st) if st.code() == Code::Unimplemented => {}
        Err(st) => panic!("reflection v1: {st:?}"),
    }
    let mut c = r0::server_reflection_client::ServerReflectionClient::new(
        d.channel().await.expect("connect to the agent"),
    );
    let rq = r0::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r0::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    match first(c.server_reflection_info(tokio_stream::iter(vec![rq]))).await {
        Ok(m) => match m.message_response {
            Some(r0::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("reflection v1alpha ListServices answered {other:?}"),
        },
        Err(st) => panic!("no gRPC reflection (v1 or v1alpha) on the agent socket: {st:?}"),
    }
}

#[tokio::test]
async fn endpoint_socket_env_accepts_only_unix_and_tcp_uris() {
    let (d, id) = Deployment::up("conf/endpoint-env")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let agent = bin("tessera-agent").expect("binary built");
    let path = d.socket_path().display().to_string();
    let good = format!("unix://{path}");
    let out = run_cmd(
        &agent,
        &["api", "fetch", "x509"],
        None,
        &[("SPIFFE_ENDPOINT_SOCKET", &good)],
    )
    .await
    .expect("run a command");
    assert!(
        out.success(),
        "api fetch x509 with SPIFFE_ENDPOINT_SOCKET={good}: {out:?}"
    );
    assert!(
        out.stdout.contains(&id),
        "the fetched SVID's ID is printed: {}",
        out.stdout
    );
    // Each of these points at the same live socket, so only strict parsing refuses them.
    let mut accepted = Vec::new();
    for bad in [
        path.clone(),
        format!("file://{path}"),
        format!("unix://localhost{path}"),
        format!("unix://{path}?x=1"),
        "tcp://localhost:1".to_string(),
    ] {
        let out = run_cmd(
            &agent,
            &["api", "fetch", "x509"],
            None,
            &[("SPIFFE_ENDPOINT_SOCKET", &bad)],
        )
        .await
        .expect("run a command");
        if let Err(e) = out.check_one_line_error() {
            accepted.push(format!("SPIFFE_ENDPOINT_SOCKET={bad:?}: {e}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "only unix:///absolute/path and tcp://<ip>:<port> may be accepted:\n  {}",
        accepted.join("\n  ")
    );
}

/// "A connect/close loop must not grow memory or file descriptors".
#[tokio::test]
async fn connect_close_loop_does_not_leak_fds() {
    let (d, id) = Deployment::up("conf/fd-leak")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    drop(raw);
    let pid = d.agent_pid().expect("agent running");
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| {
                    v.trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0)
                })
            })
            .unwrap_or(0)
    };
    // Warm up (lazily created state, thread pools, caches).
    for _ in 0..20 {
        let mut r = d.raw().await.expect("connect to the agent");
        first(r.fetch_x509svid(req(pb::X509svidRequest {})))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fd0, rss0) = (fds(), rss());
    for i in 0..150 {
        let mut r = d.raw().await.expect("connect to the agent");
        let mut s = open(
            "FetchX509SVID",
            r.fetch_x509svid(req(pb::X509svidRequest {})),
        )
        .await;
        next(&mut s, secs(10), "first message")
            .await
            .unwrap()
            .unwrap();
        if i % 2 == 0 {
            let _b = first(r.fetch_jwt_bundles(req(pb::JwtBundlesRequest {})))
                .await
                .unwrap();
        }
        drop(s);
        drop(r);
    }
    let settled = poll(
        secs(15),
        "the agent's fd count to return to its baseline",
        || async {
            let n = fds();
            (n <= fd0 + 4).then_some(n)
        },
    )
    .await;
    let rss1 = rss();
    assert!(settled <= fd0 + 4, "fds {fd0} -> {settled}");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "agent RSS grew from {rss0} kB to {rss1} kB over 150 connect/stream/close cycles"
    );
}
