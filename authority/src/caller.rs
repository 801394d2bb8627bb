//! Who is calling the node API, checked on every request rather than once per
//! connection: an HTTP/2 connection lives on after the credential that opened it
//! expired or was superseded, and each request must stand on the credential now.

use crate::authority::Authority;
use crate::datastore::AgentRecord;
use crate::error::ApiError;
use tessera_common::{unix_now, x509};

/// A live agent and the serial of the agent SVID it presented.
#[derive(Debug, Clone)]
pub struct Caller {
    pub agent: AgentRecord,
    pub serial: String,
}

impl Authority {
    /// The calling agent, from the client certificate rustls verified against our
    /// roots at the handshake. It must be a known, not evicted agent of this
    /// domain; the certificate must not have expired since, and must be the latest
    /// agent SVID issued to that agent or, until the agent has used that one, the
    /// one before it: a copied or older credential stops working once the agent
    /// that holds the newer one uses it.
    pub async fn caller<T>(&self, req: &tonic::Request<T>) -> Result<Caller, ApiError> {
        let certs = req.peer_certs().ok_or_else(|| {
            ApiError::Unauthenticated("an agent SVID (client certificate) is required".into())
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| ApiError::Unauthenticated("empty client certificate chain".into()))?;
        let unauth =
            |e: x509::X509Error| ApiError::Unauthenticated(format!("client certificate: {e}"));
        let not_after = x509::not_after(leaf).map_err(unauth)?;
        if unix_now() > not_after {
            return Err(ApiError::Unauthenticated(format!(
                "client certificate: the agent SVID expired at {not_after} (Unix time); attest again"
            )));
        }
        let id = x509::spiffe_id_of(leaf).map_err(unauth)?;
        if id.trust_domain() != self.config.trust_domain
            || !id.path().starts_with("/tessera/agent/")
        {
            return Err(ApiError::PermissionDenied(format!(
                "{id} is not an agent of this trust domain"
            )));
        }
        let agent = self
            .datastore
            .get_agent(id.as_str())
            .await?
            .ok_or_else(|| ApiError::PermissionDenied(format!("{id} is not a known agent")))?;
        if agent.evicted {
            return Err(ApiError::PermissionDenied(format!("{id} has been evicted")));
        }
        let serial = x509::serial_hex(leaf).map_err(unauth)?;
        if serial == agent.serial {
            // The agent holds its newest SVID: the overlap is over.
            if agent.prev_serial.is_some() {
                self.datastore
                    .retire_prev_serial(&agent.id, &serial)
                    .await?;
            }
        } else if agent.prev_serial.as_deref() != Some(serial.as_str()) {
            return Err(ApiError::PermissionDenied(format!(
                "{id}: agent SVID superseded (serial {serial} is not the latest issued to this \
                 agent)"
            )));
        }
        Ok(Caller { agent, serial })
    }

    /// [`Authority::caller`]'s agent record.
    pub async fn caller_agent<T>(&self, req: &tonic::Request<T>) -> Result<AgentRecord, ApiError> {
        Ok(self.caller(req).await?.agent)
    }
}

#[cfg(test)]
pub(crate) mod tests;
