//! The local admin API (`tessera.authority.v1.Admin`) on a Unix socket.

use crate::authority::Authority;
use crate::datastore::{AgentRecord, AuditFilter, DatastoreError, Entry, EntryFilter};
use crate::entry_update;
use crate::error::ApiError;
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::node::join_token;
use tessera_common::duration::whole_secs;
use tessera_common::selector::file_only_warning;
use tessera_common::{Selector, SpiffeId, UnixTime};
use tessera_proto::authority as pb;
use tessera_proto::authority::admin_server::Admin;
use tonic::{Request, Response, Status};

pub struct AdminApi(pub Arc<Authority>);

pub fn entry_to_pb(e: Entry) -> pb::Entry {
    pb::Entry {
        id: e.id,
        spiffe_id: e.spiffe_id.to_string(),
        parent_id: e.parent_id.to_string(),
        selectors: e.selectors.into_iter().map(Into::into).collect(),
        x509_ttl: e.x509_ttl.map_or(0, whole_secs),
        jwt_ttl: e.jwt_ttl.map_or(0, whole_secs),
        dns_names: e.dns_names,
        hint: e.hint,
        admin: e.admin,
        expires_at: e.expires_at.map_or(0, UnixTime::secs),
        revision: e.revision,
        created_at: e.created_at.secs(),
    }
}

fn selectors(v: &[pb::Selector]) -> Vec<Selector> {
    v.iter().map(Selector::from).collect()
}

/// Most entries one `BatchCreateEntries` stores (one transaction).
pub const MAX_BATCH_ENTRIES: usize = 10_000;

