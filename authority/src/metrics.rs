//! Every metric the authority exports, registered in a registry the caller
//! owns (no global default registry: tests scrape a fresh one).
//!
//! gRPC calls are counted when the response starts (see
//! `tessera_common::telemetry::GrpcMetricsLayer`); Attest answers with a
//! stream and reports its outcome in-stream, so its errors are counted where
//! the exchange ends.

use prometheus::{
    exponential_buckets, register_histogram_vec_with_registry,
    register_int_counter_vec_with_registry, register_int_gauge_with_registry, HistogramVec,
    IntCounterVec, Registry,
};
use std::sync::Arc;
use std::time::Duration;
use tessera_common::telemetry::{grpc_code_name, GrpcMetricsLayer};

pub const NODE_METHODS: &[&str] = &[
    "Attest",
    "RenewAgent",
    "SyncEntries",
    "BatchSignX509",
    "SignJwt",
    "GetBundle",
];

pub const ADMIN_METHODS: &[&str] = &[
    "CreateEntry",
    "ListEntries",
    "GetEntry",
    "DeleteEntry",
    "GenerateToken",
    "ListAgents",
    "EvictAgent",
    "GetBundle",
    "ListAudit",
];

pub struct Metrics {
    node_attestations: IntCounterVec,
    svids_signed: IntCounterVec,
    rpc_errors: IntCounterVec,
    rpc_duration: HistogramVec,
    datastore_latency: HistogramVec,
}

/// What an attestation came to, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The node failed to prove itself (bad evidence, unknown token, policy).
    Rejected,
    /// Our side failed (datastore, signing) or the exchange broke off.
    Error,
}

impl Outcome {
    pub fn of(code: tonic::Code) -> Outcome {
        use tonic::Code::*;
        match code {
            Ok => Outcome::Ok,
            InvalidArgument | PermissionDenied | Unauthenticated | NotFound | AlreadyExists
            | FailedPrecondition => Outcome::Rejected,
            _ => Outcome::Error,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
        }
    }
}

impl Metrics {
    pub fn new(r: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let latency = exponential_buckets(0.0005, 4.0, 9)?; // 0.5 ms .. ~33 s
        let build = register_int_gauge_with_registry!(
            prometheus::opts!(
                "tessera_authority_build_info",
                "Always 1; the version is a label."
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
            r
        )?;
        build.set(1);
        Ok(Arc::new(Metrics {
            node_attestations: register_int_counter_vec_with_registry!(
                "tessera_authority_node_attestations_total",
                "Node attestations by method and result (ok, rejected, error).",
                &["method", "result"],
                r
            )?,
            svids_signed: register_int_counter_vec_with_registry!(
                "tessera_authority_svids_signed_total",
                "SVIDs signed by type (x509, jwt) and for whom (workload, agent).",
                &["type", "kind"],
                r
            )?,
            rpc_errors: register_int_counter_vec_with_registry!(
                "tessera_authority_rpc_errors_total",
                "Failed gRPC calls by service (node, admin), method and code.",
                &["service", "method", "code"],
                r
            )?,
            rpc_duration: register_histogram_vec_with_registry!(
                "tessera_authority_rpc_duration_seconds",
                "gRPC time to the response by service and method.",
                &["service", "method"],
                latency.clone(),
                r
            )?,
            datastore_latency: register_histogram_vec_with_registry!(
                "tessera_authority_datastore_operation_duration_seconds",
                "Datastore operation latency by operation.",
                &["operation"],
                latency,
                r
            )?,
        }))
    }

    /// The tower layer for the `node` or `admin` gRPC server.
    pub fn grpc_layer(self: &Arc<Self>, service: &'static str) -> GrpcMetricsLayer {
        let (prefix, methods) = match service {
            "admin" => ("/tessera.authority.v1.Admin/", ADMIN_METHODS),
            _ => ("/tessera.authority.v1.Node/", NODE_METHODS),
        };
        let m = self.clone();
        GrpcMetricsLayer::new(
            prefix,
            methods,
            Arc::new(move |method, code, took: Duration| {
                m.rpc_duration
                    .with_label_values(&[service, method])
                    .observe(took.as_secs_f64());
                if code != tonic::Code::Ok {
                    m.rpc_error(service, method, code);
                }
            }),
        )
    }

    pub fn rpc_error(&self, service: &str, method: &str, code: tonic::Code) {
        self.rpc_errors
            .with_label_values(&[service, method, grpc_code_name(code)])
            .inc();
    }

    /// `method` must be an enabled attestation method or "unknown": it is a label.
    pub fn node_attestation(&self, method: &str, outcome: Outcome) {
        self.node_attestations
            .with_label_values(&[method, outcome.label()])
            .inc();
    }

    pub fn x509_signed(&self, kind: &str, n: u64) {
        self.svids_signed
            .with_label_values(&["x509", kind])
            .inc_by(n);
    }

    pub fn jwt_signed(&self) {
        self.svids_signed
            .with_label_values(&["jwt", "workload"])
            .inc();
    }

    /// The histogram the datastore observes itself into.
    pub fn datastore_latency(&self) -> HistogramVec {
        self.datastore_latency.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions_and_registration_errors_are_errors() {
        let r = Registry::new();
        let m = Metrics::new(&r).unwrap();
        m.node_attestation("join_token", Outcome::of(tonic::Code::PermissionDenied));
        m.x509_signed("workload", 2);
        m.jwt_signed();
        m.rpc_error("node", "SyncEntries", tonic::Code::Unavailable);
        m.datastore_latency()
            .with_label_values(&["get_agent"])
            .observe(0.001);
        m.rpc_duration
            .with_label_values(&["node", "Attest"])
            .observe(0.1);
        let text = tessera_common::telemetry::encode(&r).unwrap();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut f = line.split_whitespace().skip(2);
            let (name, kind) = (f.next().unwrap(), f.next().unwrap());
            assert!(name.starts_with("tessera_authority_"), "{line}");
            match kind {
                "counter" => assert!(name.ends_with("_total"), "{line}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{line}"),
                _ => assert!(!name.ends_with("_total"), "{line}"),
            }
        }
        assert!(text.contains(
            "tessera_authority_node_attestations_total{method=\"join_token\",result=\"rejected\"} 1"
        ));
        assert!(text
            .contains("tessera_authority_svids_signed_total{kind=\"workload\",type=\"x509\"} 2"));
        assert!(Metrics::new(&r).is_err());
    }
}
