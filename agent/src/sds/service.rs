//! The SecretDiscoveryService handlers: the caller is attested like a
//! Workload API caller (same pinned process, attestor, rate limit and
//! snapshot), without the `workload.spiffe.io` header Envoy does not send.

use super::names::SdsNames;
use super::secrets::{self, Secrets, SECRET_TYPE};
use super::stream::Session;
use crate::workload_api::{identities, WorkloadApi, WorkloadError};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Envoy asks for a handful of secrets; anything near these is not Envoy.
const MAX_NAMES: usize = 64;
/// The longest SPIFFE ID.
const MAX_NAME_LEN: usize = 2048;
/// `version_info` and `response_nonce` echo ours (a digest, 16 hex digits).
const MAX_ECHO_LEN: usize = 256;
/// A request, Envoy's node description included, is far smaller.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// What the issuance and denial logs call SDS answers.
pub(super) const WHAT: &str = "SDS X509-SVID";

#[derive(Clone)]
pub struct Sds {
    api: WorkloadApi,
    names: Arc<SdsNames>,
}

impl Sds {
    pub fn new(api: WorkloadApi, names: SdsNames) -> Self {
        Sds {
            api,
            names: Arc::new(names),
        }
    }
}

/// Rejects requests no Envoy sends, before any work; names the field.
pub fn check(req: &DiscoveryRequest) -> Result<(), WorkloadError> {
    let bad = |m: String| Err(WorkloadError::InvalidArgument(m));
    if !req.type_url.is_empty() && req.type_url != SECRET_TYPE {
        return bad(format!(
            "type_url: {:?} is not {SECRET_TYPE}",
            truncate(&req.type_url)
        ));
    }
    if req.resource_names.len() > MAX_NAMES {
        return bad(format!(
            "resource_names: {} names, at most {MAX_NAMES}",
            req.resource_names.len()
        ));
    }
    for (field, v) in [
        ("version_info", &req.version_info),
        ("response_nonce", &req.response_nonce),
    ] {
        if v.len() > MAX_ECHO_LEN {
            return bad(format!("{field}: longer than {MAX_ECHO_LEN} bytes"));
        }
    }
    if req.resource_names.iter().any(|n| n.len() > MAX_NAME_LEN) {
        return bad(format!(
            "resource_names: a name is longer than {MAX_NAME_LEN} bytes"
        ));
    }
    Ok(())
}

/// Client-supplied text shortened for logs and errors.
pub(super) fn truncate(s: &str) -> &str {
    const MAX: usize = 256;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The names as they appear in the issuance and denial logs.
pub(super) fn shown(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        let all = names.iter().cloned().collect::<Vec<_>>().join(",");
        truncate(&all).to_string()
    }
}

pub(super) fn response(s: Secrets, nonce: String) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: s.version,
        resources: s.resources,
        type_url: SECRET_TYPE.to_string(),
        nonce,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = Stream_<DeltaDiscoveryResponse>;
    type StreamSecretsStream = Stream_<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "incremental SDS is not supported; use StreamSecrets",
        ))
    }

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let caller = self.api.attest(&req).await?;
        // A caller with no identity at all is denied at once, as on the Workload API.
        let snap = self.api.snapshots.borrow().clone();
        identities(&snap, &caller.selectors).inspect_err(|e| caller.denied(WHAT, "-", e))?;
        let session = Session::new(caller, &self.api, self.names.clone(), req.into_inner());
        Ok(Response::new(Box::pin(session.responses())))
    }

    async fn fetch_secrets(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        check(req.get_ref())?;
        let caller = self.api.attest(&req).await?;
        let asked: BTreeSet<String> = req
            .get_ref()
            .resource_names
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        let snap = self.api.snapshots.borrow().clone();
        let s = secrets::build(&snap, &caller.selectors, &self.names, &asked)
            .inspect_err(|e| caller.denied(WHAT, &shown(&asked), e))?;
        caller.issued_new(WHAT, &[], &s.svids);
        // Unary: no stream to acknowledge on, so no nonce.
        Ok(Response::new(response(s, String::new())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(type_url: &str, names: Vec<String>) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names,
            ..Default::default()
        }
    }

    #[test]
    fn requests_no_envoy_sends_are_refused_naming_the_field() {
        let ok = [
            req(SECRET_TYPE, vec!["default".into()]),
            req("", vec![]),
            req(SECRET_TYPE, vec!["n".repeat(MAX_NAME_LEN); MAX_NAMES]),
        ];
        for r in ok {
            assert!(check(&r).is_ok());
        }
        let cluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
        let bad = [
            (req(cluster, vec![]), "type_url:"),
            (
                req(SECRET_TYPE, vec!["a".into(); MAX_NAMES + 1]),
                "resource_names:",
            ),
            (
                req(SECRET_TYPE, vec!["n".repeat(MAX_NAME_LEN + 1)]),
                "resource_names:",
            ),
            (
                DiscoveryRequest {
                    version_info: "v".repeat(MAX_ECHO_LEN + 1),
                    ..req(SECRET_TYPE, vec![])
                },
                "version_info:",
            ),
            (
                DiscoveryRequest {
                    response_nonce: "n".repeat(MAX_ECHO_LEN + 1),
                    ..req(SECRET_TYPE, vec![])
                },
                "response_nonce:",
            ),
        ];
        for (r, field) in bad {
            let e = check(&r).unwrap_err();
            assert!(
                matches!(&e, WorkloadError::InvalidArgument(m) if m.starts_with(field)),
                "{e}"
            );
        }
    }

    #[test]
    fn client_text_is_shortened() {
        assert_eq!(truncate("short"), "short");
        assert_eq!(truncate(&"é".repeat(1000)).chars().count(), 256);
        let many: BTreeSet<String> = (0..100).map(|i| format!("name-{i:03}")).collect();
        assert!(shown(&many).len() <= 256);
        assert_eq!(shown(&BTreeSet::new()), "-");
    }
}
