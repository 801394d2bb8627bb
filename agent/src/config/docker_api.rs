//! `[docker_api]`: the optional Docker Engine API socket (dockerd, or `podman system
//! service`) that adds `container:image_id:` and `container:label:` selectors.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use tessera_attestors::workload::docker_api::{
    DockerApiConfig, DEFAULT_CACHE_TTL, DEFAULT_TIMEOUT,
};
use tessera_common::duration;

/// Every attestation of a container may wait this long; more would let a hung daemon stall
/// the Workload API.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DockerApiRaw {
    socket_path: Option<PathBuf>,
    timeout: Option<String>,
    cache_ttl: Option<String>,
}

impl DockerApiRaw {
    /// `None` without a socket: no enrichment, and the other keys must not be set either.
    pub(super) fn parse(self) -> Result<Option<DockerApiConfig>, String> {
        let timeout = duration::field("docker_api.timeout", self.timeout.as_deref())?;
        if let Some(t) = timeout.filter(|t| *t > MAX_TIMEOUT) {
            return Err(format!(
                "docker_api.timeout: {t:?} is more than the maximum {MAX_TIMEOUT:?}"
            ));
        }
        let cache_ttl = duration::field("docker_api.cache_ttl", self.cache_ttl.as_deref())?;
        let Some(socket_path) = self.socket_path else {
            if timeout.is_some() || cache_ttl.is_some() {
                return Err(
                    "docker_api.socket_path: required when docker_api is configured".into(),
                );
            }
            return Ok(None);
        };
        if !socket_path.is_absolute() {
            return Err(format!(
                "docker_api.socket_path: {socket_path:?} must be an absolute path"
            ));
        }
        Ok(Some(DockerApiConfig {
            socket_path,
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            cache_ttl: cache_ttl.unwrap_or(DEFAULT_CACHE_TTL),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::time::Duration;

    fn with(section: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "trust_domain = \"example.org\"\nauthority_address = \"a:1\"\ninsecure_bootstrap = true\n\
             [node_attestation]\nmethod = \"tpm\"\n[docker_api]\n{section}"
        ))
    }

    #[test]
    fn off_unless_a_socket_is_set() {
        assert_eq!(with("").unwrap().docker_api, None);
        let c = with("socket_path = \"/run/docker.sock\"\n")
            .unwrap()
            .docker_api
            .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.cache_ttl, Duration::from_secs(30));
        let c = with(
            "socket_path = \"/run/podman/podman.sock\"\ntimeout = \"2s\"\ncache_ttl = \"5m\"\n",
        )
        .unwrap()
        .docker_api
        .unwrap();
        assert_eq!(
            (c.timeout, c.cache_ttl),
            (Duration::from_secs(2), Duration::from_secs(300))
        );
    }

    #[test]
    fn errors_name_the_field() {
        for (section, want) in [
            ("timeout = \"1s\"\n", "docker_api.socket_path:"),
            ("socket_path = \"docker.sock\"\n", "docker_api.socket_path:"),
            (
                "socket_path = \"/d.sock\"\ntimeout = \"soon\"\n",
                "docker_api.timeout:",
            ),
            (
                "socket_path = \"/d.sock\"\ntimeout = \"1m\"\n",
                "docker_api.timeout:",
            ),
            (
                "socket_path = \"/d.sock\"\ncache_ttl = \"0s\"\n",
                "docker_api.cache_ttl:",
            ),
            ("socket = \"/d.sock\"\n", "unknown field"),
        ] {
            let e = with(section).unwrap_err();
            assert!(e.contains(want), "{section}: {e}");
        }
    }
}
