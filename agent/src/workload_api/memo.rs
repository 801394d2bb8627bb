//! A connection's attestation, kept for its later calls while the pinned process's mark (its
//! executable and effective ids) is unchanged: one full attestation per connection, not per
//! call. The lock is the connection's own, held only to copy the selectors out.

use std::sync::Mutex;
use tessera_attestors::workload::unix::ProcessMark;
use tessera_common::Selector;

#[derive(Default)]
pub struct Memo(Mutex<Option<(ProcessMark, Vec<Selector>)>>);

impl Memo {
    /// The selectors attested under `mark`, if that is still the process's mark.
    pub fn get(&self, mark: ProcessMark) -> Option<Vec<Selector>> {
        let memo = self.0.lock().unwrap_or_else(|e| e.into_inner());
        memo.as_ref()
            .filter(|(m, _)| *m == mark)
            .map(|(_, s)| s.clone())
    }

    /// Remembers `selectors`, attested after `mark` was read.
    pub fn set(&self, mark: ProcessMark, selectors: &[Selector]) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((mark, selectors.to_vec()));
    }
}
