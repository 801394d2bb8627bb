//! Loading TOML config files: every problem is one line naming the file,
//! the field and the reason.

use serde::de::DeserializeOwned;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct ConfigError {
    path: String,
    msg: String,
}

/// Reads `path` and builds a config with `parse` (which names the field).
pub fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let err = |msg: String| ConfigError {
        path: path.display().to_string(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse(&text).map_err(err)
}

/// Deserializes TOML; toml's multi-line error with a source excerpt becomes one line.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        match e.span() {
            Some(span) => format!("{msg} (at byte {})", span.start),
            None => msg,
        }
    })
}