fn agent_to_pb(a: AgentRecord) -> pb::Agent {
    pb::Agent {
        id: a.id.to_string(),
        attestation_method: a.method,
        selectors: a.selectors.into_iter().map(Into::into).collect(),
        serial: a.serial,
        expires_at: a.expires_at.secs(),
        attested_at: a.attested_at.secs(),
        evicted: a.evicted,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Only root and the authority's own user may use the admin socket; the socket
/// mode says the same, this holds even if someone loosens it.
pub fn check_peer(req: Request<()>) -> Result<Request<()>, Status> {
    let uid = req
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .map(|c| c.uid());
    let me = nix::unistd::geteuid().as_raw();
    match uid {
        Some(u) if u == 0 || u == me => Ok(req),
        _ => Err(Status::permission_denied(
            "the admin API is for root and the authority's user only",
        )),
    }
}

/// The journal's counterpart of the CLI's warning, for entries made by scripts.
fn warn_if_file_only(e: &Entry) {
    if let Some(why) = file_only_warning(&e.selectors) {
        tracing::warn!(entry_id = %e.id, spiffe_id = %e.spiffe_id, "entry: {why}");
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_entry(&self, req: Request<pb::Entry>) -> Result<Response<pb::Entry>, Status> {
        let a = &self.0;
        let e = a.validate_entry(req.into_inner())?;
        let created = a.datastore.create_entry(e).await.map_err(ApiError::from)?;
        tracing::info!(entry_id = %created.id, spiffe_id = %created.spiffe_id, "entry created");
        warn_if_file_only(&created);
        Ok(Response::new(entry_to_pb(created)))
    }

    async fn batch_create_entries(
        &self,
        req: Request<pb::BatchCreateEntriesRequest>,
    ) -> Result<Response<pb::BatchCreateEntriesResponse>, Status> {
        let a = &self.0;
        let entries = req.into_inner().entries;
        if entries.len() > MAX_BATCH_ENTRIES {
            return Err(ApiError::InvalidArgument(format!(
                "entries: {} entries, at most {MAX_BATCH_ENTRIES} per batch",
                entries.len()
            ))
            .into());
        }
        // Every entry is checked before anything is written.
        let entries = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                a.validate_entry(e)
                    .map_err(|err| ApiError::InvalidArgument(format!("entries[{i}]: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let created = a
            .datastore
            .create_entries(entries)
            .await
            .map_err(|(i, err)| match err {
                DatastoreError::AlreadyExists(m) => {
                    DatastoreError::AlreadyExists(format!("entries[{i}]: {m}"))
                }
                other => other,
            })
            .map_err(ApiError::from)?;
        for c in &created {
            tracing::info!(entry_id = %c.id, spiffe_id = %c.spiffe_id, "entry created");
            warn_if_file_only(c);
        }
        Ok(Response::new(pb::BatchCreateEntriesResponse {
            entries: created.into_iter().map(entry_to_pb).collect(),
        }))
    }

    async fn update_entry(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let a = &self.0;
        let req = req.into_inner();
        let (updated, changed) = entry_update::update(&a.datastore, &req, |next| {
            a.validate_entry(entry_to_pb(next.clone())).map(drop)
        })
        .await?;
        if changed.is_empty() {
            return Ok(Response::new(entry_to_pb(updated)));
        }
        tracing::info!(entry_id = %updated.id, spiffe_id = %updated.spiffe_id, revision = updated.revision, changed = %changed.join(","), "entry updated");
        warn_if_file_only(&updated);
        Ok(Response::new(entry_to_pb(updated)))
    }

    async fn list_entries(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let r = req.into_inner();
        let filter = EntryFilter {
            spiffe_id: non_empty(r.spiffe_id),
            parent_id: non_empty(r.parent_id),
            selectors: selectors(&r.selectors),
        };
        let entries = self
            .0
            .datastore
            .find_entries(&filter)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: entries.into_iter().map(entry_to_pb).collect(),
        }))
    }

    async fn get_entry(&self, req: Request<pb::EntryId>) -> Result<Response<pb::Entry>, Status> {
        let id = &req.get_ref().id;
        match self
            .0
            .datastore
            .get_entry(id)
            .await
            .map_err(ApiError::from)?
        {
            Some(e) => Ok(Response::new(entry_to_pb(e))),
            None => Err(ApiError::NotFound(format!("entry {id:?} does not exist")).into()),
        }
    }

    async fn delete_entry(&self, req: Request<pb::EntryId>) -> Result<Response<pb::Empty>, Status> {
        let id = &req.get_ref().id;
        if !self
            .0
            .datastore
            .delete_entry(id)
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::NotFound(format!("entry {id:?} does not exist")).into());
        }
        tracing::info!(entry_id = %id, "entry deleted");
        Ok(Response::new(pb::Empty {}))
    }

    async fn generate_token(
        &self,
        req: Request<pb::GenerateTokenRequest>,
    ) -> Result<Response<pb::GenerateTokenResponse>, Status> {
        let a = &self.0;
        let ttl = match req.get_ref().ttl {
            0 => a.config.join_token_ttl,
            t if t > 0 => Duration::from_secs(t as u64),
            _ => return Err(ApiError::InvalidArgument("ttl: must be positive".into()).into()),
        };
        let token = join_token::generate();
        let expires_at = UnixTime::now().plus(ttl);
        a.datastore
            .create_join_token(&token, expires_at)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GenerateTokenResponse {
            token,
            expires_at: expires_at.secs(),
        }))
    }

    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agents = self
            .0
            .datastore
            .list_agents()
            .await
            .map_err(ApiError::from)?;
        let agents = agents.into_iter().map(agent_to_pb).collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn get_agent(&self, req: Request<pb::AgentId>) -> Result<Response<pb::Agent>, Status> {
        let id = &req.get_ref().id;
        match self
            .0
            .datastore
            .get_agent(id)
            .await
            .map_err(ApiError::from)?
        {
            Some(a) => Ok(Response::new(agent_to_pb(a))),
            None => Err(ApiError::NotFound(format!("agent {id:?} is not known")).into()),
        }
    }

    async fn evict_agent(&self, req: Request<pb::AgentId>) -> Result<Response<pb::Empty>, Status> {
        let id = &req.get_ref().id;
        if !self
            .0
            .datastore
            .evict_agent(id)
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::NotFound(format!("agent {id:?} is not known")).into());
        }
        tracing::warn!(agent_id = %id, "agent evicted");
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_bundle(
        &self,
        _: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        Ok(Response::new(self.0.bundle()))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = req.into_inner();
        let filter = AuditFilter {
            spiffe_id: non_empty(r.spiffe_id),
            agent_id: non_empty(r.agent_id),
            since: (r.since != 0).then(|| UnixTime::from_secs(r.since)),
            until: (r.until != 0).then(|| UnixTime::from_secs(r.until)),
            limit: (r.limit > 0).then_some(r.limit),
        };
        let events = self
            .0
            .datastore
            .list_audit(&filter)
            .await
            .map_err(ApiError::from)?;
        let events = events
            .into_iter()
            .map(|e| pb::AuditEvent {
                id: e.id.unwrap_or(0),
                time: e.time.secs(),
                kind: e.kind.to_string(),
                agent_id: e.agent_id.to_string(),
                node_selectors: e.node_selectors.into_iter().map(Into::into).collect(),
                entry_id: e.entry_id,
                spiffe_id: e
                    .spiffe_id
                    .as_ref()
                    .map_or("", SpiffeId::as_str)
                    .to_string(),
                serial: e.serial,
                expires_at: e.expires_at.map_or(0, UnixTime::secs),
                audience: e.audience,
                detail: e.detail,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse {
            events,
            limit: filter.effective_limit(),
        }))
    }
}
