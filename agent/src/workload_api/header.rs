//! The Workload API security header, checked before any attestation work.

use tonic::{Request, Status};

const HEADER: &str = "workload.spiffe.io";

/// Exactly one `workload.spiffe.io: true`; anything else is InvalidArgument.
pub fn require_security_header(req: Request<()>) -> Result<Request<()>, Status> {
    let mut values = req.metadata().get_all(HEADER).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if v.as_bytes() == b"true" => Ok(req),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(values: &[&str]) -> Request<()> {
        let mut r = Request::new(());
        for v in values {
            r.metadata_mut().append(HEADER, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn exactly_one_true_value() {
        assert!(require_security_header(req(&["true"])).is_ok());
        for bad in [&[][..], &["false"], &["TRUE"], &["true", "true"], &[""]] {
            let e = require_security_header(req(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }
}
