//! Times on the admin command line and in its JSON: RFC 3339 in UTC, or
//! (for `--since`/`--until`) a duration before now.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds as RFC 3339 in UTC, e.g. `2026-12-01T10:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
        .to_string()
}

/// `2026-12-01T10:00:00Z` (RFC 3339, UTC) as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339(s.trim()).map_err(|e| {
        format!("{s:?} is not an RFC 3339 time in UTC ({e}); use e.g. 2026-12-01T10:00:00Z")
    })?;
    unix(t).ok_or_else(|| format!("{s:?} is before 1970"))
}

/// An RFC 3339 time, or a duration meaning that long ago (`90s`, `1h`, `7d`),
/// after the epoch: the admin API reads 0 as "no bound", so
/// `--until 1970-01-01T00:00:00Z` would otherwise mean "everything".
pub fn parse_point(s: &str) -> Result<i64, String> {
    match point(s)? {
        t if t > 0 => Ok(t),
        _ => Err(format!(
            "{s:?} is not after 1970-01-01T00:00:00Z; leave the flag out for no bound"
        )),
    }
}

fn point(s: &str) -> Result<i64, String> {
    if let Ok(ago) = humantime::parse_duration(s.trim()) {
        let then = SystemTime::now()
            .checked_sub(ago)
            .and_then(unix)
            .ok_or_else(|| format!("{s:?} ago is before 1970"))?;
        return Ok(then);
    }
    parse_rfc3339(s).map_err(|_| {
        format!(
            "{s:?} is neither an RFC 3339 time in UTC (2026-12-01T10:00:00Z) \
             nor a duration before now (1h, 7d)"
        )
    })
}

fn unix(t: SystemTime) -> Option<i64> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_relative() {
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Ok(1_700_000_000));
        let now = tessera_common::unix_now();
        let hour_ago = parse_point("1h").unwrap();
        assert!((now - 3600 - hour_ago).abs() <= 2, "{hour_ago}");
        assert_eq!(parse_point("2023-11-14T22:13:20Z"), Ok(1_700_000_000));
    }

    #[test]
    fn bad_values_are_one_line_naming_the_value() {
        for bad in ["yesterday", "2023-11-14", "2023-11-14T22:13:20+02:00", ""] {
            let e = parse_point(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")) && !e.contains('\n'), "{e}");
        }
        assert!(parse_rfc3339("1969-12-31T23:59:59Z").is_err());
        for epoch in ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00.5Z"] {
            let e = parse_point(epoch).unwrap_err();
            assert!(e.contains("not after 1970") && !e.contains('\n'), "{e}");
        }
        assert_eq!(parse_point("1970-01-01T00:00:01Z"), Ok(1));
    }
}
