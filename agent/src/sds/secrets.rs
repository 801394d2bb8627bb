//! SDS resources built from a snapshot and the caller's selectors; pure, so
//! the naming rules are unit-tested without a socket.

use super::names::{SdsNames, Wanted};
use crate::cache::{Bundle, CachedSvid, Snapshot};
use crate::workload_api::{identities, WorkloadError};
use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;
use tessera_common::x509;
use tessera_common::Selector;

pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// One answer's resources, the X.509-SVIDs among them (for the issuance log)
/// and its version: a digest of the resources, so the same content always has
/// the same version and a push happens only when what was asked for changed.
pub struct Secrets {
    pub resources: Vec<Any>,
    pub svids: Vec<Arc<CachedSvid>>,
    pub version: String,
}

/// The resources hold the SVIDs' private keys, encoded: only their count prints.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("resources", &self.resources.len())
            .field("svids", &self.svids)
            .field("version", &self.version)
            .finish()
    }
}

/// The resources named in `asked` (every bundle and SVID when it is empty, as
/// SPIRE does). A name the caller has nothing for fails the whole answer, as
/// in SPIRE, so a typo or a lost entitlement shows in Envoy's log.
pub fn build(
    snap: &Snapshot,
    selectors: &[Selector],
    names: &SdsNames,
    asked: &BTreeSet<String>,
) -> Result<Secrets, WorkloadError> {
    let ids = unique(identities(snap, selectors)?);
    let own = snap.bundle.as_deref().ok_or(WorkloadError::NotSynced)?;
    // The agent holds one bundle (no federation yet); ALL is written for many.
    let bundles = [own];
    let mut resources = Vec::new();
    let mut svids = Vec::new();
    let mut missing = Vec::new();
    let mut add_svid = |name: &str, s: &Arc<CachedSvid>| -> Result<(), WorkloadError> {
        resources.push(pack(&tls_certificate(name, s)?));
        svids.push(s.clone());
        Ok(())
    };
    let mut vcs = Vec::new();
    if asked.is_empty() {
        for b in bundles {
            vcs.push(validation_context(&b.trust_domain, &[b])?);
        }
        for s in &ids {
            add_svid(s.spiffe_id.as_str(), s)?;
        }
    }
    for name in asked {
        match names.classify(name) {
            Wanted::DefaultSvid => {
                let first = ids.first().ok_or(WorkloadError::NoIdentity)?;
                add_svid(name, first)?
            }
            Wanted::DefaultBundle => vcs.push(validation_context(name, &[own])?),
            Wanted::AllBundles => vcs.push(validation_context(name, &bundles)?),
            Wanted::Bundle(td) => match bundles.iter().find(|b| b.trust_domain == td) {
                Some(b) => vcs.push(validation_context(name, &[*b])?),
                None => missing.push(name.as_str()),
            },
            Wanted::Svid(id) => match ids.iter().find(|s| s.spiffe_id.as_str() == id) {
                Some(s) => add_svid(name, s)?,
                None => missing.push(name.as_str()),
            },
        }
    }
    if let Some(first) = missing.first() {
        // Names come from the client: the error names the first, not all.
        let more = match missing.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        return Err(WorkloadError::NotEntitled(format!(
            "the SDS resource {first:?}{more}"
        )));
    }
    resources.extend(vcs.iter().map(pack));
    let version = version_of(&resources);
    Ok(Secrets {
        resources,
        svids,
        version,
    })
}

/// The caller's identities, the first of each SPIFFE ID only: resource names are unique.
fn unique(ids: Vec<Arc<CachedSvid>>) -> Vec<Arc<CachedSvid>> {
    let mut seen = BTreeSet::new();
    ids.into_iter()
        .filter(|s| seen.insert(s.spiffe_id.to_string()))
        .collect()
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

fn der_chain_to_pem(der: &[u8], what: &str) -> Result<String, WorkloadError> {
    let certs = x509::split_der_chain(der)
        .map_err(|e| WorkloadError::Internal(format!("{what} does not parse: {e}")))?;
    Ok(x509::certs_to_pem(&certs))
}

fn tls_certificate(name: &str, s: &CachedSvid) -> Result<Secret, WorkloadError> {
    let chain = der_chain_to_pem(&s.chain, "the X.509-SVID chain")?;
    let key = x509::pem_block("PRIVATE KEY", &s.key);
    Ok(Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain.into_bytes()),
            private_key: inline(key.into_bytes()),
            ..Default::default()
        })),
    })
}

fn validation_context(name: &str, bundles: &[&Bundle]) -> Result<Secret, WorkloadError> {
    let mut pem = String::new();
    for b in bundles {
        pem.push_str(&der_chain_to_pem(&b.x509_der, "the X.509 bundle")?);
    }
    Ok(Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(pem.into_bytes()),
                ..Default::default()
            },
        )),
    })
}

fn pack(s: &Secret) -> Any {
    Any {
        type_url: SECRET_TYPE.to_string(),
        value: s.encode_to_vec(),
    }
}

fn version_of(resources: &[Any]) -> String {
    let mut h = Sha256::new();
    for r in resources {
        h.update((r.value.len() as u64).to_be_bytes());
        h.update(&r.value);
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
