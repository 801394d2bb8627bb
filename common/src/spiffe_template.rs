//! Templated SPIFFE IDs: `spiffe://td/ci/{systemd:scope}` names one identity per
//! workload, filled from the workload's own selectors. Every rule fails closed: a
//! placeholder the workload lacks, holds more than once, or whose value is not a
//! plain SPIFFE path segment gives no identity at all.

use crate::{Selector, SpiffeId};
use std::fmt;

/// Most placeholders in one template.
pub const MAX_PLACEHOLDERS: usize = 8;
/// Longest value a placeholder may take, in bytes.
pub const MAX_VALUE_LEN: usize = 255;

/// Selector keys a placeholder may name: each holds at most one value per
/// process (a multi-valued key such as `unix:supplementary_gid` would make the
/// identity depend on which value is picked).
pub const PLACEHOLDER_KEYS: &[&str] = &[
    "unix:uid",
    "unix:user",
    "unix:gid",
    "unix:group",
    "systemd:unit",
    "systemd:slice",
    "systemd:scope",
    "systemd:invocation_id",
    "container:id",
    "container:runtime",
    "k8s:pod_uid",
    "k8s:qos",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("placeholders are allowed only in the path")]
    NotInPath,
    #[error("unclosed '{{'")]
    Unclosed,
    #[error("'}}' without a matching '{{'")]
    StrayClose,
    #[error("'{{' inside a placeholder")]
    Nested,
    #[error("placeholder {{{0}}} is not one of {keys}", keys = PLACEHOLDER_KEYS.join(", "))]
    UnknownKey(String),
    #[error("more than {MAX_PLACEHOLDERS} placeholders")]
    TooMany,
    #[error("placeholders must be separated by literal text")]
    Adjacent,
    #[error("is not a valid SPIFFE ID once placeholders are filled: {0}")]
    Invalid(String),
}

/// Why a template gives a workload no identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpandError {
    #[error("the workload has no {0} selector")]
    Missing(String),
    #[error("the workload has more than one {0} selector")]
    Ambiguous(String),
    #[error("{key} value {value:?} is not a SPIFFE path segment")]
    BadValue { key: String, value: String },
    #[error("expansion is not a SPIFFE ID: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `kind`, `key`: the placeholder `{kind:key}`.
    Placeholder(String, String),
}

/// A parsed, validated template.
#[derive(Debug, Clone)]
pub struct SpiffeTemplate {
    raw: String,
    parts: Vec<Part>,
    /// Anchored; placeholders as [`VALUE_PATTERN`].
    matcher: regex::Regex,
    /// Every placeholder filled with `x`.
    sample: SpiffeId,
}

impl PartialEq for SpiffeTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for SpiffeTemplate {}

/// What [`valid_value`] accepts, as a regex: a value is tried at every split, so
/// an ID is an expansion when any assignment of values fits (not just the first).
static VALUE_PATTERN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let c = "[A-Za-z0-9._-]";
    let n = MAX_VALUE_LEN;
    format!(
        "(?:[A-Za-z0-9_-]{c}{{0,{a}}}|\\.[A-Za-z0-9_-]{c}{{0,{b}}}|\\.\\.{c}{{1,{b}}})",
        a = n - 1,
        b = n - 2
    )
});

/// True when `s` is meant as a template (it has a brace), so it is parsed as one.
pub fn is_template(s: &str) -> bool {
    s.contains(['{', '}'])
}

