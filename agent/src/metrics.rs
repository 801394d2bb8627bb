//! Every metric the agent exports, registered in a registry the caller owns
//! (no global default registry: tests scrape a fresh one).
//!
//! Workload API calls are counted once, when the response starts: a unary call
//! with its final code, a stream with OK when its first message was ready (the
//! handler builds it before answering) or with the error it was refused with.
//! How a stream ends later (agent shutdown, identity removed) is not a request
//! outcome and is not counted here.

use crate::cache::Snapshot;
use prometheus::{
    exponential_buckets, register_gauge_with_registry, register_histogram_vec_with_registry,
    register_histogram_with_registry, register_int_counter_vec_with_registry,
    register_int_counter_with_registry, register_int_gauge_with_registry, Gauge, Histogram,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry,
};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::node::{EvidenceError, NodeEvidence};
use tessera_attestors::workload::unix::UnixAttestor;
use tessera_common::telemetry::{grpc_code_name, GrpcMetricsLayer};

/// The Workload API and SDS methods used as label values; anything else is "other".
pub const WORKLOAD_METHODS: &[&str] = &[
    "FetchX509SVID",
    "FetchX509Bundles",
    "FetchJWTSVID",
    "FetchJWTBundles",
    "ValidateJWTSVID",
    "FetchWITSVID",
    "FetchWITBundles",
    "StreamSecrets",
    "FetchSecrets",
];

pub struct Metrics {
    workload_requests: IntCounterVec,
    workload_duration: HistogramVec,
    workload_attestation: Histogram,
    hash_cache_hits: IntCounter,
    hash_cache_misses: IntCounter,
    svids_cached: IntGauge,
    svid_rotations: IntCounter,
    entry_syncs: IntCounterVec,
    agent_svid_remaining: Gauge,
    agent_svid_not_after: AtomicI64,
    authority_rpc_errors: IntCounterVec,
    tpm_duration: HistogramVec,
    node_attestations: IntCounterVec,
}

impl Metrics {
    pub fn new(r: &Registry) -> Result<Arc<Self>, prometheus::Error> {
        let latency = exponential_buckets(0.0005, 4.0, 9)?; // 0.5 ms .. ~33 s
        let slow = exponential_buckets(0.01, 3.0, 9)?; // 10 ms .. ~66 s
        let build = register_int_gauge_with_registry!(
            prometheus::opts!(
                "tessera_agent_build_info",
                "Always 1; the version is a label."
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
            r
        )?;
        build.set(1);
        Ok(Arc::new(Metrics {
            workload_requests: register_int_counter_vec_with_registry!(
                "tessera_agent_workload_api_requests_total",
                "Workload API calls by method and the gRPC code the response started with.",
                &["method", "code"],
                r
            )?,
            workload_duration: register_histogram_vec_with_registry!(
                "tessera_agent_workload_api_request_duration_seconds",
                "Workload API time to the response (a stream's first message).",
                &["method"],
                latency.clone(),
                r
            )?,
            workload_attestation: register_histogram_with_registry!(
                "tessera_agent_workload_attestation_duration_seconds",
                "Time to attest a Workload API caller (selectors from /proc).",
                latency,
                r
            )?,
            hash_cache_hits: register_int_counter_with_registry!(
                "tessera_agent_binary_hash_cache_hits_total",
                "Workload binary hashes served from the cache.",
                r
            )?,
            hash_cache_misses: register_int_counter_with_registry!(
                "tessera_agent_binary_hash_cache_misses_total",
                "Workload binaries hashed because the cache had no current hash.",
                r
            )?,
            svids_cached: register_int_gauge_with_registry!(
                "tessera_agent_x509_svids_cached",
                "Valid X.509-SVIDs held in memory for the entries this agent serves.",
                r
            )?,
            svid_rotations: register_int_counter_with_registry!(
                "tessera_agent_x509_svid_rotations_total",
                "X.509-SVIDs replaced by a newly signed one (rotation or entry change).",
                r
            )?,
            entry_syncs: register_int_counter_vec_with_registry!(
                "tessera_agent_entry_syncs_total",
                "Entry sync rounds with the authority, by result (ok, error).",
                &["result"],
                r
            )?,
            agent_svid_remaining: register_gauge_with_registry!(
                "tessera_agent_agent_svid_remaining_seconds",
                "Seconds until the agent SVID expires (0 before the first attestation).",
                r
            )?,
            agent_svid_not_after: AtomicI64::new(0),
            authority_rpc_errors: register_int_counter_vec_with_registry!(
                "tessera_agent_authority_rpc_errors_total",
                "Failed calls to the authority by method and gRPC code.",
                &["method", "code"],
                r
            )?,
            tpm_duration: register_histogram_vec_with_registry!(
                "tessera_agent_tpm_operation_duration_seconds",
                "TPM work per node attestation step: evidence (EK, AK, event log), \
                 respond (ActivateCredential and quote).",
                &["operation"],
                slow,
                r
            )?,
            node_attestations: register_int_counter_vec_with_registry!(
                "tessera_agent_node_attestations_total",
                "Node attestation exchanges with the authority, by result (ok, error).",
                &["result"],
                r
            )?,
        }))
    }

    /// The tower layer that counts Workload API calls.
    pub fn workload_layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        let m = self.clone();
        GrpcMetricsLayer::new(
            "/SpiffeWorkloadAPI/",
            WORKLOAD_METHODS,
            Arc::new(move |method, code, took: Duration| {
                m.workload_requests
                    .with_label_values(&[method, grpc_code_name(code)])
                    .inc();
                m.workload_duration
                    .with_label_values(&[method])
                    .observe(took.as_secs_f64());
            }),
        )
        .and_prefix("/envoy.service.secret.v3.SecretDiscoveryService/")
    }

