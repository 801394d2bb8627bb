//! Durations in configs and flags: `90s`, `5m`, `1h`, `1h30m`.

use std::time::Duration;

/// Parses a human duration; zero is refused, since every TTL must be positive.
pub fn parse(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 90s, 5m, 1h"))?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero; a duration must be positive"));
    }
    Ok(d)
}

/// serde helper for `Option<Duration>` fields written as human durations.
pub mod serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_and_rejects() {
        assert_eq!(super::parse("90s").unwrap().as_secs(), 90);
        assert_eq!(super::parse("1h30m").unwrap().as_secs(), 5400);
        assert!(super::parse("0s").is_err());
        assert!(super::parse("soon").is_err());
    }
}
