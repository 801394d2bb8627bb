//! Workload API requests as a local client sends them: the first byte
//! picks the request type, the rest is its protobuf; the agent's own checks
//! then run on the decoded request (a requested SPIFFE ID, a JWT-SVID to
//! validate against the fuzz bundle, see [`crate::jwt`]).

use prost::Message;
use tessera_agent::workload_api::jwtsvid_request;
use tessera_proto::workload as wl;

pub fn fuzz_one(data: &[u8]) {
    let Some((&kind, msg)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            if let Ok(r) = wl::JwtsvidRequest::decode(msg) {
                let _ = jwtsvid_request(&r);
            }
        }
        1 => {
            if let Ok(r) = wl::ValidateJwtsvidRequest::decode(msg) {
                if !r.audience.is_empty() && !r.svid.is_empty() {
                    crate::jwt::validate(&r.svid, &r.audience);
                }
            }
        }
        2 => {
            let _ = wl::X509svidRequest::decode(msg);
        }
        3 => {
            let _ = wl::X509BundlesRequest::decode(msg);
        }
        _ => {
            let _ = wl::JwtBundlesRequest::decode(msg);
        }
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let tagged = |kind: u8, msg: Vec<u8>| [vec![kind], msg].concat();
    let mut s = vec![
        tagged(
            0,
            wl::JwtsvidRequest {
                audience: vec![crate::jwt::AUDIENCE.into()],
                spiffe_id: "spiffe://example.org/fuzz".into(),
            }
            .encode_to_vec(),
        ),
        tagged(
            0,
            wl::JwtsvidRequest {
                audience: vec!["a".into(), "b".into()],
                spiffe_id: String::new(),
            }
            .encode_to_vec(),
        ),
        tagged(2, Vec::new()),
        tagged(3, Vec::new()),
        tagged(4, Vec::new()),
    ];
    for svid in crate::jwt::tokens() {
        let r = wl::ValidateJwtsvidRequest {
            audience: crate::jwt::AUDIENCE.into(),
            svid,
        };
        s.push(tagged(1, r.encode_to_vec()));
    }
    s
}