    pub fn workload_attested(&self, took: Duration) {
        self.workload_attestation.observe(took.as_secs_f64());
    }

    pub fn svid_rotated(&self) {
        self.svid_rotations.inc();
    }

    pub fn entry_sync(&self, ok: bool) {
        self.entry_syncs
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    pub fn agent_svid(&self, not_after: i64) {
        self.agent_svid_not_after
            .store(not_after, Ordering::Relaxed);
    }

    /// A failed call to the authority; `method` is the RPC name.
    pub fn authority_error(&self, method: &'static str, code: tonic::Code) {
        self.authority_rpc_errors
            .with_label_values(&[method, grpc_code_name(code)])
            .inc();
    }

    pub fn node_attestation(&self, ok: bool) {
        self.node_attestations
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Brings the values that are read rather than counted up to date; called
    /// right before every scrape.
    pub fn refresh(&self, snapshot: &Snapshot, attestor: &UnixAttestor, now: i64) {
        self.svids_cached.set(snapshot.svids.len() as i64);
        let (hits, misses) = attestor.cache_stats();
        for (counter, total) in [
            (&self.hash_cache_hits, hits),
            (&self.hash_cache_misses, misses),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
        let not_after = self.agent_svid_not_after.load(Ordering::Relaxed);
        self.agent_svid_remaining.set(if not_after == 0 {
            0.0
        } else {
            (not_after - now).max(0) as f64
        });
    }
}

/// Times the TPM work of node attestation; other methods pass through untimed.
pub fn timed_evidence(
    inner: Box<dyn NodeEvidence>,
    metrics: Arc<Metrics>,
) -> Box<dyn NodeEvidence> {
    if inner.method() != tessera_attestors::node::tpm::evidence::METHOD {
        return inner;
    }
    Box::new(TimedEvidence { inner, metrics })
}

struct TimedEvidence {
    inner: Box<dyn NodeEvidence>,
    metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl NodeEvidence for TimedEvidence {
    fn method(&self) -> &'static str {
        self.inner.method()
    }

    async fn evidence(&self) -> Result<Vec<u8>, EvidenceError> {
        let _t = self
            .metrics
            .tpm_duration
            .with_label_values(&["evidence"])
            .start_timer();
        self.inner.evidence().await
    }

    async fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        let _t = self
            .metrics
            .tpm_duration
            .with_label_values(&["respond"])
            .start_timer();
        self.inner.respond(challenge).await
    }

    fn reattest_on_renewal(&self) -> bool {
        self.inner.reattest_on_renewal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::State;

    fn scrape(r: &Registry) -> String {
        tessera_common::telemetry::encode(r).unwrap()
    }

    #[test]
    fn names_follow_conventions() {
        let r = Registry::new();
        let m = Metrics::new(&r).unwrap();
        m.entry_sync(true);
        m.authority_error("SyncEntries", tonic::Code::Unavailable);
        m.node_attestation(false);
        m.tpm_duration.with_label_values(&["respond"]).observe(0.2);
        m.workload_requests
            .with_label_values(&["FetchX509SVID", "OK"])
            .inc();
        m.workload_duration
            .with_label_values(&["FetchX509SVID"])
            .observe(0.01);
        let text = scrape(&r);
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut f = line.split_whitespace().skip(2);
            let (name, kind) = (f.next().unwrap(), f.next().unwrap());
            assert!(name.starts_with("tessera_agent_"), "{line}");
            match kind {
                "counter" => assert!(name.ends_with("_total"), "{line}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{line}"),
                _ => assert!(!name.ends_with("_total"), "{line}"),
            }
        }
        assert!(text.contains(
            "tessera_agent_authority_rpc_errors_total{code=\"Unavailable\",method=\"SyncEntries\"} 1"
        ));
        // A second registration in the same registry is an error, not a panic.
        assert!(Metrics::new(&r).is_err());
    }

    #[test]
    fn refresh_reads_snapshot_cache_and_expiry() {
        let r = Registry::new();
        let m = Metrics::new(&r).unwrap();
        let snap = Snapshot {
            state: State::Ready,
            svids: Vec::new(),
            templates: Vec::new(),
            bundle: None,
            index: Default::default(),
        };
        let attestor = UnixAttestor::new();
        m.refresh(&snap, &attestor, 1000);
        assert!(scrape(&r).contains("tessera_agent_agent_svid_remaining_seconds 0\n"));
        m.agent_svid(1600);
        m.refresh(&snap, &attestor, 1000);
        let text = scrape(&r);
        assert!(
            text.contains("tessera_agent_agent_svid_remaining_seconds 600\n"),
            "{text}"
        );
        assert!(
            text.contains("tessera_agent_x509_svids_cached 0\n"),
            "{text}"
        );
        // Our own binary: one miss, then a hit, reflected as counters.
        let me = std::process::id() as i32;
        attestor.attest(me).unwrap();
        attestor.attest(me).unwrap();
        m.refresh(&snap, &attestor, 1000);
        m.refresh(&snap, &attestor, 1000);
        let text = scrape(&r);
        assert!(
            text.contains("tessera_agent_binary_hash_cache_misses_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tessera_agent_binary_hash_cache_hits_total 1\n"),
            "{text}"
        );
    }
}
