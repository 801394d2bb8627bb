//! Signing for one entry of an agent's request. What goes wrong with one entry
//! (deleted, no longer authorised, a refused expansion, a bad CSR) is that
//! entry's result, never the whole call's: the call's own status speaks only
//! about the caller, so an agent reads PermissionDenied on the call as "this
//! agent is refused" and nothing else.

use super::{leaf_facts, template_detail};
use crate::authority::Authority;
use crate::datastore::{AgentRecord, AuditEvent, AuditKind, Entry};
use crate::error::ApiError;
use tessera_common::{x509, UnixTime};
use tessera_proto::authority as pb;
use tonic::Status;

/// An entry's outcome, coded as the call's status would be (the one mapping in `error.rs`).
pub fn item_status(r: Result<(), ApiError>) -> pb::ItemStatus {
    match r {
        Ok(()) => pb::ItemStatus {
            code: tonic::Code::Ok as i32,
            message: String::new(),
        },
        Err(e) => {
            let st = Status::from(e);
            pb::ItemStatus {
                code: st.code() as i32,
                message: st.message().to_string(),
            }
        }
    }
}

/// The entry `entry_id` if it is still authorised for `agent`.
pub fn authorised<'a>(
    entries: &'a [Entry],
    entry_id: &str,
    agent: &AgentRecord,
) -> Result<&'a Entry, ApiError> {
    entries.iter().find(|e| e.id == entry_id).ok_or_else(|| {
        ApiError::PermissionDenied(format!(
            "entry {entry_id:?} does not exist or is not authorized for {}",
            agent.id
        ))
    })
}

/// Signs one X.509-SVID; its audit event is recorded by the caller with the
/// rest of the batch, before anything is handed out.
pub fn sign_x509(
    a: &Authority,
    agent: &AgentRecord,
    entries: &[Entry],
    r: &pb::X509SignRequest,
    now: UnixTime,
) -> Result<(pb::X509Svid, AuditEvent), ApiError> {
    let entry = authorised(entries, &r.entry_id, agent)?;
    let signed = a.signed_id(&agent.id, entry, &r.spiffe_id, now)?;
    let ttl = entry
        .x509_ttl
        .filter(|t| !t.is_zero())
        .unwrap_or(a.config.default_x509_ttl);
    let chain =
        a.ca.sign_svid(&r.csr, &signed.id, &entry.dns_names, ttl, now.secs())?;
    let (serial, expires_at) = leaf_facts(&chain)?;
    let svid = pb::X509Svid {
        entry_id: entry.id.clone(),
        svid_chain: x509::join_der(&chain),
        expires_at: expires_at.secs(),
    };
    let audit = AuditEvent {
        node_selectors: agent.selectors.clone(),
        entry_id: entry.id.clone(),
        detail: template_detail(&signed),
        spiffe_id: Some(signed.id),
        serial,
        expires_at: Some(expires_at),
        ..AuditEvent::new(AuditKind::X509Svid, now, agent.id.clone())
    };
    Ok((svid, audit))
}

/// One result per request, in request order, and the audit events of those signed.
pub fn sign_x509_each(
    a: &Authority,
    agent: &AgentRecord,
    entries: &[Entry],
    requests: &[pb::X509SignRequest],
    now: UnixTime,
) -> (Vec<pb::X509SignResult>, Vec<AuditEvent>) {
    let mut results = Vec::with_capacity(requests.len());
    let mut audit = Vec::with_capacity(requests.len());
    for r in requests {
        let result = match sign_x509(a, agent, entries, r, now) {
            Ok((svid, event)) => {
                audit.push(event);
                pb::X509SignResult {
                    status: Some(item_status(Ok(()))),
                    svid: Some(svid),
                }
            }
            Err(e) => {
                tracing::info!(agent_id = %agent.id, entry_id = %r.entry_id, error = %e, "X509-SVID refused for one entry");
                pb::X509SignResult {
                    status: Some(item_status(Err(e))),
                    svid: None,
                }
            }
        };
        results.push(result);
    }
    (results, audit)
}

/// Mints one JWT-SVID for an authorised entry, and its audit event.
pub fn sign_jwt(
    a: &Authority,
    agent: &AgentRecord,
    entries: &[Entry],
    r: &pb::SignJwtRequest,
    now: UnixTime,
) -> Result<(pb::SignJwtResponse, AuditEvent), ApiError> {
    let entry = authorised(entries, &r.entry_id, agent)?;
    let signed = a.signed_id(&agent.id, entry, &r.spiffe_id, now)?;
    let ttl = entry
        .jwt_ttl
        .filter(|t| !t.is_zero())
        .unwrap_or(a.config.default_jwt_ttl);
    let exp = now.plus(ttl).secs().min(a.ca.not_after());
    let jwt = a
        .jwt
        .sign(&signed.id, &r.audience, now.secs(), exp)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let audit = AuditEvent {
        node_selectors: agent.selectors.clone(),
        entry_id: entry.id.clone(),
        detail: template_detail(&signed),
        spiffe_id: Some(signed.id),
        serial: jwt.jti.clone(),
        expires_at: Some(UnixTime::from_secs(jwt.expires_at)),
        audience: r.audience.clone(),
        ..AuditEvent::new(AuditKind::JwtSvid, now, agent.id.clone())
    };
    let resp = pb::SignJwtResponse {
        token: jwt.token,
        expires_at: jwt.expires_at,
        status: Some(item_status(Ok(()))),
    };
    Ok((resp, audit))
}

#[cfg(test)]
mod tests;
