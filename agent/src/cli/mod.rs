//! Commands that talk to a running agent over its Workload API socket, and
//! the local inspection tools.

pub mod api;
pub mod eventlog;
pub mod inspect;

use crate::config::{Config, DEFAULT_SOCKET};
use std::path::{Path, PathBuf};

/// Where the agent listens: `--socket`, else `--config`'s socket_path, else
/// `SPIFFE_ENDPOINT_SOCKET`, else the default.
pub fn socket_path(socket: Option<&str>, config: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(s) = socket {
        return parse_endpoint(s).map_err(|e| format!("--socket: {e}"));
    }
    if let Some(c) = config {
        return Ok(Config::load(c).map_err(|e| e.to_string())?.socket_path);
    }
    match std::env::var("SPIFFE_ENDPOINT_SOCKET") {
        Ok(s) if !s.is_empty() => {
            parse_endpoint(&s).map_err(|e| format!("SPIFFE_ENDPOINT_SOCKET: {e}"))
        }
        _ => Ok(DEFAULT_SOCKET.into()),
    }
}

/// `unix:///absolute/path` or `unix:/absolute/path` (percent-encoded as any
/// URI path), the only form this client speaks (the SPIFFE Workload Endpoint
/// spec also allows tcp://, which the agent does not serve).
fn parse_endpoint(s: &str) -> Result<PathBuf, String> {
    let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URI: {e}"))?;
    match url.scheme() {
        "unix"
            if url.host_str().is_none_or(str::is_empty)
                && url.path().starts_with('/')
                && url.query().is_none()
                && url.fragment().is_none() =>
        {
            url.to_file_path()
                .map_err(|()| format!("{s:?} is not a local path"))
        }
        "unix" => Err(format!("{s:?} must be unix:///absolute/path")),
        "tcp" => Err(format!(
            "{s:?}: this client speaks to the agent over a Unix socket only"
        )),
        other => Err(format!("{s:?}: scheme {other:?} is not unix")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_endpoint;

    #[test]
    fn endpoints() {
        for (uri, path) in [
            ("unix:///run/a.sock", "/run/a.sock"),
            ("unix:/run/a.sock", "/run/a.sock"),
            ("unix:///run/my%20agent.sock", "/run/my agent.sock"),
        ] {
            assert_eq!(parse_endpoint(uri).unwrap().to_str(), Some(path), "{uri}");
        }
        for bad in [
            "unix://host/a.sock",
            "unix:rel",
            "http://x/y",
            "unix:///a?x=1",
            "tcp://127.0.0.1:1",
            "/run/a.sock",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
