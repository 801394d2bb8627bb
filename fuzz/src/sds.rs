//! An Envoy SDS `DiscoveryRequest` as a local client streams it: protobuf
//! decode, the agent's request check, then the stream's xDS bookkeeping
//! (first request, the answer, the client's ACK/NACK of it) and the
//! resource-name classification.

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use tessera_agent::sds::{check, Received, SdsNames, Xds};

pub fn fuzz_one(data: &[u8]) {
    let Ok(req) = DiscoveryRequest::decode(data) else {
        return;
    };
    if check(&req).is_err() {
        return;
    }
    let received = Received {
        names: &req.resource_names,
        version_info: &req.version_info,
        response_nonce: &req.response_nonce,
        error: req.error_detail.as_ref().map(|e| e.message.as_str()),
    };
    let mut xds = Xds::default();
    let _ = xds.on_request(received);
    xds.sent(req.version_info.clone(), req.response_nonce.clone());
    let _ = xds.on_request(received);
    let _ = xds.on_request(received);
    let _ = xds.wants_push(&req.version_info);
    let names = SdsNames::default();
    for n in &req.resource_names {
        let _ = names.classify(n);
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    use envoy_types::pb::google::rpc::Status;
    let secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    let first = DiscoveryRequest {
        type_url: secret.into(),
        resource_names: vec!["spiffe://example.org/fuzz".into(), "ROOTCA".into()],
        ..Default::default()
    };
    let nack = DiscoveryRequest {
        version_info: "0123456789abcdef".into(),
        response_nonce: "1".into(),
        error_detail: Some(Status {
            code: 3,
            message: "bad certificate".into(),
            details: Vec::new(),
        }),
        ..first.clone()
    };
    let all = DiscoveryRequest {
        resource_names: vec!["default".into(), "ALL".into()],
        ..Default::default()
    };
    [first, nack, all]
        .iter()
        .map(Message::encode_to_vec)
        .collect()
}
