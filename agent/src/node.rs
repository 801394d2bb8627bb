//! The agent SVID: the node attestation and renewal exchanges that obtain it,
//! and its copy in `data_dir` (so a restarted agent resumes without a new token).

use crate::authority_client::AuthorityError;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData};
use rustls::pki_types::CertificateDer;
use std::path::Path;
use tessera_attestors::node::NodeEvidence;
use tessera_common::secret::{SecretBytes, SecretString};
use tessera_common::{fsutil, tls, unix_now, x509, SpiffeId, TrustDomain};
use tessera_proto::authority as pb;
use tessera_proto::authority::node_client::NodeClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Reads a failed call's status (the client counts it and notes its retry hint).
pub type Failed<'a> = &'a (dyn Fn(&'static str, tonic::Status) -> AuthorityError + Sync);

/// The agent's X.509-SVID, its key, and the bundle it chains to.
#[derive(Clone)]
pub struct AgentSvid {
    pub id: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER, wiped on drop; rcgen's `KeyPair` it came from keeps its own copy.
    pub key_pkcs8: SecretBytes,
    /// Start of the lifetime for renewal timing: notBefore, or when the SVID
    /// arrived if later (the authority back-dates notBefore for clock skew).
    pub issued_at: i64,
    pub not_after: i64,
    pub bundle_roots: Vec<CertificateDer<'static>>,
}

/// What fails on this host around the agent SVID; the authority's answers are
/// [`AuthorityError`]s.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// `data_dir` could not hold or give back the agent SVID.
    #[error("{path}: {reason}")]
    Store { path: String, reason: String },
}

/// A fresh P-256 key and a CSR for it. The authority decides every name.
/// A failure here is this host's (its RNG), never the authority's refusal.
pub fn key_and_csr() -> Result<(KeyPair, Vec<u8>), AuthorityError> {
    let local = |e: rcgen::Error| AuthorityError::RetryLater(format!("new key and CSR: {e}"));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(local)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(local)?;
    Ok((key, csr.der().to_vec()))
}

/// Checks an SVID chain the authority returned: leaf for `key`, chaining to
/// `roots`, naming an ID in `td`.
pub fn check_chain(
    der: &[u8],
    key: &KeyPair,
    roots: &[CertificateDer<'static>],
    td: &TrustDomain,
) -> Result<(Vec<CertificateDer<'static>>, SpiffeId, i64, i64), AuthorityError> {
    let bad = |m: String| AuthorityError::InvalidResponse(format!("a bad SVID: {m}"));
    let chain = x509::split_der_chain(der).map_err(|e| bad(e.to_string()))?;
    let leaf = &chain[0];
    let id = x509::spiffe_id_of(leaf).map_err(|e| bad(e.to_string()))?;
    if &id.trust_domain() != td {
        return Err(bad(format!("{id} is not in {td}")));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(bad("certificate is not for our key".into()));
    }
    verify_chain(&chain, roots).map_err(bad)?;
    let nb = x509::not_before(leaf).map_err(|e| bad(e.to_string()))?;
    let na = x509::not_after(leaf).map_err(|e| bad(e.to_string()))?;
    Ok((chain, id, nb, na))
}

fn verify_chain(
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
) -> Result<(), String> {
    let anchors = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let ee = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| e.to_string())?;
    let algs = tls::provider().signature_verification_algorithms;
    ee.verify_for_usage(
        algs.all,
        &anchors,
        &chain[1..],
        rustls::pki_types::UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("does not chain to the trust bundle: {e}"))
}

/// Attests the node over `client`: opens the attestation stream, answers
/// challenges, and returns the new agent SVID. With `known_roots` (a
/// configured or earlier bundle) the answer's bundle must contain one of them.
pub async fn attest(
    mut client: NodeClient<Channel>,
    td: &TrustDomain,
    known_roots: Option<&[CertificateDer<'static>]>,
    evidence: &dyn NodeEvidence,
    failed: Failed<'_>,
) -> Result<AgentSvid, AuthorityError> {
    // The TPM or the event log failing now may pass: this host's trouble, not a refusal.
    let local = |e: tessera_attestors::node::EvidenceError| {
        AuthorityError::RetryLater(format!("node evidence: {e}"))
    };
    // Evidence first: at start the key waits for the random generator's
    // seeding (see `run::seed_rng`), which runs meanwhile.
    let payload = evidence.evidence().await.map_err(local)?;
    let (key, csr) = key_and_csr()?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let begin = pb::AttestBegin {
        method: evidence.method().to_string(),
        payload,
        csr,
    };
    tx.send(pb::AttestRequest {
        step: Some(pb::attest_request::Step::Begin(begin)),
    })
    .await
    .map_err(|_| AuthorityError::RetryLater("attestation stream closed".into()))?;
    let mut responses = client
        .attest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| failed("Attest", s))?
        .into_inner();
    while let Some(msg) = responses.next().await {
        match msg.map_err(|s| failed("Attest", s))?.step {
            Some(pb::attest_response::Step::Challenge(c)) => {
                let answer = evidence.respond(&c).await.map_err(local)?;
                tx.send(pb::AttestRequest {
                    step: Some(pb::attest_request::Step::ChallengeResponse(answer)),
                })
                .await
                .map_err(|_| AuthorityError::RetryLater("attestation stream closed".into()))?;
            }
            Some(pb::attest_response::Step::Result(r)) => {
                let bundle = r.bundle.ok_or_else(|| {
                    AuthorityError::InvalidResponse("attestation result without a bundle".into())
                })?;
                let roots = x509::split_der_chain(&bundle.x509_authorities)
                    .map_err(|e| AuthorityError::InvalidResponse(format!("bundle: {e}")))?;
                // With a configured bundle the first TLS handshake already proved
                // the authority; the bundle it returns must contain what we trusted.
                if let Some(known) = known_roots {
                    if !known.iter().any(|k| roots.contains(k)) {
                        return Err(AuthorityError::InvalidResponse(
                            "authority's bundle does not contain the configured trust bundle"
                                .into(),
                        ));
                    }
                }
                let (chain, id, nb, na) = check_chain(&r.svid_chain, &key, &roots, td)?;
                if id.as_str() != r.agent_id {
                    return Err(AuthorityError::InvalidResponse(format!(
                        "SVID names {id}, result names {}",
                        r.agent_id
                    )));
                }
                return Ok(AgentSvid {
                    id,
                    chain,
                    key_pkcs8: key.serialize_der().into(),
                    issued_at: nb.max(unix_now()),
                    not_after: na,
                    bundle_roots: roots,
                });
            }
            None => {}
        }
    }
    Err(AuthorityError::RetryLater(
        "attestation stream ended without a result".into(),
    ))
}

/// Renews the agent SVID over `client`, mTLS with the current one.
pub async fn renew(
    mut client: NodeClient<Channel>,
    td: &TrustDomain,
    current: &AgentSvid,
    failed: Failed<'_>,
) -> Result<AgentSvid, AuthorityError> {
    let (key, csr) = key_and_csr()?;
    let resp = client
        .renew_agent(pb::RenewAgentRequest { csr })
        .await
        .map_err(|s| failed("RenewAgent", s))?
        .into_inner();
    let roots = match resp.bundle {
        Some(b) => x509::split_der_chain(&b.x509_authorities)
            .map_err(|e| AuthorityError::InvalidResponse(format!("bundle: {e}")))?,
        None => current.bundle_roots.clone(),
    };
    let (chain, id, nb, na) = check_chain(&resp.svid_chain, &key, &roots, td)?;
    if id != current.id {
        return Err(AuthorityError::InvalidResponse(format!(
            "renewed SVID names {id}, expected {}",
            current.id
        )));
    }
    Ok(AgentSvid {
        id,
        chain,
        key_pkcs8: key.serialize_der().into(),
        issued_at: nb.max(unix_now()),
        not_after: na,
        bundle_roots: roots,
    })
}

pub(crate) const SVID_FILE: &str = "agent_svid.pem";
pub(crate) const KEY_FILE: &str = "agent_key.pem";
pub(crate) const BUNDLE_FILE: &str = "bundle.pem";
/// The whole set being saved (key, chain, bundle), written before the three
/// files: a kill between their writes leaves a set `load` can complete.
pub(crate) const PENDING_FILE: &str = "agent_svid.pending";
/// The PEM label of a bundle certificate in the pending file.
const ROOT_LABEL: &str = "TESSERA BUNDLE CERTIFICATE";

impl AgentSvid {
    /// Writes SVID, key (0600) and bundle; each file atomically, and the set
    /// as one file first, so a crash at any point leaves a loadable set.
    pub fn save(&self, dir: &Path) -> Result<(), NodeError> {
        let store = |name: &str, data: &[u8], mode| {
            let p = dir.join(name);
            fsutil::write_atomic(&p, data, mode).map_err(|e| NodeError::Store {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
        };
        store(PENDING_FILE, self.pending_pem().expose().as_bytes(), 0o600)?;
        store(
            KEY_FILE,
            SecretString::new(x509::pem_block("PRIVATE KEY", &self.key_pkcs8))
                .expose()
                .as_bytes(),
            0o600,
        )?;
        store(SVID_FILE, x509::certs_to_pem(&self.chain).as_bytes(), 0o644)?;
        store(
            BUNDLE_FILE,
            x509::certs_to_pem(&self.bundle_roots).as_bytes(),
            0o644,
        )?;
        let pending = dir.join(PENDING_FILE);
        std::fs::remove_file(&pending).map_err(|e| NodeError::Store {
            path: pending.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Key, chain and bundle in one PEM file.
    fn pending_pem(&self) -> SecretString {
        let roots: String = self
            .bundle_roots
            .iter()
            .map(|c| x509::pem_block(ROOT_LABEL, c.as_ref()))
            .collect();
        let key = SecretString::new(x509::pem_block("PRIVATE KEY", &self.key_pkcs8));
        SecretString::new(format!(
            "{}{}{roots}",
            key.expose(),
            x509::certs_to_pem(&self.chain)
        ))
    }

    /// Loads a stored SVID if there is one that is still valid for `td`,
    /// completing a save a crash interrupted.
    pub fn load(dir: &Path, td: &TrustDomain) -> Result<Option<AgentSvid>, NodeError> {
        if let Some(svid) = Self::load_pending(dir, td) {
            tracing::info!("completing an interrupted save of the agent SVID");
            svid.save(dir)?;
            return Ok(Some(svid));
        }
        let svid_path = dir.join(SVID_FILE);
        if !svid_path.exists() {
            return Ok(None);
        }
        let err = |p: &Path, e: String| NodeError::Store {
            path: p.display().to_string(),
            reason: e,
        };
        let read = |p: &Path| std::fs::read(p).map_err(|e| err(p, e.to_string()));
        let key_path = dir.join(KEY_FILE);
        let key_file = SecretBytes::new(read(&key_path)?);
        let key_pem = std::str::from_utf8(&key_file).map_err(|e| err(&key_path, e.to_string()))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| err(&key_path, e.to_string()))?;
        let bundle_path = dir.join(BUNDLE_FILE);
        let roots = x509::certs_from_pem(&read(&bundle_path)?)
            .map_err(|e| err(&bundle_path, e.to_string()))?;
        let chain =
            x509::certs_from_pem(&read(&svid_path)?).map_err(|e| err(&svid_path, e.to_string()))?;
        Ok(Self::from_parts(&key, &chain, roots, td))
    }

    /// The set a save wrote before it was interrupted, if it is whole and usable.
    fn load_pending(dir: &Path, td: &TrustDomain) -> Option<AgentSvid> {
        let path = dir.join(PENDING_FILE);
        let bytes = SecretBytes::new(std::fs::read(&path).ok()?);
        let (mut key, mut chain, mut roots) = (None, Vec::new(), Vec::new());
        for block in pem::parse_many(&bytes).ok()? {
            match block.tag() {
                "PRIVATE KEY" => key = Some(SecretBytes::new(block.into_contents())),
                "CERTIFICATE" => chain.push(CertificateDer::from(block.into_contents())),
                ROOT_LABEL => roots.push(CertificateDer::from(block.into_contents())),
                _ => {}
            }
        }
        let svid = key
            .and_then(|k| KeyPair::try_from(&*k).ok())
            .and_then(|k| Self::from_parts(&k, &chain, roots, td));
        if svid.is_none() {
            tracing::warn!(path = %path.display(), "unusable pending agent SVID; removing it");
            let _ = std::fs::remove_file(&path);
        }
        svid
    }

    fn from_parts(
        key: &KeyPair,
        chain: &[CertificateDer<'static>],
        roots: Vec<CertificateDer<'static>>,
        td: &TrustDomain,
    ) -> Option<AgentSvid> {
        let (chain, id, nb, na) = match check_chain(&x509::join_der(chain), key, &roots, td) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "stored agent SVID is not usable; attesting again");
                return None;
            }
        };
        (na > unix_now()).then(|| AgentSvid {
            id,
            chain,
            key_pkcs8: key.serialize_der().into(),
            issued_at: nb,
            not_after: na,
            bundle_roots: roots,
        })
    }
}

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
