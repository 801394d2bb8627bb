//! Backing off from a busy authority. After a partition a whole fleet comes
//! back at once; the authority sheds what it cannot take with
//! ResourceExhausted and a retry hint. An agent waits at least the hint, and
//! spreads its retries (full jitter) so the fleet does not return in step.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// gRPC retry pushback (gRFC A6), in milliseconds.
const PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";
/// Whole seconds, as HTTP's header of the same name.
const RETRY_AFTER_HEADER: &str = "retry-after";
/// A hint is honoured up to this long.
const MAX_HINT: Duration = Duration::from_secs(300);

/// How long the authority asked us to wait, from a refused call's metadata.
pub fn retry_hint(st: &tonic::Status) -> Option<Duration> {
    let md = st.metadata();
    let number = |name: &str| md.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    let hint = number(PUSHBACK_HEADER)
        .map(Duration::from_millis)
        .or_else(|| number(RETRY_AFTER_HEADER).map(Duration::from_secs))?;
    Some(hint.min(MAX_HINT))
}

/// The wait before retry `attempt` (0-based): exponential from 1s, capped at
/// `cap`, drawn uniformly from its upper half, and never less than `hint`.
pub fn wait(attempt: u32, cap: Duration, hint: Option<Duration>) -> Duration {
    let ceiling = Duration::from_secs(1u64 << attempt.min(10)).min(cap);
    let jittered = ceiling.mul_f64(0.5 + 0.5 * rand::random::<f64>());
    jittered.max(hint.unwrap_or_default())
}

/// The latest hint the authority gave, kept by the client that saw it for
/// the loop that decides when to retry.
#[derive(Debug, Default)]
pub struct Pushback(Mutex<Option<Instant>>);

impl Pushback {
    /// Notes the hint of a failed call, if it has one.
    pub fn note(&self, st: &tonic::Status) {
        if let Some(hint) = retry_hint(st) {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + hint);
        }
    }

    /// How long is left of the latest hint (None once it has passed).
    pub fn remaining(&self) -> Option<Duration> {
        let until = (*self.0.lock().unwrap_or_else(|p| p.into_inner()))?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn shed(header: &'static str, value: &'static str) -> tonic::Status {
        let mut st = tonic::Status::resource_exhausted("busy");
        st.metadata_mut()
            .insert(header, MetadataValue::from_static(value));
        st
    }

    #[test]
    fn the_hint_is_read_from_pushback_or_retry_after_and_capped() {
        let ms = shed(PUSHBACK_HEADER, "1500");
        assert_eq!(retry_hint(&ms), Some(Duration::from_millis(1500)));
        let s = shed(RETRY_AFTER_HEADER, "3");
        assert_eq!(retry_hint(&s), Some(Duration::from_secs(3)));
        let huge = shed(RETRY_AFTER_HEADER, "999999");
        assert_eq!(retry_hint(&huge), Some(MAX_HINT));
        assert_eq!(retry_hint(&shed(PUSHBACK_HEADER, "soon")), None);
        assert_eq!(retry_hint(&tonic::Status::unavailable("down")), None);
    }

    #[test]
    fn waits_are_spread_and_never_shorter_than_the_hint() {
        let cap = Duration::from_secs(60);
        let waits: Vec<Duration> = (0..200).map(|_| wait(2, cap, None)).collect();
        assert!(waits
            .iter()
            .all(|w| (Duration::from_secs(2)..=Duration::from_secs(4)).contains(w)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "retries must be spread, not in step");
        assert!(wait(0, cap, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        assert!(wait(30, cap, None) <= cap);
    }

    #[test]
    fn pushback_keeps_the_latest_hint_until_it_passes() {
        let p = Pushback::default();
        assert_eq!(p.remaining(), None);
        p.note(&tonic::Status::unavailable("no hint"));
        assert_eq!(p.remaining(), None);
        p.note(&shed(PUSHBACK_HEADER, "60000"));
        assert!(p.remaining().is_some_and(|d| d > Duration::from_secs(50)));
        p.note(&shed(PUSHBACK_HEADER, "0"));
        assert_eq!(p.remaining(), None);
    }
}
