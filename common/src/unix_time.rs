//! A point in time as whole seconds since the Unix epoch: the unit every stored
//! timestamp and certificate time uses. A type of its own so a timestamp is never
//! compared with, or added to, a duration or a count by mistake.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(i64);

impl UnixTime {
    pub const fn from_secs(secs: i64) -> Self {
        UnixTime(secs)
    }

    pub fn now() -> Self {
        UnixTime(crate::unix_now())
    }

    pub const fn secs(self) -> i64 {
        self.0
    }

    /// `d` later, saturating at the end of representable time.
    pub fn plus(self, d: Duration) -> Self {
        UnixTime(self.0.saturating_add(crate::duration::whole_secs(d)))
    }
}

impl fmt::Display for UnixTime {
    /// Seconds, as operators read them in logs and error messages ("(Unix time)").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_seconds_and_adds_durations() {
        let t = UnixTime::from_secs(1_700_000_000);
        assert!(t < t.plus(Duration::from_secs(1)));
        assert_eq!(t.plus(Duration::from_secs(60)).secs(), 1_700_000_060);
        assert_eq!(
            UnixTime::from_secs(i64::MAX - 1).plus(Duration::from_secs(u64::MAX)),
            UnixTime::from_secs(i64::MAX)
        );
        assert_eq!(t.to_string(), "1700000000");
    }
}
