//! The admin commands: thin clients of the admin API on the Unix socket.

use crate::server::BoxError;
use std::path::Path;
use tessera_common::{x509, Selector};
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

pub struct NewEntryArgs {
    pub parent_id: String,
    pub spiffe_id: String,
    pub selectors: Vec<String>,
    pub x509_ttl: Option<std::time::Duration>,
    pub jwt_ttl: Option<std::time::Duration>,
    pub dns: Vec<String>,
    pub hint: Option<String>,
    pub admin: bool,
}

pub async fn entry_create(socket: &Path, a: NewEntryArgs) -> Result<(), BoxError> {
    let selectors = a
        .selectors
        .iter()
        .map(|s| {
            Selector::parse(s)
                .map(pb::Selector::from)
                .map_err(|e| format!("--selector: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let entry = pb::Entry {
        spiffe_id: a.spiffe_id,
        parent_id: a.parent_id,
        selectors,
        x509_ttl: a.x509_ttl.map(|d| d.as_secs() as i64).unwrap_or(0),
        jwt_ttl: a.jwt_ttl.map(|d| d.as_secs() as i64).unwrap_or(0),
        dns_names: a.dns,
        hint: a.hint.unwrap_or_default(),
        admin: a.admin,
        ..Default::default()
    };
    let created = client(socket)
        .await?
        .create_entry(entry)
        .await?
        .into_inner();
    println!("{}", created.id);
    Ok(())
}

fn print_entry(e: &pb::Entry) {
    println!("Entry ID      : {}", e.id);
    println!("SPIFFE ID     : {}", e.spiffe_id);
    println!("Parent ID     : {}", e.parent_id);
    println!("Revision      : {}", e.revision);
    println!("X509-SVID TTL : {}", ttl(e.x509_ttl));
    println!("JWT-SVID TTL  : {}", ttl(e.jwt_ttl));
    for s in &e.selectors {
        println!("Selector      : {}:{}", s.r#type, s.value);
    }
    for d in &e.dns_names {
        println!("DNS name      : {d}");
    }
    if !e.hint.is_empty() {
        println!("Hint          : {}", e.hint);
    }
    println!();
}

fn ttl(secs: i64) -> String {
    if secs == 0 {
        "default".into()
    } else {
        format!("{secs}s")
    }
}

pub async fn entry_list(socket: &Path) -> Result<(), BoxError> {
    let entries = client(socket)
        .await?
        .list_entries(pb::ListEntriesRequest {})
        .await?
        .into_inner()
        .entries;
    println!("Found {} entries", entries.len());
    entries.iter().for_each(print_entry);
    Ok(())
}

pub async fn entry_show(socket: &Path, id: String) -> Result<(), BoxError> {
    let e = client(socket)
        .await?
        .get_entry(pb::EntryId { id })
        .await?
        .into_inner();
    print_entry(&e);
    Ok(())
}

pub async fn entry_delete(socket: &Path, id: String) -> Result<(), BoxError> {
    client(socket)
        .await?
        .delete_entry(pb::EntryId { id: id.clone() })
        .await?;
    println!("deleted {id}");
    Ok(())
}

pub async fn token_generate(
    socket: &Path,
    ttl: Option<std::time::Duration>,
) -> Result<(), BoxError> {
    let req = pb::GenerateTokenRequest {
        ttl: ttl.map(|d| d.as_secs() as i64).unwrap_or(0),
    };
    let t = client(socket)
        .await?
        .generate_token(req)
        .await?
        .into_inner();
    println!("{}", t.token);
    Ok(())
}

pub async fn agent_list(socket: &Path) -> Result<(), BoxError> {
    let agents = client(socket)
        .await?
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    println!("Found {} agents", agents.len());
    for a in agents {
        println!("Agent ID      : {}", a.id);
        println!("Attestation   : {}", a.attestation_method);
        println!("SVID serial   : {}", a.serial);
        println!("SVID expires  : {}", a.expires_at);
        println!("Evicted       : {}", a.evicted);
        for s in &a.selectors {
            println!("Selector      : {}:{}", s.r#type, s.value);
        }
        println!();
    }
    Ok(())
}

pub async fn agent_evict(socket: &Path, id: String) -> Result<(), BoxError> {
    client(socket)
        .await?
        .evict_agent(pb::AgentId { id: id.clone() })
        .await?;
    println!("evicted {id}");
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

pub async fn audit(
    socket: &Path,
    spiffe_id: Option<String>,
    agent: Option<String>,
    limit: Option<u32>,
) -> Result<(), BoxError> {
    let req = pb::ListAuditRequest {
        spiffe_id: spiffe_id.unwrap_or_default(),
        agent_id: agent.unwrap_or_default(),
        limit: limit.unwrap_or(0),
    };
    let events = client(socket)
        .await?
        .list_audit(req)
        .await?
        .into_inner()
        .events;
    for e in events {
        let sel: Vec<String> = e
            .node_selectors
            .iter()
            .map(|s| format!("{}:{}", s.r#type, s.value))
            .collect();
        println!(
            "{}\t{}\tagent={}\tspiffe_id={}\tentry={}\tserial={}\texpires_at={}\taudience={}\tnode_selectors={}{}",
            e.time,
            e.kind,
            e.agent_id,
            e.spiffe_id,
            e.entry_id,
            e.serial,
            e.expires_at,
            e.audience.join(","),
            sel.join(","),
            if e.detail.is_empty() { String::new() } else { format!("\tdetail={}", e.detail) }
        );
    }
    Ok(())
}
