//! The admin commands: thin clients of the admin API on the Unix socket.

mod data_file;
pub mod entries;
pub mod records;
pub mod times;

use crate::server::BoxError;
use records::Output;
use std::path::Path;
use tessera_common::x509;
use tessera_proto::authority as pb;
use tessera_proto::authority::admin_client::AdminClient;
use tonic::transport::Channel;

pub async fn client(socket: &Path) -> Result<AdminClient<Channel>, BoxError> {
    let ch = tessera_common::uds::connect(socket).await.map_err(|e| {
        format!(
            "admin socket {}: cannot connect ({e}); is the authority running?",
            socket.display()
        )
    })?;
    Ok(AdminClient::new(ch))
}

pub async fn token_generate(
    socket: &Path,
    ttl: Option<std::time::Duration>,
    out: Output,
) -> Result<(), BoxError> {
    let req = pb::GenerateTokenRequest {
        ttl: ttl.map(|d| d.as_secs() as i64).unwrap_or(0),
    };
    let t = client(socket)
        .await?
        .generate_token(req)
        .await?
        .into_inner();
    match out {
        Output::Text => println!("{}", t.token),
        Output::Json => records::print_json(&serde_json::json!({
            "token": t.token,
            "expires_at": times::rfc3339(t.expires_at),
        }))?,
    }
    Ok(())
}

pub async fn agent_list(socket: &Path, out: Output) -> Result<(), BoxError> {
    let agents = client(socket)
        .await?
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    match out {
        Output::Text => {
            println!("Found {} agents", agents.len());
            agents.iter().for_each(records::print_agent);
        }
        Output::Json => records::print_json(
            &serde_json::json!({ "agents": agents.iter().map(records::agent).collect::<Vec<_>>() }),
        )?,
    }
    Ok(())
}

pub async fn agent_show(socket: &Path, id: String, out: Output) -> Result<(), BoxError> {
    let a = client(socket)
        .await?
        .get_agent(pb::AgentId { id })
        .await?
        .into_inner();
    match out {
        Output::Text => records::print_agent(&a),
        Output::Json => records::print_json(&records::agent(&a))?,
    }
    Ok(())
}

pub async fn agent_evict(socket: &Path, id: String) -> Result<(), BoxError> {
    client(socket)
        .await?
        .evict_agent(pb::AgentId { id: id.clone() })
        .await?;
    println!("evicted {}", records::shown(&id));
    Ok(())
}

pub async fn bundle_show(socket: &Path, format: &str) -> Result<(), BoxError> {
    let b = client(socket)
        .await?
        .get_bundle(pb::GetBundleRequest {})
        .await?
        .into_inner();
    let certs = x509::split_der_chain(&b.x509_authorities)?;
    match format {
        "pem" => print!("{}", x509::certs_to_pem(&certs)),
        _ => println!(
            "{}",
            serde_json::to_string_pretty(&spiffe_bundle(&b, &certs)?)?
        ),
    }
    Ok(())
}

/// The SPIFFE bundle format (SPIFFE_Trust_Domain_and_Bundle §4) for export and federation.
fn spiffe_bundle(
    b: &pb::Bundle,
    certs: &[rustls_pki_types::CertificateDer<'_>],
) -> Result<serde_json::Value, BoxError> {
    use base64::Engine;
    let mut keys = Vec::new();
    for c in certs {
        let (_, parsed) = x509_parser::parse_x509_certificate(c)
            .map_err(|e| format!("bundle certificate: {e}"))?;
        let mut jwk = spki_jwk(parsed.public_key())?;
        jwk["use"] = "x509-svid".into();
        jwk["x5c"] = serde_json::json!([base64::engine::general_purpose::STANDARD.encode(c)]);
        keys.push(jwk);
    }
    let jwks: serde_json::Value = serde_json::from_slice(&b.jwt_authorities)?;
    for k in jwks["keys"].as_array().cloned().unwrap_or_default() {
        let mut k = k;
        k["use"] = "jwt-svid".into();
        keys.push(k);
    }
    Ok(
        serde_json::json!({ "keys": keys, "spiffe_sequence": b.sequence, "spiffe_refresh_hint": 300 }),
    )
}

fn spki_jwk(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<serde_json::Value, BoxError> {
    use base64::Engine;
    use x509_parser::public_key::PublicKey;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    match spki.parsed().map_err(|e| format!("bundle key: {e}"))? {
        PublicKey::EC(p) if p.key_size() == 256 || p.key_size() == 384 => {
            let data = p.data();
            let n = (data.len() - 1) / 2;
            let crv = if p.key_size() == 256 {
                "P-256"
            } else {
                "P-384"
            };
            Ok(
                serde_json::json!({"kty": "EC", "crv": crv, "x": b64(&data[1..1 + n]), "y": b64(&data[1 + n..])}),
            )
        }
        PublicKey::RSA(r) => {
            Ok(serde_json::json!({"kty": "RSA", "n": b64(r.modulus), "e": b64(r.exponent)}))
        }
        _ => Err("bundle key: unsupported key type".into()),
    }
}

/// `audit` filters; times in Unix seconds, `since` inclusive, `until` exclusive.
#[derive(Default)]
pub struct AuditArgs {
    pub spiffe_id: Option<String>,
    pub agent: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: Option<u32>,
}

pub async fn audit(socket: &Path, a: AuditArgs, out: Output) -> Result<(), BoxError> {
    if let (Some(s), Some(u)) = (a.since, a.until) {
        if s >= u {
            return Err(format!(
                "--since ({}) must be before --until ({})",
                times::rfc3339(s),
                times::rfc3339(u)
            )
            .into());
        }
    }
    let req = pb::ListAuditRequest {
        spiffe_id: a.spiffe_id.unwrap_or_default(),
        agent_id: a.agent.unwrap_or_default(),
        limit: a.limit.unwrap_or(0),
        since: a.since.unwrap_or(0),
        until: a.until.unwrap_or(0),
    };
    let resp = client(socket).await?.list_audit(req).await?.into_inner();
    let events = resp.events;
    if let Some(w) = truncation_warning(events.len(), resp.limit) {
        eprintln!("{w}");
    }
    match out {
        Output::Text => events.iter().for_each(records::print_audit),
        Output::Json => records::print_json(
            &serde_json::json!({ "events": events.iter().map(records::audit).collect::<Vec<_>>() }),
        )?,
    }
    Ok(())
}

/// Events come newest first, so a full answer may have left out the oldest of
/// the window: say so on stderr (stdout stays one valid document).
fn truncation_warning(got: usize, limit: u32) -> Option<String> {
    (limit > 0 && got >= limit as usize).then(|| {
        format!(
            "warning: audit: {got} events, the limit ({limit}); older events in the window \
             may be missing: narrow it (a later --since, --until, --spiffe-id, --agent) \
             or raise --limit (at most {})",
            crate::datastore::AUDIT_MAX_LIMIT
        )
    })
}

#[cfg(test)]
mod tests {
    use super::truncation_warning;

    #[test]
    fn a_full_answer_warns_naming_the_limit() {
        assert_eq!(truncation_warning(999, 1000), None);
        assert_eq!(truncation_warning(0, 0), None);
        let w = truncation_warning(1000, 1000).unwrap();
        assert!(
            w.contains("(1000)") && w.contains("--since") && w.contains("--limit"),
            "{w}"
        );
        assert!(!w.contains('\n'), "{w}");
    }
}