/// True when `v` may stand for a placeholder: a non-empty, bounded path segment.
pub fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_VALUE_LEN
        && v != "."
        && v != ".."
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl SpiffeTemplate {
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let parts = split(s)?;
        let holes = parts
            .iter()
            .filter(|p| matches!(p, Part::Placeholder(..)))
            .count();
        if holes > MAX_PLACEHOLDERS {
            return Err(TemplateError::TooMany);
        }
        let adjacent = parts.windows(2).any(|w| {
            matches!(w[0], Part::Placeholder(..)) && matches!(w[1], Part::Placeholder(..))
        });
        if adjacent {
            return Err(TemplateError::Adjacent);
        }
        let in_path = match parts.first() {
            Some(Part::Literal(head)) => {
                parts.len() == 1
                    || head
                        .strip_prefix("spiffe://")
                        .is_none_or(|r| r.contains('/'))
            }
            Some(Part::Placeholder(..)) => false,
            None => true,
        };
        if !in_path {
            return Err(TemplateError::NotInPath);
        }
        let sample = SpiffeId::parse_workload(&fill(&parts))
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        let pattern: String = parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => regex::escape(l),
                Part::Placeholder(..) => VALUE_PATTERN.clone(),
            })
            .collect();
        let matcher = regex::Regex::new(&format!("^{pattern}$"))
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        Ok(SpiffeTemplate {
            raw: s.to_string(),
            parts,
            matcher,
            sample,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The template with every placeholder filled with `x`: a valid SPIFFE ID
    /// (checked at parse) to test trust domain and reserved names against.
    pub fn sample(&self) -> &SpiffeId {
        &self.sample
    }

    /// The identity this template gives a workload with `selectors`.
    pub fn expand(&self, selectors: &[Selector]) -> Result<SpiffeId, ExpandError> {
        let mut out = String::with_capacity(self.raw.len());
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Placeholder(kind, key) => out.push_str(value_of(selectors, kind, key)?),
            }
        }
        SpiffeId::parse_workload(&out).map_err(|e| ExpandError::Invalid(e.to_string()))
    }

    /// True when `id` is this template with each placeholder replaced by a valid
    /// value: what the authority checks before signing an expansion.
    pub fn is_expansion(&self, id: &str) -> bool {
        self.matcher.is_match(id) && SpiffeId::parse_workload(id).is_ok()
    }
}

impl fmt::Display for SpiffeTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn fill(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Literal(l) => l.as_str(),
            Part::Placeholder(..) => "x",
        })
        .collect()
}

fn value_of<'a>(selectors: &'a [Selector], kind: &str, key: &str) -> Result<&'a str, ExpandError> {
    let name = || format!("{kind}:{key}");
    let mut values = selectors
        .iter()
        .filter(|s| s.kind == kind)
        .filter_map(|s| s.value.strip_prefix(key)?.strip_prefix(':'));
    let v = values.next().ok_or_else(|| ExpandError::Missing(name()))?;
    if values.next().is_some() {
        return Err(ExpandError::Ambiguous(name()));
    }
    if !valid_value(v) {
        return Err(ExpandError::BadValue {
            key: name(),
            value: v.chars().take(64).collect(),
        });
    }
    Ok(v)
}

fn split(s: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let open = rest.find('{');
        let close = rest.find('}');
        match (open, close) {
            (None, None) => {
                parts.push(Part::Literal(rest.to_string()));
                break;
            }
            (None, Some(_)) => return Err(TemplateError::StrayClose),
            (Some(o), Some(c)) if c < o => return Err(TemplateError::StrayClose),
            (Some(_), None) => return Err(TemplateError::Unclosed),
            (Some(o), Some(c)) => {
                let inner = &rest[o + 1..c];
                if inner.contains('{') {
                    return Err(TemplateError::Nested);
                }
                if !PLACEHOLDER_KEYS.contains(&inner) {
                    return Err(TemplateError::UnknownKey(inner.chars().take(64).collect()));
                }
                if o > 0 {
                    parts.push(Part::Literal(rest[..o].to_string()));
                }
                let (kind, key) = inner.split_once(':').unwrap_or((inner, ""));
                parts.push(Part::Placeholder(kind.into(), key.into()));
                rest = &rest[c + 1..];
            }
        }
        if parts.len() > 2 * MAX_PLACEHOLDERS + 1 {
            return Err(TemplateError::TooMany);
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests;
