//! A connection's attestation, kept for its later calls while the pinned process's mark (its
//! executable and effective ids) is unchanged: one full attestation per connection, not per
//! call. The lock is the connection's own, held only to take a reference to the selectors
//! (shared, not copied: a copy cost an allocation per selector on every call).

use std::sync::{Arc, Mutex};
use tessera_attestors::workload::unix::ProcessMark;
use tessera_common::Selector;

#[derive(Default)]
pub struct Memo(Mutex<Option<(ProcessMark, Arc<[Selector]>)>>);

impl Memo {
    /// The selectors attested under `mark`, if that is still the process's mark.
    pub fn get(&self, mark: ProcessMark) -> Option<Arc<[Selector]>> {
        let memo = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memo.as_ref()
            .filter(|(m, _)| *m == mark)
            .map(|(_, s)| s.clone())
    }

    /// Remembers `selectors`, attested after `mark` was read.
    pub fn set(&self, mark: ProcessMark, selectors: &Arc<[Selector]>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((mark, selectors.clone()));
    }
}
