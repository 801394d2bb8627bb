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

/// Parses an optional config field, naming it in the error.
pub fn field(name: &str, value: Option<&str>) -> Result<Option<Duration>, String> {
    value
        .map(|v| parse(v).map_err(|e| format!("{name}: {e}")))
        .transpose()
}

/// Whole seconds as stored and sent (an i64), saturating.
pub fn whole_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_and_rejects() {
        assert_eq!(super::parse("90s").unwrap().as_secs(), 90);
        assert_eq!(super::parse("1h30m").unwrap().as_secs(), 5400);
        assert!(super::parse("0s").is_err());
        assert!(super::parse("soon").is_err());
        assert_eq!(super::whole_secs(std::time::Duration::from_secs(90)), 90);
        assert_eq!(super::whole_secs(std::time::Duration::MAX), i64::MAX);
    }
}
