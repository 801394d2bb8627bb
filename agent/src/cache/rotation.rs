//! When to rotate and how long to back off: pure functions, so rotation is
//! testable without waiting.

use std::time::Duration;

/// Rotate at 50% ±10% of the lifetime: jitter keeps a fleet from renewing in step.
/// `jitter` is in [-1, 1].
pub fn rotate_at(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    let frac = 0.5 + 0.1 * jitter.clamp(-1.0, 1.0);
    not_before + (life * frac) as i64
}

/// A random jitter in [-1, 1].
pub fn random_jitter() -> f64 {
    rand::random::<f64>() * 2.0 - 1.0
}

/// Exponential backoff: 1s, 2s, 4s … capped at `cap`, with up to 20% jitter.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.min(10)).min(cap);
    let jitter = base.mul_f64(rand::random::<f64>() * 0.2);
    (base + jitter).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_half_life_with_bounded_jitter() {
        assert_eq!(rotate_at(1000, 2000, 0.0), 1500);
        assert_eq!(rotate_at(1000, 2000, 1.0), 1600);
        assert_eq!(rotate_at(1000, 2000, -1.0), 1400);
        assert_eq!(rotate_at(1000, 2000, 7.0), 1600);
        assert_eq!(rotate_at(2000, 1000, 0.0), 2000);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0, Duration::from_secs(60)) >= Duration::from_secs(1));
        assert!(backoff(3, Duration::from_secs(60)) >= Duration::from_secs(8));
        assert_eq!(
            backoff(30, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }
}
