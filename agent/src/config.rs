//! The agent's TOML configuration (keys per DESIGN.md's interface contract).

mod docker_api;

use crate::cache::template_limits::{TemplateLimits, TemplatesRaw};
use crate::sds::{SdsNames, SdsRaw};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_attestors::node::tpm::public::EkTemplate;
use tessera_attestors::workload::docker_api::DockerApiConfig;
use tessera_common::config::{self, ConfigError};
use tessera_common::secret::SecretString;
use tessera_common::{duration, TrustDomain};

pub const DEFAULT_SOCKET: &str = "/run/tessera/agent.sock";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/tessera/agent";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    trust_domain: String,
    authority_address: Option<String>,
    authority_addresses: Option<Vec<String>>,
    trust_bundle_path: Option<PathBuf>,
    #[serde(default)]
    insecure_bootstrap: bool,
    socket_path: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    sync_interval: Option<String>,
    node_attestation: NodeAttestationRaw,
    #[serde(default)]
    tpm: TpmConfig,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    workload_api: WorkloadApiRaw,
    #[serde(default)]
    sds: SdsRaw,
    #[serde(default)]
    templates: TemplatesRaw,
    #[serde(default)]
    docker_api: docker_api::DockerApiRaw,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkloadApiRaw {
    max_connections: Option<usize>,
    max_connections_per_uid: Option<usize>,
    max_streams_per_connection: Option<u32>,
    first_request_timeout: Option<String>,
    idle_timeout: Option<String>,
    attestations_per_second: Option<u32>,
    attestation_burst: Option<u32>,
}

/// `[workload_api]`: how much of the Workload API one local user can take.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadApiConfig {
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    pub max_streams_per_connection: u32,
    /// A connection must send its first request within this.
    pub first_request_timeout: Duration,
    /// A connection without an open request or stream is closed after this.
    pub idle_timeout: Duration,
    pub attestations_per_second: u32,
    pub attestation_burst: u32,
}

impl Default for WorkloadApiConfig {
    fn default() -> Self {
        WorkloadApiConfig {
            max_connections: 1024,
            max_connections_per_uid: 64,
            max_streams_per_connection: 32,
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            attestations_per_second: 100,
            attestation_burst: 500,
        }
    }
}

