//! The authority's state and the rules that do not depend on the transport:
//! who an agent is, which entries it may sign for, the bundle.

use crate::attestation::NodeVerifier;
use crate::authorized;
use crate::ca::{authority_id, Ca};
use crate::config::Config;
use crate::datastore::{AgentRecord, Datastore, Entry, EntrySpiffeId, NewEntry};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::reserved;
use std::sync::Arc;
use std::time::Duration;
use tessera_common::jwt::{JwtBundle, JwtSigner};
use tessera_common::{x509, Selector, SpiffeId, UnixTime};
use tessera_proto::authority as pb;

pub struct Authority {
    pub config: Config,
    pub datastore: Datastore,
    pub ca: Ca,
    pub jwt: JwtSigner,
    pub verifiers: Vec<Arc<dyn NodeVerifier>>,
    pub metrics: Arc<Metrics>,
    /// Turns true when the authority stops: open attestation exchanges end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Caps Attest exchanges in progress.
    pub attest_gate: crate::limits::gate::AttestGate,
    /// JWT-SVID minting and its audit rows, per agent.
    pub jwt_limits: crate::limits::jwt::JwtLimiter,
    /// Caps the distinct expansions of templated entries each agent gets.
    pub expansions: crate::template_sign::ExpansionLimit,
}

impl Authority {
    pub fn verifier(&self, method: &str) -> Option<Arc<dyn NodeVerifier>> {
        self.verifiers
            .iter()
            .find(|v| v.method() == method)
            .cloned()
    }

    pub fn bundle(&self) -> pb::Bundle {
        let jwks = JwtBundle::from_keys(vec![self.jwt.public_jwk()])
            .map(|b| b.to_jwks_json())
            .unwrap_or_default();
        pb::Bundle {
            trust_domain: self.config.trust_domain.name().to_string(),
            x509_authorities: x509::join_der(self.ca.roots()),
            jwt_authorities: jwks,
            sequence: 1,
        }
    }

    /// Entries the agent may sign for (see `authorized`).
    pub async fn authorized_entries(&self, agent: &AgentRecord) -> Result<Vec<Entry>, ApiError> {
        let authority = self.authority_id()?;
        Ok(authorized::entries_for(&self.datastore, agent, &authority, UnixTime::now()).await?)
    }

    /// Of the entries `ids`, those the agent may sign for: any other is absent.
    pub async fn authorized_among(
        &self,
        agent: &AgentRecord,
        ids: &[String],
    ) -> Result<Vec<Entry>, ApiError> {
        let authority = self.authority_id()?;
        let now = UnixTime::now();
        Ok(authorized::entries_among(&self.datastore, agent, &authority, ids, now).await?)
    }

    fn authority_id(&self) -> Result<SpiffeId, ApiError> {
        authority_id(&self.config.trust_domain).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The ID to sign for `entry` (see `template_sign`), within the agent's
    /// budget of distinct expansions.
    pub fn signed_id(
        &self,
        agent: &SpiffeId,
        entry: &Entry,
        requested: &str,
        now: UnixTime,
    ) -> Result<crate::template_sign::SignedId, ApiError> {
        let signed = crate::template_sign::signed_id(&self.authority_id()?, entry, requested)?;
        if signed.template.is_some() {
            self.expansions
                .admit(agent.as_str(), &entry.id, signed.id.as_str(), now.secs())?;
        }
        Ok(signed)
    }

    /// The entry an admin asked for, once it passes every rule.
    pub fn validate_entry(&self, e: pb::Entry) -> Result<NewEntry, ApiError> {
        let bad = |m: String| Err(ApiError::InvalidArgument(m));
        let spiffe_id = EntrySpiffeId::parse(&e.spiffe_id)
            .map_err(|err| ApiError::InvalidArgument(format!("spiffe_id: {err}")))?;
        let parent = SpiffeId::parse_workload(&e.parent_id)
            .map_err(|err| ApiError::InvalidArgument(format!("parent_id: {err}")))?;
        let id = spiffe_id.sample();
        if id.trust_domain() != self.config.trust_domain {
            return bad(format!(
                "spiffe_id: {id} is not in trust domain {}",
                self.config.trust_domain
            ));
        }
        if parent.trust_domain() != self.config.trust_domain {
            return bad(format!(
                "parent_id: {parent} is not in trust domain {}",
                self.config.trust_domain
            ));
        }
        if let Some(why) = reserved::violation(&self.authority_id()?, &e.spiffe_id, &e.parent_id) {
            return bad(why);
        }
        if matches!(spiffe_id, EntrySpiffeId::Template(_)) && parent == self.authority_id()? {
            return bad("spiffe_id: a node alias cannot be a template".into());
        }
        if e.selectors.is_empty() {
            return bad("selectors: at least one selector is required".into());
        }
        for s in &e.selectors {
            // Parsed joined, `unix:path` + `/x` would pass, and never match anything.
            if s.r#type.contains(':') {
                return bad(format!("selector: type {:?} contains ':'", s.r#type));
            }
            Selector::parse(&format!("{}:{}", s.r#type, s.value))
                .map_err(|err| ApiError::InvalidArgument(format!("selector: {err}")))?;
        }
        if e.x509_ttl < 0 || e.jwt_ttl < 0 {
            return bad("ttl: must not be negative".into());
        }
        if e.expires_at < 0 {
            return bad("expires_at: must not be negative".into());
        }
        for d in &e.dns_names {
            if d.is_empty()
                || d.len() > 253
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b))
            {
                return bad(format!("dns_names: {d:?} is not a DNS name"));
            }
        }
        if e.hint.len() > 256 {
            return bad("hint: longer than 256 bytes".into());
        }
        // Zero means "not set" in the admin API.
        Ok(NewEntry {
            spiffe_id,
            parent_id: parent,
            selectors: e.selectors.iter().map(Selector::from).collect(),
            x509_ttl: ttl(e.x509_ttl),
            jwt_ttl: ttl(e.jwt_ttl),
            dns_names: e.dns_names,
            hint: e.hint,
            admin: e.admin,
            expires_at: (e.expires_at > 0).then(|| UnixTime::from_secs(e.expires_at)),
        })
    }
}

/// An entry TTL as the admin API sends it: whole seconds, 0 (or less) for none.
pub fn ttl(secs: i64) -> Option<Duration> {
    u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}
