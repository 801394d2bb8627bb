//! The authority's state and the rules that do not depend on the transport:
//! who an agent is, which entries it may sign for, the bundle.

use crate::attestation::NodeVerifier;
use crate::ca::{authority_id, Ca};
use crate::config::Config;
use crate::datastore::{AgentRecord, Datastore, Entry};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::reserved;
use std::sync::Arc;
use tessera_common::jwt::{JwtBundle, JwtSigner};
use tessera_common::selector::all_present;
use tessera_common::spiffe_template::{is_template, SpiffeTemplate};
use tessera_common::{unix_now, x509, Selector, SpiffeId};
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

    /// Entries the agent may sign for: those parented to it, and those parented
    /// to a node alias whose selectors all hold for the agent.
    pub async fn authorized_entries(&self, agent: &AgentRecord) -> Result<Vec<Entry>, ApiError> {
        let now = unix_now();
        let all = self.datastore.list_entries().await?;
        Ok(authorized(&all, agent, &self.authority_id()?, now))
    }

    fn authority_id(&self) -> Result<SpiffeId, ApiError> {
        authority_id(&self.config.trust_domain).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The ID to sign for `entry` (see `template_sign`), within the agent's
    /// budget of distinct expansions.
    pub fn signed_id(
        &self,
        agent: &str,
        entry: &Entry,
        requested: &str,
        now: i64,
    ) -> Result<crate::template_sign::SignedId, ApiError> {
        let signed = crate::template_sign::signed_id(&self.authority_id()?, entry, requested)?;
        if signed.template.is_some() {
            self.expansions
                .admit(agent, &entry.id, signed.id.as_str(), now)?;
        }
        Ok(signed)
    }

    pub fn validate_entry(&self, e: &pb::Entry) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::InvalidArgument(m));
        let id = entry_id_or_sample(&e.spiffe_id)
            .map_err(|err| ApiError::InvalidArgument(format!("spiffe_id: {err}")))?;
        let parent = SpiffeId::parse_workload(&e.parent_id)
            .map_err(|err| ApiError::InvalidArgument(format!("parent_id: {err}")))?;
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
        if is_template(&e.spiffe_id) && e.parent_id == self.authority_id()?.as_str() {
            return bad("spiffe_id: a node alias cannot be a template".into());
        }
        if e.selectors.is_empty() {
            return bad("selectors: at least one selector is required".into());
        }
        for s in &e.selectors {
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
        Ok(())
    }
}

/// The entry's SPIFFE ID, or for a template a sample expansion (to check the
/// trust domain and reserved names against).
fn entry_id_or_sample(s: &str) -> Result<SpiffeId, String> {
    if !is_template(s) {
        return SpiffeId::parse_workload(s).map_err(|e| e.to_string());
    }
    let t = SpiffeTemplate::parse(s).map_err(|e| format!("template {s:?}: {e}"))?;
    Ok(t.sample().clone())
}

fn authorized(all: &[Entry], agent: &AgentRecord, authority: &SpiffeId, now: i64) -> Vec<Entry> {
    let alias_parent = authority.as_str();
    // Stored rows that break the reserved-name rule (written before it existed, or
    // straight into the database) are never signed, nor do they act as aliases.
    let live = |e: &&Entry| {
        e.expires_at.is_none_or(|t| t > now)
            && match reserved::violation(authority, &e.spiffe_id, &e.parent_id) {
                None => true,
                Some(why) => {
                    tracing::warn!(entry_id = %e.id, "entry ignored: {why}");
                    false
                }
            }
    };
    let mut parents = vec![agent.id.clone()];
    parents.extend(
        all.iter()
            .filter(live)
            .filter(|e| e.parent_id == alias_parent && all_present(&e.selectors, &agent.selectors))
            .map(|e| e.spiffe_id.clone()),
    );
    all.iter()
        .filter(live)
        .filter(|e| parents.contains(&e.parent_id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, parent: &str, spiffe: &str, sel: &[&str]) -> Entry {
        Entry {
            id: id.into(),
            spiffe_id: spiffe.into(),
            parent_id: parent.into(),
            selectors: sel.iter().map(|s| Selector::parse(s).unwrap()).collect(),
            ..Default::default()
        }
    }

    fn authority_and_secure_boot_agent() -> (SpiffeId, AgentRecord) {
        let agent = AgentRecord {
            id: "spiffe://td/tessera/agent/a".into(),
            selectors: vec![Selector::parse("tpm:secure_boot:enabled").unwrap()],
            ..Default::default()
        };
        ("spiffe://td/tessera/authority".parse().unwrap(), agent)
    }

    #[test]
    fn agent_gets_own_and_matching_alias_entries_only() {
        let (authority, agent) = authority_and_secure_boot_agent();
        let alias = authority.as_str();
        let all = vec![
            entry(
                "1",
                "spiffe://td/tessera/agent/a",
                "spiffe://td/w1",
                &["unix:uid:0"],
            ),
            entry(
                "2",
                "spiffe://td/tessera/agent/b",
                "spiffe://td/w2",
                &["unix:uid:0"],
            ),
            entry(
                "3",
                alias,
                "spiffe://td/sb-hosts",
                &["tpm:secure_boot:enabled"],
            ),
            entry(
                "4",
                "spiffe://td/sb-hosts",
                "spiffe://td/w4",
                &["unix:uid:0"],
            ),
            entry(
                "5",
                alias,
                "spiffe://td/other",
                &["tpm:secure_boot:disabled"],
            ),
            entry("6", "spiffe://td/other", "spiffe://td/w6", &["unix:uid:0"]),
        ];
        let ids: Vec<_> = authorized(&all, &agent, &authority, 0)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec!["1", "4"]);
    }

    #[test]
    fn stored_entries_with_reserved_ids_are_never_authorized() {
        let (authority, agent) = authority_and_secure_boot_agent();
        let all = vec![
            entry(
                "1",
                "spiffe://td/tessera/agent/a",
                "spiffe://td/tessera/authority",
                &["unix:uid:0"],
            ),
            entry(
                "2",
                authority.as_str(),
                "spiffe://td/tessera/agent/tpm/x",
                &["tpm:secure_boot:enabled"],
            ),
            entry(
                "3",
                "spiffe://td/tessera/agent/tpm/x",
                "spiffe://td/w3",
                &["unix:uid:0"],
            ),
            entry(
                "4",
                "spiffe://td/tessera/agent/a",
                "spiffe://td/w4",
                &["unix:uid:0"],
            ),
        ];
        let ids: Vec<_> = authorized(&all, &agent, &authority, 0)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec!["4"]);
    }

    #[test]
    fn expired_entries_are_not_authorized() {
        let agent = AgentRecord {
            id: "spiffe://td/tessera/agent/a".into(),
            ..Default::default()
        };
        let mut e = entry(
            "1",
            "spiffe://td/tessera/agent/a",
            "spiffe://td/w1",
            &["unix:uid:0"],
        );
        e.expires_at = Some(100);
        let authority: SpiffeId = "spiffe://td/tessera/authority".parse().unwrap();
        assert_eq!(authorized(&[e.clone()], &agent, &authority, 50).len(), 1);
        assert!(authorized(&[e], &agent, &authority, 100).is_empty());
    }
}
