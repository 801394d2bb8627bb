//! The admin CLI against values that try to mislead it: workload-chosen JWT
//! audiences with control characters, `audit` windows larger than its limit,
//! an `--until` of the epoch, `entry update --revision` after someone else's
//! change, and sub-second TTLs.

use crate::harness::*;
use serde_json::Value;
use tessera_proto::workload as pb;
use tonic::Code;

/// A workload asking for a JWT-SVID whose audience would forge a line in
/// `tessera-authority audit` is refused, and nothing of it is recorded.
#[tokio::test]
async fn jwt_audience_with_control_characters_is_refused() {
    let (d, spiffe_id) = Deployment::up("cli/hostile-audience").await;
    let mut raw = d.raw().await;
    wait_x509(&mut raw, &[&spiffe_id]).await;
    for aud in [
        "a\n1700000000\tjwt_svid\tagent=forged",
        "b\u{1b}[2K",
        "c\td",
    ] {
        let msg = pb::JwtsvidRequest {
            audience: vec![aud.to_string()],
            spiffe_id: spiffe_id.clone(),
        };
        let got = within(secs(20), "FetchJWTSVID", raw.fetch_jwtsvid(req(msg))).await;
        let status = got.expect_err(&format!("audience {aud:?} must be refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{aud:?}: {status:?}");
        assert!(status.message().contains("audience"), "{status:?}");
    }
    let audit = d.admin_ok(&["audit", "--output", "json"]).await;
    let audit: Value = serde_json::from_str(&audit).expect("audit JSON");
    let events = audit["events"].as_array().expect("events");
    assert!(
        !events.iter().any(|e| e["kind"] == "jwt_svid"),
        "{events:?}"
    );
}
