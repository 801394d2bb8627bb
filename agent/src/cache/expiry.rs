//! Takes each X.509-SVID out of the published snapshot at its notAfter,
//! whatever the manager is doing: a round may wait on an unreachable or slow
//! authority for longer than an SVID has left. Streams see the new snapshot
//! as for any other change (a message without it, or "no identity").

use super::manager::Clock;
use super::Snapshot;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest single wait: a wall-clock step forward is noticed within this
/// (a step back cannot extend an SVID: see [`super::CachedSvid::ms_left`]).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Runs until dropped (it holds a sender, so the channel stays open).
pub async fn drop_expired(tx: watch::Sender<Arc<Snapshot>>, clock: Arc<dyn Clock>) {
    let mut rx = tx.subscribe();
    loop {
        let now_ms = clock.now_millis();
        let earliest = rx
            .borrow_and_update()
            .svids
            .iter()
            .map(|s| s.ms_left(now_ms))
            .min();
        let wait = match earliest {
            Some(left) => {
                if left <= 0 {
                    expire(&tx, clock.as_ref());
                    continue;
                }
                Duration::from_millis(left as u64).min(MAX_WAIT)
            }
            // Nothing to expire: wait for the next snapshot.
            None => Duration::MAX,
        };
        tokio::select! {
            _ = sleep(wait) => {}
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

async fn sleep(d: Duration) {
    if d == Duration::MAX {
        std::future::pending::<()>().await
    } else {
        tokio::time::sleep(d).await
    }
}

/// Publishes the current snapshot without the SVIDs whose notAfter has come.
fn expire(tx: &watch::Sender<Arc<Snapshot>>, clock: &dyn Clock) {
    let now_ms = clock.now_millis();
    tx.send_if_modified(|cur| {
        let (live, gone): (Vec<_>, Vec<_>) = cur
            .svids
            .iter()
            .cloned()
            .partition(|s| s.ms_left(now_ms) > 0);
        if gone.is_empty() {
            return false;
        }
        for s in &gone {
            tracing::warn!(spiffe_id = %s.spiffe_id, entry_id = %s.entry.id, not_after = s.not_after,
                "X509-SVID expired before it was renewed (authority unreachable?); no longer served");
        }
        *cur = Arc::new(Snapshot {
            state: cur.state,
            svids: live,
            templates: cur.templates.clone(),
            bundle: cur.bundle.clone(),
            index: Default::default(),
        });
        true
    });
}

#[cfg(test)]
mod tests;
