//! A signed chain checked against what was asked, as the cache keeps it.

use crate::cache::entry::Entry;
use crate::cache::rotation::{random_jitter, rotate_at};
use crate::cache::{CachedSvid, Monotonic};
use std::sync::Arc;
use tessera_common::secret::SecretBytes;
use tessera_common::spiffe_template::SpiffeTemplate;
use tessera_common::{x509, SpiffeId};

/// `expansion`: the ID asked for a templated entry (`template`), else the entry's own.
pub(super) fn cached_svid(
    entry: &Arc<Entry>,
    expansion: Option<SpiffeId>,
    template: Option<SpiffeTemplate>,
    chain: Vec<u8>,
    key: SecretBytes,
    now: i64,
) -> Result<CachedSvid, String> {
    let certs = x509::split_der_chain(&chain).map_err(|e| e.to_string())?;
    let leaf = certs.first().ok_or("empty chain")?;
    let id = x509::spiffe_id_of(leaf).map_err(|e| e.to_string())?;
    let want: SpiffeId = match (expansion, &template) {
        (Some(x), Some(_)) => x,
        (None, None) => entry
            .spiffe_id
            .parse()
            .map_err(|e| format!("entry spiffe_id: {e}"))?,
        _ => return Err("an expansion needs its template".into()),
    };
    if id != want {
        return Err(format!("SVID names {id}, entry names {want}"));
    }
    let not_before = x509::not_before(leaf).map_err(|e| e.to_string())?;
    let not_after = x509::not_after(leaf).map_err(|e| e.to_string())?;
    // notBefore is back-dated for clock skew: time rotation from receipt.
    let rotate_at = rotate_at(not_before.max(now), not_after, random_jitter());
    Ok(CachedSvid {
        entry: entry.clone(),
        spiffe_id: id,
        template,
        chain,
        key,
        not_before,
        not_after,
        rotate_at,
        monotonic: Some(Monotonic::from_wall(now, rotate_at, not_after)),
    })
}
