//! `[templates]`: how many expansions of a templated entry the agent keeps,
//! for how long, and how long a caller waits for one to be signed.

use serde::Deserialize;
use std::time::Duration;
use tessera_common::duration;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TemplatesRaw {
    max_expansions_per_entry: Option<usize>,
    idle_eviction: Option<String>,
    signing_timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateLimits {
    /// Distinct expansions cached per entry; more workloads get no match.
    pub max_per_entry: usize,
    /// An expansion nobody asked for (and no stream holds) this long is dropped.
    pub idle: Duration,
    /// How long a caller waits for an expansion to be signed.
    pub wait: Duration,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        TemplateLimits {
            max_per_entry: 256,
            idle: Duration::from_secs(3600),
            wait: Duration::from_secs(10),
        }
    }
}

impl TemplatesRaw {
    pub fn parse(self) -> Result<TemplateLimits, String> {
        let d = TemplateLimits::default();
        let max_per_entry = match self.max_expansions_per_entry {
            None => d.max_per_entry,
            Some(n) if (1..=100_000).contains(&n) => n,
            Some(n) => {
                return Err(format!(
                    "templates.max_expansions_per_entry: {n} is not between 1 and 100000"
                ))
            }
        };
        let dur = |name: &str, v: Option<&str>, default: Duration, max: Duration| {
            let field = format!("templates.{name}");
            match duration::field(&field, v)? {
                None => Ok(default),
                Some(x) if x.is_zero() || x > max => {
                    Err(format!("{field}: must be more than 0s and at most {max:?}"))
                }
                Some(x) => Ok(x),
            }
        };
        Ok(TemplateLimits {
            max_per_entry,
            idle: dur(
                "idle_eviction",
                self.idle_eviction.as_deref(),
                d.idle,
                Duration::from_secs(7 * 86400),
            )?,
            wait: dur(
                "signing_timeout",
                self.signing_timeout.as_deref(),
                d.wait,
                Duration::from_secs(60),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TemplateLimits, String> {
        tessera_common::config::from_toml::<TemplatesRaw>(text)?.parse()
    }

    #[test]
    fn defaults_and_errors_name_the_field() {
        assert_eq!(parse("").unwrap(), TemplateLimits::default());
        let l = parse("max_expansions_per_entry = 3\nidle_eviction = \"5m\"").unwrap();
        assert_eq!((l.max_per_entry, l.idle), (3, Duration::from_secs(300)));
        for (text, field) in [
            (
                "max_expansions_per_entry = 0",
                "templates.max_expansions_per_entry:",
            ),
            ("idle_eviction = \"0s\"", "templates.idle_eviction:"),
            ("signing_timeout = \"2m\"", "templates.signing_timeout:"),
            ("idle_eviction = \"soon\"", "templates.idle_eviction:"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(field), "{text}: {e}");
        }
    }
}
