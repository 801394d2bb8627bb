//! The `tessera.authority.v1.Node` service: what agents call.

use crate::attestation::{AttestError, Challenger};
use crate::authority::Authority;
use crate::caller::Caller;
use crate::datastore::{AgentRecord, AuditEvent, AuditKind};
use crate::error::ApiError;
use crate::limits::jwt::{Admit, Summary};
use crate::metrics::Outcome;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tessera_common::{x509, UnixTime};
use tessera_proto::authority as pb;
use tessera_proto::authority::node_server::Node;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// How long an agent may take for each step of an attestation exchange.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Most CSRs in one batch.
const MAX_BATCH: usize = 1000;
/// Most audiences on one JWT-SVID.
const MAX_AUDIENCES: usize = 32;

pub struct NodeApi(pub Arc<Authority>);

mod per_entry;

type AttestStream = Pin<Box<dyn Stream<Item = Result<pb::AttestResponse, Status>> + Send>>;

struct StreamChallenger<'a> {
    inbound: &'a mut Streaming<pb::AttestRequest>,
    outbound: &'a mpsc::Sender<Result<pb::AttestResponse, Status>>,
}

#[async_trait::async_trait]
impl Challenger for StreamChallenger<'_> {
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError> {
        let msg = pb::AttestResponse {
            step: Some(pb::attest_response::Step::Challenge(challenge)),
        };
        self.outbound
            .send(Ok(msg))
            .await
            .map_err(|_| AttestError::StreamClosed)?;
        match tokio::time::timeout(STEP_TIMEOUT, self.inbound.next()).await {
            Ok(Some(Ok(pb::AttestRequest {
                step: Some(pb::attest_request::Step::ChallengeResponse(r)),
            }))) => Ok(r),
            Ok(Some(Ok(_))) => Err(AttestError::Malformed(
                "expected a challenge response".into(),
            )),
            Ok(Some(Err(st))) => Err(inbound_error(st)),
            Ok(None) => Err(AttestError::StreamClosed),
            Err(_) => Err(AttestError::Rejected(
                "no challenge response in time".into(),
            )),
        }
    }
}

impl NodeApi {
    /// `caller` is the agent when it re-attests over mTLS (continuous
    /// verification at renewal); the SVID it presented becomes the previous one.
    /// `method` becomes the attestation method once it is known to be enabled.
    async fn attest(
        &self,
        caller: Option<Caller>,
        mut inbound: Streaming<pb::AttestRequest>,
        tx: &mpsc::Sender<Result<pb::AttestResponse, Status>>,
        method: &mut &'static str,
    ) -> Result<pb::AttestResult, ApiError> {
        let a = &self.0;
        let begin = match tokio::time::timeout(STEP_TIMEOUT, inbound.next()).await {
            Ok(Some(Ok(pb::AttestRequest {
                step: Some(pb::attest_request::Step::Begin(b)),
            }))) => b,
            Ok(Some(Ok(_))) => {
                return Err(ApiError::InvalidArgument(
                    "attestation must open with begin".into(),
                ))
            }
            Ok(Some(Err(st))) => return Err(inbound_error(st).into()),
            _ => return Err(AttestError::StreamClosed.into()),
        };
        let verifier = a.verifier(&begin.method).ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "method: {:?} is not enabled on this authority",
                begin.method
            ))
        })?;
        *method = verifier.method();
        let mut challenger = StreamChallenger {
            inbound: &mut inbound,
            outbound: tx,
        };
        let node = verifier.attest(&begin.payload, &mut challenger).await?;
        if let Some(caller) = &caller {
            if caller.agent.id != node.agent_id {
                return Err(ApiError::PermissionDenied(format!(
                    "{} re-attested as {}",
                    caller.agent.id, node.agent_id
                )));
            }
        }
        let now = UnixTime::now();
        let chain = a.ca.sign_svid(
            &begin.csr,
            &node.agent_id,
            &[],
            a.config.agent_ttl,
            now.secs(),
        )?;
        let (serial, expires_at) = leaf_facts(&chain)?;
        let agent = AgentRecord {
            id: node.agent_id.clone(),
            method: verifier.method().to_string(),
            selectors: node.selectors.clone(),
            serial: serial.clone(),
            prev_serial: caller.as_ref().map(|c| c.serial.clone()),
            expires_at,
            attested_at: now,
            evicted: false,
        };
        let kind = if caller.is_some() {
            AuditKind::NodeReattestation
        } else {
            AuditKind::NodeAttestation
        };
        let audit = AuditEvent {
            node_selectors: node.selectors.clone(),
            spiffe_id: Some(agent.id.clone()),
            serial,
            expires_at: Some(expires_at),
            detail: node.detail.clone(),
            ..AuditEvent::new(kind, now, agent.id.clone())
        };
        a.datastore
            .record_attestation(&agent, &audit, node.consume_token.as_deref())
            .await?;
        a.metrics.x509_signed("agent", 1);
        tracing::info!(agent_id = %agent.id, method = %agent.method, "node attested");
        Ok(pb::AttestResult {
            agent_id: agent.id.to_string(),
            svid_chain: x509::join_der(&chain),
            bundle: Some(a.bundle()),
            node_selectors: node.selectors.into_iter().map(Into::into).collect(),
        })
    }
}

