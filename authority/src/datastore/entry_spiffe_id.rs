//! What an entry names: one SPIFFE ID, or a template its agents expand per
//! workload. Parsed when an entry is created and whenever a row is read, so a
//! stored value that is neither is corrupt data, not a surprise at signing.

use std::fmt;
use tessera_common::spiffe_id::SpiffeIdError;
use tessera_common::spiffe_template::{is_template, SpiffeTemplate, TemplateError};
use tessera_common::SpiffeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySpiffeId {
    Id(SpiffeId),
    Template(SpiffeTemplate),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntrySpiffeIdError {
    #[error("{0}")]
    Id(#[from] SpiffeIdError),
    #[error("template {0:?}: {1}")]
    Template(String, TemplateError),
}

impl EntrySpiffeId {
    /// A workload ID, or a template when `s` has a brace.
    pub fn parse(s: &str) -> Result<Self, EntrySpiffeIdError> {
        if !is_template(s) {
            return Ok(EntrySpiffeId::Id(SpiffeId::parse_workload(s)?));
        }
        SpiffeTemplate::parse(s)
            .map(EntrySpiffeId::Template)
            .map_err(|e| EntrySpiffeIdError::Template(s.chars().take(256).collect(), e))
    }

    pub fn as_str(&self) -> &str {
        match self {
            EntrySpiffeId::Id(id) => id.as_str(),
            EntrySpiffeId::Template(t) => t.as_str(),
        }
    }

    /// The ID itself, or the template with its placeholders filled: what trust
    /// domain and reserved names are checked against.
    pub fn sample(&self) -> &SpiffeId {
        match self {
            EntrySpiffeId::Id(id) => id,
            EntrySpiffeId::Template(t) => t.sample(),
        }
    }
}

impl From<SpiffeId> for EntrySpiffeId {
    fn from(id: SpiffeId) -> Self {
        EntrySpiffeId::Id(id)
    }
}

impl fmt::Display for EntrySpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
