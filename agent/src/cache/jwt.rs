//! JWT-SVIDs are minted on demand and cached per (entry, audience set) until
//! half their lifetime; a cached token still valid is served when the
//! authority is slow or down.

use crate::authority_client::{AuthorityClient, AuthorityError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Most cached tokens; beyond it expired ones go first, then everything.
const MAX_CACHED: usize = 4096;
/// How long a caller waits for the authority before a still-valid cached token is served.
const UPSTREAM_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Cached {
    token: String,
    issued: i64,
    expires: i64,
}

/// (entry id, expansion or "", audience set).
type JwtKey = (String, String, Vec<String>);

#[derive(Default)]
pub struct JwtCache {
    map: Mutex<HashMap<JwtKey, Cached>>,
}

impl JwtCache {
    pub async fn get(
        &self,
        authority: &dyn AuthorityClient,
        entry_id: &str,
        spiffe_id: &str,
        audience: &[String],
        now: i64,
    ) -> Result<String, AuthorityError> {
        let mut aud = audience.to_vec();
        aud.sort();
        aud.dedup();
        let key = (entry_id.to_string(), spiffe_id.to_string(), aud);
        let cached = self.map.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(c) = &cached {
            if now < c.issued + (c.expires - c.issued) / 2 {
                return Ok(c.token.clone());
            }
        }
        let fresh = tokio::time::timeout(
            UPSTREAM_WAIT,
            authority.sign_jwt(entry_id, spiffe_id, audience),
        )
        .await;
        match (fresh, cached) {
            (Ok(Ok(r)), _) => {
                // The token's own exp bounds how long it is served, whatever the reply said.
                let expires = exp_claim(&r.token).map_or(r.expires_at, |e| e.min(r.expires_at));
                self.insert(
                    key,
                    Cached {
                        token: r.token.clone(),
                        issued: now,
                        expires,
                    },
                    now,
                );
                Ok(r.token)
            }
            // A cached token stands in only while the authority cannot answer:
            // a refusal is final.
            (Ok(Err(e)), Some(c)) if e.is_transient() && c.expires > now + 1 => Ok(c.token),
            (Err(_), Some(c)) if c.expires > now + 1 => Ok(c.token),
            (Ok(Err(e)), _) => {
                if !e.is_transient() {
                    if let Ok(mut m) = self.map.lock() {
                        m.remove(&key);
                    }
                }
                Err(e)
            }
            (Err(_), _) => Err(AuthorityError::RetryLater(
                "the authority did not answer in time".into(),
            )),
        }
    }

    fn insert(&self, key: JwtKey, value: Cached, now: i64) {
        let Ok(mut m) = self.map.lock() else { return };
        if m.len() >= MAX_CACHED {
            m.retain(|_, c| c.expires > now);
            if m.len() >= MAX_CACHED {
                m.clear();
            }
        }
        m.insert(key, value);
    }

    /// Forgets tokens of entries no longer held (e.g. after a deletion).
    pub fn retain_entries(&self, live: &[&str]) {
        if let Ok(mut m) = self.map.lock() {
            m.retain(|(id, _, _), _| live.contains(&id.as_str()));
        }
    }
}

/// The `exp` claim of a compact JWS, unverified (the authority signed it).
fn exp_claim(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&json)
        .ok()?
        .get("exp")?
        .as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jws(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b64(r#"{"alg":"ES256"}"#), b64(claims))
    }

    #[test]
    fn exp_is_read_from_the_token() {
        assert_eq!(
            exp_claim(&jws(r#"{"sub":"x","exp":1800000000}"#)),
            Some(1_800_000_000)
        );
        assert_eq!(exp_claim(&jws(r#"{"sub":"x"}"#)), None);
        assert_eq!(exp_claim("not a jwt"), None);
        assert_eq!(exp_claim("a.!!!.c"), None);
    }
}