impl WorkloadApiRaw {
    fn parse(self) -> Result<WorkloadApiConfig, String> {
        let d = WorkloadApiConfig::default();
        let positive = |name: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(format!("workload_api.{name}: must be at least 1")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let c = WorkloadApiConfig {
            max_connections: positive(
                "max_connections",
                self.max_connections.map(|v| v as u64),
                d.max_connections as u64,
            )? as usize,
            max_connections_per_uid: positive(
                "max_connections_per_uid",
                self.max_connections_per_uid.map(|v| v as u64),
                d.max_connections_per_uid as u64,
            )? as usize,
            max_streams_per_connection: positive(
                "max_streams_per_connection",
                self.max_streams_per_connection.map(u64::from),
                d.max_streams_per_connection.into(),
            )? as u32,
            first_request_timeout: duration::field(
                "workload_api.first_request_timeout",
                self.first_request_timeout.as_deref(),
            )?
            .unwrap_or(d.first_request_timeout),
            idle_timeout: duration::field(
                "workload_api.idle_timeout",
                self.idle_timeout.as_deref(),
            )?
            .unwrap_or(d.idle_timeout),
            attestations_per_second: positive(
                "attestations_per_second",
                self.attestations_per_second.map(u64::from),
                d.attestations_per_second.into(),
            )? as u32,
            attestation_burst: positive(
                "attestation_burst",
                self.attestation_burst.map(u64::from),
                d.attestation_burst.into(),
            )? as u32,
        };
        if c.max_connections_per_uid > c.max_connections {
            return Err(format!(
                "workload_api.max_connections_per_uid: {} is more than max_connections ({})",
                c.max_connections_per_uid, c.max_connections
            ));
        }
        Ok(c)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeAttestationRaw {
    method: String,
    join_token: Option<SecretString>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    pub tcti: Option<String>,
    pub event_log_path: Option<PathBuf>,
    pub ek_template: Option<String>,
    /// tessera-agent-tpm; default: beside the agent, else ../libexec/tessera/.
    pub helper_path: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: Option<String>,
    #[serde(default)]
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeAttestation {
    JoinToken(SecretString),
    Tpm {
        tcti: String,
        event_log_path: PathBuf,
        /// The EK to attest with: the template the authority identifies TPMs by.
        ek_template: EkTemplate,
    },
}

pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// The authority's default too: RSA-2048, low range (certificate at 0x01C00002).
pub const DEFAULT_EK_TEMPLATE: EkTemplate = EkTemplate::L1Rsa2048;
pub const DEFAULT_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

#[derive(Debug, Clone)]
pub enum Trust {
    BundleFile(PathBuf),
    InsecureBootstrap,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub trust_domain: TrustDomain,
    /// `authority_address`, or the replicas of `authority_addresses` in order.
    pub authority_addresses: Vec<String>,
    pub trust: Trust,
    pub socket_path: PathBuf,
    pub data_dir: PathBuf,
    pub sync_interval: Duration,
    pub node_attestation: NodeAttestation,
    pub tpm: TpmConfig,
    pub telemetry: TelemetryConfig,
    pub log: LogConfig,
    pub workload_api: WorkloadApiConfig,
    /// `[sds]`: the well-known SDS resource names.
    pub sds: SdsNames,
    /// `[templates]`: expansions of templated entries.
    pub templates: TemplateLimits,
    /// `[docker_api]`: where container image and label selectors come from, if anywhere.
    pub docker_api: Option<DockerApiConfig>,
    /// The file this was loaded from; SIGHUP re-reads it.
    pub source: Option<PathBuf>,
}

/// The most replicas an agent lists; more is a mistake, and each unreachable
/// one costs a connect timeout.
const MAX_AUTHORITY_ADDRESSES: usize = 16;

/// Exactly one of `authority_address` and `authority_addresses`, each `host:port`.
fn authority_addresses(
    one: Option<String>,
    many: Option<Vec<String>>,
) -> Result<Vec<String>, String> {
    let (list, field) = match (one, many) {
        (Some(a), None) => (vec![a], "authority_address"),
        (None, Some(l)) => (l, "authority_addresses"),
        (Some(_), Some(_)) => {
            return Err("authority_addresses: cannot be combined with authority_address".into())
        }
        (None, None) => {
            return Err("authority_address: required (or authority_addresses for replicas)".into())
        }
    };
    if list.is_empty() || list.len() > MAX_AUTHORITY_ADDRESSES {
        return Err(format!(
            "{field}: {} addresses; give 1 to {MAX_AUTHORITY_ADDRESSES}",
            list.len()
        ));
    }
    for (i, a) in list.iter().enumerate() {
        let name = match field {
            "authority_addresses" => format!("{field}[{i}]"),
            _ => field.to_string(),
        };
        match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(format!("{name}: {a:?} is not host:port")),
        }
        if list[..i].contains(a) {
            return Err(format!("{name}: {a:?} is listed twice"));
        }
    }
    Ok(list)
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c = config::load(path, Self::parse)?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: Raw = config::from_toml(text)?;
        let trust_domain =
            TrustDomain::new(&raw.trust_domain).map_err(|e| format!("trust_domain: {e}"))?;
        let authority_addresses =
            authority_addresses(raw.authority_address, raw.authority_addresses)?;
        let trust = match (raw.trust_bundle_path, raw.insecure_bootstrap) {
            (Some(p), false) => Trust::BundleFile(p),
            (None, true) => Trust::InsecureBootstrap,
            (Some(_), true) => {
                return Err("insecure_bootstrap: cannot be combined with trust_bundle_path".into())
            }
            (None, false) => {
                return Err("trust_bundle_path: required (or set insecure_bootstrap = true)".into())
            }
        };
        let node_attestation = match raw.node_attestation.method.as_str() {
            "join_token" => {
                let token = raw.node_attestation.join_token.unwrap_or_default();
                tessera_attestors::node::join_token::parse(token.expose().as_bytes())
                    .map_err(|e| format!("node_attestation.join_token: {e}"))?;
                NodeAttestation::JoinToken(token)
            }
            "tpm" => {
                if raw.node_attestation.join_token.is_some() {
                    return Err(
                        "node_attestation.join_token: only for method = \"join_token\"".into(),
                    );
                }
                NodeAttestation::Tpm {
                    tcti: raw.tpm.tcti.clone().unwrap_or_else(|| DEFAULT_TCTI.into()),
                    event_log_path: raw
                        .tpm
                        .event_log_path
                        .clone()
                        .unwrap_or_else(|| DEFAULT_EVENT_LOG.into()),
                    ek_template: match &raw.tpm.ek_template {
                        Some(t) => t.parse().map_err(|e| format!("tpm.ek_template: {e}"))?,
                        None => DEFAULT_EK_TEMPLATE,
                    },
                }
            }
            other => {
                return Err(format!(
                    "node_attestation.method: {other:?} is not one of \"tpm\", \"join_token\""
                ))
            }
        };
        let socket_path = raw.socket_path.unwrap_or_else(|| DEFAULT_SOCKET.into());
        let data_dir = raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let mut paths = vec![("socket_path", &socket_path), ("data_dir", &data_dir)];
        paths.extend(raw.tpm.helper_path.as_ref().map(|p| ("tpm.helper_path", p)));
        for (field, p) in paths {
            if !p.is_absolute() {
                return Err(format!("{field}: {p:?} must be an absolute path"));
            }
        }
        if let Some(listen) = &raw.telemetry.listen {
            tessera_common::telemetry::parse_listen(listen)?;
        }
        if let Some(level) = &raw.log.level {
            tessera_common::logging::check_level(level)?;
        }
        Ok(Config {
            trust_domain,
            authority_addresses,
            trust,
            socket_path,
            data_dir,
            sync_interval: duration::field("sync_interval", raw.sync_interval.as_deref())?
                .unwrap_or(Duration::from_secs(5)),
            node_attestation,
            tpm: raw.tpm,
            telemetry: raw.telemetry,
            log: raw.log,
            workload_api: raw.workload_api.parse()?,
            sds: raw.sds.parse()?,
            templates: raw.templates.parse()?,
            docker_api: raw.docker_api.parse()?,
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn base() -> String {
        format!(
            "trust_domain = \"example.org\"\nauthority_address = \"127.0.0.1:8081\"\ntrust_bundle_path = \"/etc/b.pem\"\n\
             [node_attestation]\nmethod = \"join_token\"\njoin_token = \"{TOKEN}\"\n"
        )
    }

    #[test]
    fn defaults() {
        let c = Config::parse(&base()).unwrap();
        assert_eq!(c.socket_path, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.workload_api, WorkloadApiConfig::default());
        let t = format!(
            "{}[workload_api]\nmax_connections_per_uid = 8\nidle_timeout = \"30s\"\n",
            base()
        );
        let w = Config::parse(&t).unwrap().workload_api;
        assert_eq!(w.max_connections_per_uid, 8);
        assert_eq!(w.idle_timeout, Duration::from_secs(30));
        assert_eq!(w.max_connections, 1024);
        assert!(
            matches!(c.node_attestation, NodeAttestation::JoinToken(ref t) if t.expose() == TOKEN)
        );
    }

    /// A `?config` in a log line must not hand out the join token.
    #[test]
    fn debug_never_shows_the_join_token() {
        let raw: Raw = config::from_toml(&base()).unwrap();
        let c = Config::parse(&base()).unwrap();
        for shown in [format!("{raw:?}"), format!("{c:?}")] {
            assert!(shown.contains("redacted"), "{shown}");
            assert!(!shown.contains(TOKEN), "{shown}");
        }
    }

    #[test]
    fn tpm_helper_path_must_be_absolute() {
        let t = "trust_domain = \"example.org\"\nauthority_address = \"a:1\"\ntrust_bundle_path = \"/b\"\n[node_attestation]\nmethod = \"tpm\"\n[tpm]\nhelper_path = ";
        let c = Config::parse(&format!("{t}\"/opt/t/tessera-agent-tpm\"\n")).unwrap();
        assert_eq!(c.tpm.helper_path, Some("/opt/t/tessera-agent-tpm".into()));
        let e = Config::parse(&format!("{t}\"tessera-agent-tpm\"\n")).unwrap_err();
        assert!(e.contains("tpm.helper_path"), "{e}");
    }

    #[test]
    fn tpm_method_defaults() {
        let t = "trust_domain = \"example.org\"\nauthority_address = \"a:1\"\ntrust_bundle_path = \"/b\"\n[node_attestation]\nmethod = \"tpm\"\n";
        match Config::parse(t).unwrap().node_attestation {
            NodeAttestation::Tpm {
                tcti,
                event_log_path,
                ek_template,
            } => {
                assert_eq!(tcti, DEFAULT_TCTI);
                assert_eq!(event_log_path, PathBuf::from(DEFAULT_EVENT_LOG));
                assert_eq!(ek_template, DEFAULT_EK_TEMPLATE);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replicas_are_listed_in_order() {
        let list = |v: &str| base().replace("authority_address = \"127.0.0.1:8081\"", v);
        let c = Config::parse(&list("authority_addresses = [\"b:2\", \"a:1\"]")).unwrap();
        assert_eq!(c.authority_addresses, ["b:2", "a:1"]);
        assert_eq!(
            Config::parse(&base()).unwrap().authority_addresses,
            ["127.0.0.1:8081"]
        );
        let many = format!(
            "authority_addresses = [{}]",
            (1..=17)
                .map(|p| format!("\"h:{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let cases = [
            (
                list("authority_addresses = []"),
                "authority_addresses: 0 addresses",
            ),
            (list(&many), "authority_addresses: 17 addresses"),
            (
                list("authority_addresses = [\"a:1\", \"a\"]"),
                "authority_addresses[1]: \"a\" is not host:port",
            ),
            (
                list("authority_addresses = [\"a:1\", \"a:1\"]"),
                "authority_addresses[1]: \"a:1\" is listed twice",
            ),
            (list(""), "authority_address: required"),
            (
                format!("authority_addresses = [\"a:1\"]\n{}", base()),
                "authority_addresses: cannot be combined",
            ),
        ];
        for (text, want) in cases {
            let e = Config::parse(&text).unwrap_err();
            assert!(e.starts_with(want), "{want}: {e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                base().replace("127.0.0.1:8081", "nohost"),
                "authority_address:",
            ),
            (
                base().replace("trust_bundle_path = \"/etc/b.pem\"\n", ""),
                "trust_bundle_path:",
            ),
            (
                base().replace(TOKEN, "short"),
                "node_attestation.join_token:",
            ),
            (
                base().replace("\"join_token\"\njoin", "\"magic\"\njoin"),
                "node_attestation.method:",
            ),
            (base().replace("example.org", "EXAMPLE"), "trust_domain:"),
            (
                format!("socket_path = \"rel.sock\"\n{}", base()),
                "socket_path:",
            ),
            (
                format!("{}[telemetry]\nlisten = \"localhost:9090\"\n", base()),
                "telemetry.listen:",
            ),
            (
                format!("{}[log]\nlevel = \"info,tessera=loud\"\n", base()),
                "log.level:",
            ),
            (
                format!("{}[workload_api]\nmax_connections = 0\n", base()),
                "workload_api.max_connections:",
            ),
            (
                format!(
                    "{}[workload_api]\nmax_connections = 10\nmax_connections_per_uid = 11\n",
                    base()
                ),
                "workload_api.max_connections_per_uid:",
            ),
            (
                format!("{}[workload_api]\nidle_timeout = \"soon\"\n", base()),
                "workload_api.idle_timeout:",
            ),
            (
                format!("{}[workload_api]\nattestation_burst = 0\n", base()),
                "workload_api.attestation_burst:",
            ),
            (
                format!("{}[sds]\ndefault_all_bundles_name = \"ROOTCA\"\n", base()),
                "sds.default_all_bundles_name:",
            ),
        ];
        for (text, want) in cases {
            let e = Config::parse(&text).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
        assert!(Config::parse(&format!("bogus = 1\n{}", base()))
            .unwrap_err()
            .contains("bogus"));
    }
}