/// A message the decoder refused for its size is the agent's problem to
/// know about (ResourceExhausted), not a closed stream.
fn inbound_error(st: Status) -> AttestError {
    match st.code() {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
            AttestError::TooLarge(st.message().to_string())
        }
        _ => AttestError::StreamClosed,
    }
}

fn leaf_facts(
    chain: &[rustls_pki_types::CertificateDer<'_>],
) -> Result<(String, UnixTime), ApiError> {
    let leaf = chain
        .first()
        .ok_or_else(|| ApiError::Internal("empty chain".into()))?;
    let serial = x509::serial_hex(leaf).map_err(|e| ApiError::Internal(e.to_string()))?;
    let exp = x509::not_after(leaf).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((serial, UnixTime::from_secs(exp)))
}

/// The audit row standing for a window's JWT-SVIDs past the per-agent cap.
pub fn coalesced_audit(s: Summary) -> AuditEvent {
    AuditEvent {
        detail: format!(
            "{} more JWT-SVIDs minted from {} to {} (Unix time) past limits.jwt_audit_per_agent",
            s.count, s.first, s.last
        ),
        ..AuditEvent::new(
            AuditKind::JwtSvidCoalesced,
            UnixTime::from_secs(s.last),
            s.agent_id,
        )
    }
}

/// The audit trail names the template a signed ID was expanded from.
fn template_detail(s: &crate::template_sign::SignedId) -> String {
    s.template
        .as_ref()
        .map(|t| format!("template {t}"))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Node for NodeApi {
    type AttestStream = AttestStream;

    async fn attest(
        &self,
        req: Request<Streaming<pb::AttestRequest>>,
    ) -> Result<Response<AttestStream>, Status> {
        // Held until the exchange ends: pending evidence is bounded in number.
        let slot = self.0.attest_gate.enter(req.remote_addr())?;
        // A client certificate means renewal by re-attestation: the caller must be a
        // live agent, and the evidence must prove the same node.
        let caller = match req.peer_certs() {
            Some(_) => Some(self.0.caller(&req).await?),
            None => None,
        };
        let (tx, rx) = mpsc::channel(4);
        let this = NodeApi(self.0.clone());
        let inbound = req.into_inner();
        let mut shutdown = self.0.shutdown.clone();
        tokio::spawn(async move {
            let mut method = "unknown";
            // On shutdown the exchange ends now rather than waiting for the agent;
            // a datastore write in progress is rolled back, never half-done.
            let outcome = tokio::select! {
                r = this.attest(caller, inbound, &tx, &mut method) => r.map_err(Status::from),
                _ = shutdown.wait_for(|s| *s) => {
                    Err(Status::unavailable("the authority is shutting down; retry"))
                }
            };
            let msg = match outcome {
                Ok(result) => {
                    this.0.metrics.node_attestation(method, Outcome::Ok);
                    Ok(pb::AttestResponse {
                        step: Some(pb::attest_response::Step::Result(result)),
                    })
                }
                Err(st) => {
                    tracing::warn!(method, error = %st.message(), "node attestation failed");
                    this.0
                        .metrics
                        .node_attestation(method, Outcome::of(st.code()));
                    this.0.metrics.rpc_error("node", "Attest", st.code());
                    Err(st)
                }
            };
            let _ = tx.send(msg).await;
            drop(slot);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn renew_agent(
        &self,
        req: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let a = &self.0;
        let Caller {
            agent,
            serial: presented,
        } = a.caller(&req).await?;
        // A TPM host's identity lasts only as long as its TPM proves it: it gets a
        // new agent SVID only by attesting again (quote, event log, policies).
        if agent.method == crate::attestation::tpm::METHOD {
            return Err(ApiError::FailedPrecondition(format!(
                "{}: a TPM-attested agent renews by attesting again, not with RenewAgent",
                agent.id
            ))
            .into());
        }
        let now = UnixTime::now();
        let chain =
            a.ca.sign_svid(
                &req.get_ref().csr,
                &agent.id,
                &[],
                a.config.agent_ttl,
                now.secs(),
            )
            .map_err(ApiError::from)?;
        let (serial, expires_at) = leaf_facts(&chain)?;
        let audit = AuditEvent {
            node_selectors: agent.selectors.clone(),
            spiffe_id: Some(agent.id.clone()),
            serial: serial.clone(),
            expires_at: Some(expires_at),
            ..AuditEvent::new(AuditKind::AgentRenewal, now, agent.id.clone())
        };
        a.datastore
            .renew_agent(&agent.id, &presented, &serial, expires_at, &audit)
            .await
            .map_err(ApiError::from)?;
        a.metrics.x509_signed("agent", 1);
        Ok(Response::new(pb::RenewAgentResponse {
            svid_chain: x509::join_der(&chain),
            bundle: Some(a.bundle()),
        }))
    }

    async fn sync_entries(
        &self,
        req: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<pb::SyncEntriesResponse>, Status> {
        let a = &self.0;
        let agent = a.caller_agent(&req).await?;
        let entries = a.authorized_entries(&agent).await?;
        Ok(Response::new(pb::SyncEntriesResponse {
            entries: entries
                .into_iter()
                .map(crate::admin_api::entry_to_pb)
                .collect(),
            bundle: Some(a.bundle()),
        }))
    }

    async fn batch_sign_x509(
        &self,
        req: Request<pb::BatchSignX509Request>,
    ) -> Result<Response<pb::BatchSignX509Response>, Status> {
        let a = &self.0;
        let agent = a.caller_agent(&req).await?;
        let requests = &req.get_ref().requests;
        if requests.len() > MAX_BATCH {
            return Err(
                ApiError::InvalidArgument(format!("requests: more than {MAX_BATCH}")).into(),
            );
        }
        let ids: Vec<String> = requests.iter().map(|r| r.entry_id.clone()).collect();
        let entries = a.authorized_among(&agent, &ids).await?;
        let (results, audit) =
            per_entry::sign_x509_each(a, &agent, &entries, requests, UnixTime::now());
        // Nothing is handed out that is not in the audit trail.
        a.datastore
            .record_audit(&audit)
            .await
            .map_err(ApiError::from)?;
        a.metrics.x509_signed("workload", audit.len() as u64);
        Ok(Response::new(pb::BatchSignX509Response { results }))
    }

    async fn sign_jwt(
        &self,
        req: Request<pb::SignJwtRequest>,
    ) -> Result<Response<pb::SignJwtResponse>, Status> {
        let a = &self.0;
        let agent = a.caller_agent(&req).await?;
        let r = req.get_ref();
        if r.audience.is_empty() || r.audience.iter().any(|s| s.is_empty() || s.len() > 1024) {
            return Err(ApiError::InvalidArgument(
                "audience: at least one non-empty audience is required".into(),
            )
            .into());
        }
        // Audiences end up in the audit trail and in operators' terminals.
        if r.audience.iter().any(|s| s.chars().any(char::is_control)) {
            return Err(ApiError::InvalidArgument(
                "audience: control characters (newline, tab, escape, ...) are not allowed".into(),
            )
            .into());
        }
        if r.audience.len() > MAX_AUDIENCES {
            return Err(
                ApiError::InvalidArgument(format!("audience: more than {MAX_AUDIENCES}")).into(),
            );
        }
        let entries = a
            .authorized_among(&agent, std::slice::from_ref(&r.entry_id))
            .await?;
        let now = UnixTime::now();
        let (admit, ended) = a
            .jwt_limits
            .admit(&agent.id, std::time::Instant::now(), now.secs())
            .map_err(|wait| {
                ApiError::Overloaded(
                    format!(
                        "{}: JWT-SVIDs requested faster than limits.jwt_per_second_per_agent",
                        agent.id
                    ),
                    wait,
                )
            })?;
        // Past the agent's audit rows for this window the token is counted
        // instead, and the window's count written as one row when it ends.
        let mut rows: Vec<AuditEvent> = ended.into_iter().map(coalesced_audit).collect();
        let resp = match per_entry::sign_jwt(a, &agent, &entries, r, now) {
            Ok((resp, audit)) => {
                if admit == Admit::Audit {
                    rows.push(audit);
                }
                a.metrics.jwt_signed();
                resp
            }
            Err(e) => {
                tracing::info!(agent_id = %agent.id, entry_id = %r.entry_id, error = %e, "JWT-SVID refused for one entry");
                pb::SignJwtResponse {
                    status: Some(per_entry::item_status(Err(e))),
                    ..Default::default()
                }
            }
        };
        // Nothing is handed out that is not in the audit trail.
        a.datastore
            .record_audit(&rows)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(resp))
    }

    async fn get_bundle(
        &self,
        _req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        Ok(Response::new(self.0.bundle()))
    }
}
