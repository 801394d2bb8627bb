//! SPIFFE IDs and trust domains, validated as the SPIFFE-ID standard requires.

use std::fmt;
use std::str::FromStr;

const MAX_ID_LEN: usize = 2048;
const MAX_TD_LEN: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpiffeIdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("scheme must be spiffe://")]
    Scheme,
    #[error("trust domain is missing")]
    MissingTrustDomain,
    #[error("trust domain may hold only lowercase letters, digits, '.', '-' and '_'")]
    TrustDomainChars,
    #[error("path segments may hold only letters, digits, '.', '-' and '_'")]
    PathChars,
    #[error("path has an empty, '.' or '..' segment or a trailing '/'")]
    PathSegment,
    #[error("a workload SPIFFE ID needs a path")]
    NoPath,
}

/// A trust domain name such as `example.org`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        let name = name.strip_prefix("spiffe://").unwrap_or(name);
        if name.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        if name.len() > MAX_TD_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(SpiffeIdError::TrustDomainChars);
        }
        Ok(TrustDomain(name.to_string()))
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `spiffe://<td>`: the key of this domain's bundle in Workload API responses.
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }

    /// A SPIFFE ID in this trust domain; `path` must start with `/`.
    pub fn id(&self, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::from_str(&format!("spiffe://{}{}", self.0, path))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID: `spiffe://<trust domain><path>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    full: String,
    td_len: usize,
}

impl SpiffeId {
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.full["spiffe://".len()..][..self.td_len].to_string())
    }

    /// The path, `""` for the trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.full["spiffe://".len() + self.td_len..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Parses an ID that may name a workload: it must have a path.
    pub fn parse_workload(s: &str) -> Result<Self, SpiffeIdError> {
        let id = Self::from_str(s)?;
        if id.path().is_empty() {
            return Err(SpiffeIdError::NoPath);
        }
        Ok(id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        TrustDomain::new(td)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(SpiffeIdError::PathSegment);
                }
                if !seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(SpiffeIdError::PathChars);
                }
            }
        }
        Ok(SpiffeId {
            full: s.to_string(),
            td_len: td.len(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod grammar_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id: SpiffeId = "spiffe://example.org/ns/prod/web".parse().unwrap();
        assert_eq!(id.trust_domain().name(), "example.org");
        assert_eq!(id.path(), "/ns/prod/web");
        let td: SpiffeId = "spiffe://example.org".parse().unwrap();
        assert_eq!(td.path(), "");
        assert_eq!(
            SpiffeId::parse_workload("spiffe://example.org"),
            Err(SpiffeIdError::NoPath)
        );
    }

    #[test]
    fn rejects_invalid_ids() {
        use SpiffeIdError::*;
        let cases = [
            ("", Empty),
            ("http://example.org/a", Scheme),
            ("spiffe:///a", MissingTrustDomain),
            ("spiffe://Example.org/a", TrustDomainChars),
            ("spiffe://ex:80/a", TrustDomainChars),
            ("spiffe://user@ex/a", TrustDomainChars),
            ("spiffe://ex/a/", PathSegment),
            ("spiffe://ex//a", PathSegment),
            ("spiffe://ex/a/../b", PathSegment),
            ("spiffe://ex/a?x=1", PathChars),
            ("spiffe://ex/a#f", PathChars),
            ("spiffe://ex/a%20b", PathChars),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<SpiffeId>(), Err(want), "{s}");
        }
    }
}
