//! Wire: the security header.

use super::*;

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
