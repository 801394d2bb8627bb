//! Which SVIDs of a snapshot each selector can match, built once per snapshot
//! on first use. A workload's lookup then touches only the SVIDs filed under
//! its own selectors instead of every SVID: with 1,000 streams and 10,000
//! SVIDs, scanning on every publish took a core and starved rotation.

use super::CachedSvid;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tessera_common::selector::all_present;
use tessera_common::Selector;

#[derive(Debug, Default)]
pub struct SelectorIndex(OnceLock<HashMap<Selector, Vec<usize>>>);

impl SelectorIndex {
    /// Positions in `svids`, in order, of those whose selectors all hold for
    /// a workload with `have`. `svids` must be the list the index is for.
    pub fn matching(&self, svids: &[Arc<CachedSvid>], have: &[Selector]) -> Vec<usize> {
        let index = self.0.get_or_init(|| file(svids));
        let mut hits: Vec<usize> = have
            .iter()
            .filter_map(|s| index.get(s))
            .flatten()
            .copied()
            .collect();
        hits.sort_unstable();
        // A workload may name one selector twice.
        hits.dedup();
        hits.retain(|&i| {
            svids
                .get(i)
                .is_some_and(|s| all_present(&s.entry.selectors, have))
        });
        hits
    }
}

/// Each SVID under its first selector only: a match needs every selector,
/// so the first is among the workload's.
fn file(svids: &[Arc<CachedSvid>]) -> HashMap<Selector, Vec<usize>> {
    let mut index: HashMap<Selector, Vec<usize>> = HashMap::new();
    for (i, s) in svids.iter().enumerate() {
        if let Some(first) = s.entry.selectors.first() {
            index.entry(first.clone()).or_default().push(i);
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svid(i: usize, selectors: Vec<Selector>) -> Arc<CachedSvid> {
        Arc::new(CachedSvid {
            entry: crate::cache::entry::Entry::test(&format!("e{i}"), "", selectors, ""),
            spiffe_id: tessera_common::SpiffeId::parse_workload(&format!("spiffe://td/w{i}"))
                .unwrap(),
            template: None,
            chain: Vec::new(),
            key: Vec::new().into(),
            not_before: 0,
            not_after: 0,
            rotate_at: 0,
            monotonic: None,
        })
    }

    /// A small deterministic generator: the same cases on every run.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n) as usize
        }
        fn selectors(&mut self, max: u64) -> Vec<Selector> {
            (0..self.below(max + 1))
                .map(|_| {
                    Selector::new(format!("k{}", self.below(4)), format!("v{}", self.below(3)))
                })
                .collect()
        }
    }

    #[test]
    fn finds_exactly_what_a_full_scan_finds_in_order() {
        let mut rng = Lcg(7);
        let svids: Vec<_> = (0..400).map(|i| svid(i, rng.selectors(3))).collect();
        let index = SelectorIndex::default();
        for _ in 0..300 {
            let have = rng.selectors(8);
            let scan: Vec<usize> = (0..svids.len())
                .filter(|&i| all_present(&svids[i].entry.selectors, &have))
                .collect();
            assert_eq!(index.matching(&svids, &have), scan, "workload {have:?}");
        }
    }
}
