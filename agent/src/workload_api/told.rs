//! What a connection's process has already been logged as issued: a call repeated on the
//! same connection hands out the same credential to the same process, and its issuance line
//! would say nothing new (a client polling FetchJWTSVID, or opening a FetchX509SVID stream
//! per request, wrote one line per call). The record belongs to one attestation of the
//! connection: when the process is attested again (an exec or an id change moved its mark),
//! every credential it gets is logged again, naming what it runs now.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use tessera_common::Selector;

/// Credentials remembered per connection; past this the oldest is forgotten (and logged
/// again if handed out again: the record can only ever add lines, never hide a new one).
const MAX_TOLD: usize = 16;

#[derive(Default)]
pub struct Told {
    /// Keyed per connection: a fingerprint cannot be chosen to match another.
    keys: RandomState,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// The attestation the fingerprints were logged under.
    under: Option<Arc<[Selector]>>,
    fingerprints: Vec<u64>,
}

impl Told {
    /// True the first time `credential` is issued as `what` to this connection under the
    /// attestation `selectors` (the `Arc` a full attestation made: a new one starts over).
    pub fn first(&self, selectors: &Arc<[Selector]>, what: &str, credential: &[u8]) -> bool {
        let fingerprint = self.keys.hash_one((what, credential));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen
            .under
            .as_ref()
            .is_some_and(|u| Arc::ptr_eq(u, selectors))
        {
            seen.under = Some(selectors.clone());
            seen.fingerprints.clear();
        }
        if seen.fingerprints.contains(&fingerprint) {
            return false;
        }
        if seen.fingerprints.len() == MAX_TOLD {
            seen.fingerprints.remove(0);
        }
        seen.fingerprints.push(fingerprint);
        true
    }
}

impl std::fmt::Debug for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Told").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attestation(path: &str) -> Arc<[Selector]> {
        Arc::from([Selector::new("unix", format!("path:{path}"))])
    }

    #[test]
    fn a_credential_is_new_once_per_attestation() {
        let told = Told::default();
        let sh = attestation("/bin/sh");
        assert!(told.first(&sh, "X509-SVID", b"chain a"));
        assert!(!told.first(&sh, "X509-SVID", b"chain a"), "a repeat");
        assert!(told.first(&sh, "X509-SVID", b"chain b"), "a rotated SVID");
        assert!(told.first(&sh, "SDS X509-SVID", b"chain a"), "another kind");

        // The same selectors from a new attestation (an exec of the same file): logged again.
        let again = attestation("/bin/sh");
        assert!(told.first(&again, "X509-SVID", b"chain a"));
        assert!(!told.first(&again, "X509-SVID", b"chain a"));
        let sleep = attestation("/bin/sleep");
        assert!(
            told.first(&sleep, "X509-SVID", b"chain a"),
            "an exec of another file"
        );
    }

    #[test]
    fn past_the_bound_the_oldest_is_logged_again() {
        let told = Told::default();
        let a = attestation("/bin/sh");
        for i in 0..=MAX_TOLD {
            assert!(told.first(&a, "JWT-SVID", format!("token {i}").as_bytes()));
        }
        assert!(
            told.first(&a, "JWT-SVID", b"token 0"),
            "forgotten, so logged"
        );
        assert!(!told.first(&a, "JWT-SVID", format!("token {MAX_TOLD}").as_bytes()));
    }
}
