//! The authority's TOML configuration.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_attestors::node::tpm::policy::{BootPolicy, BootPolicyConfig};
use tessera_attestors::node::tpm::public::EkTemplate;
use tessera_common::config::{self, ConfigError};
use tessera_common::{duration, TrustDomain};

pub const DEFAULT_ADMIN_SOCKET: &str = "/run/tessera/authority-admin.sock";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    trust_domain: String,
    listen_address: String,
    admin_socket_path: Option<PathBuf>,
    data_dir: PathBuf,
    database_url: Option<String>,
    default_x509_ttl: Option<String>,
    default_jwt_ttl: Option<String>,
    agent_ttl: Option<String>,
    join_token_ttl: Option<String>,
    ca_ttl: Option<String>,
    /// Extra DNS names / IPs for the authority's TLS certificate.
    #[serde(default)]
    server_names: Vec<String>,
    #[serde(default)]
    ca: Option<UpstreamCa>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    tpm: Option<TpmRaw>,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default)]
    limits: crate::limits::LimitsRaw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TpmRaw {
    ek_ca_dir: Option<PathBuf>,
    #[serde(default)]
    allowed_ek_hashes: Vec<String>,
    pcrs: Option<Vec<u8>>,
    ek_template: Option<String>,
    #[serde(default)]
    policy: Vec<BootPolicyConfig>,
}

/// TPM node attestation settings; present means the `tpm` method is enabled.
#[derive(Debug, Clone)]
pub struct TpmConfig {
    pub ek_ca_dir: Option<PathBuf>,
    pub allowed_ek_hashes: Vec<String>,
    pub pcrs: Vec<u8>,
    /// Which of a TPM's EKs identifies it; the others are refused.
    pub ek_template: EkTemplate,
    pub policies: Vec<BootPolicy>,
}

/// RSA-2048, low range: the EK nearly every TPM has, with its certificate at 0x01C00002.
pub const DEFAULT_EK_TEMPLATE: EkTemplate = EkTemplate::L1Rsa2048;

/// What the firmware event log covers: the firmware's PCRs 0-7, the boot
/// loader's 8-9 (grub), 12 (systemd-boot's kernel command line) and 14 (shim).
pub const DEFAULT_PCRS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14];

fn tpm_config(raw: TpmRaw) -> Result<TpmConfig, String> {
    let pcrs = raw.pcrs.unwrap_or_else(|| DEFAULT_PCRS.to_vec());
    if pcrs.is_empty() || pcrs.iter().any(|p| *p >= 24) {
        return Err("tpm.pcrs: PCR indices must be 0-23, at least one".into());
    }
    for h in &raw.allowed_ek_hashes {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "tpm.allowed_ek_hashes: {h:?} is not a SHA-256 hex digest"
            ));
        }
    }
    let policies = raw
        .policy
        .iter()
        .map(BootPolicy::new)
        .collect::<Result<Vec<_>, _>>()?;
    for p in &policies {
        p.check_quoted(&pcrs)?;
    }
    if raw.ek_ca_dir.is_none() && raw.allowed_ek_hashes.is_empty() {
        return Err("tpm: set ek_ca_dir (manufacturer CAs) or allowed_ek_hashes".into());
    }
    Ok(TpmConfig {
        ek_ca_dir: raw.ek_ca_dir,
        allowed_ek_hashes: raw.allowed_ek_hashes,
        pcrs,
        ek_template: match raw.ek_template {
            Some(t) => t.parse().map_err(|e| format!("tpm.ek_template: {e}"))?,
            None => DEFAULT_EK_TEMPLATE,
        },
        policies,
    })
}

/// Operator-supplied CA: the authority signs as an intermediate under it.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCa {
    /// PEM: the CA certificate the authority signs with, then its parents.
    pub cert_file: PathBuf,
    /// PEM PKCS#8 private key of that certificate.
    pub key_file: PathBuf,
    /// PEM roots to publish in the bundle; defaults to the last certificate of `cert_file`.
    pub bundle_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: Option<String>,
    #[serde(default)]
    pub json: bool,
}

/// `/metrics`, `/live` and `/ready` over HTTP; off unless `listen` is set.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub listen: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub trust_domain: TrustDomain,
    pub listen_address: std::net::SocketAddr,
    pub admin_socket_path: PathBuf,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub default_x509_ttl: Duration,
    pub default_jwt_ttl: Duration,
    pub agent_ttl: Duration,
    pub join_token_ttl: Duration,
    pub ca_ttl: Duration,
    pub server_names: Vec<String>,
    pub ca: Option<UpstreamCa>,
    pub log: LogConfig,
    pub tpm: Option<TpmConfig>,
    pub telemetry: TelemetryConfig,
    pub limits: crate::limits::Limits,
    /// The file this was loaded from; SIGHUP re-reads it.
    pub source: Option<PathBuf>,
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
        let listen_address = raw.listen_address.parse().map_err(|_| {
            format!(
                "listen_address: {:?} is not host:port with an IP address",
                raw.listen_address
            )
        })?;
        if !raw.data_dir.is_absolute() {
            return Err(format!(
                "data_dir: {:?} must be an absolute path",
                raw.data_dir
            ));
        }
        let database_url = match raw.database_url {
            Some(u)
                if u.starts_with("sqlite:")
                    || u.starts_with("postgres://")
                    || u.starts_with("postgresql://") =>
            {
                u
            }
            Some(u) => {
                return Err(format!(
                    "database_url: {u:?} must start with sqlite: or postgres://"
                ))
            }
            None => format!(
                "sqlite://{}?mode=rwc",
                raw.data_dir.join("datastore.sqlite3").display()
            ),
        };
        if let Some(listen) = &raw.telemetry.listen {
            tessera_common::telemetry::parse_listen(listen)?;
        }
        if let Some(level) = &raw.log.level {
            tessera_common::logging::check_level(level)?;
        }
        let hour = Duration::from_secs(3600);
        let cfg = Config {
            trust_domain,
            listen_address,
            admin_socket_path: raw
                .admin_socket_path
                .unwrap_or_else(|| DEFAULT_ADMIN_SOCKET.into()),
            data_dir: raw.data_dir,
            database_url,
            default_x509_ttl: duration::field("default_x509_ttl", raw.default_x509_ttl.as_deref())?
                .unwrap_or(hour),
            default_jwt_ttl: duration::field("default_jwt_ttl", raw.default_jwt_ttl.as_deref())?
                .unwrap_or(Duration::from_secs(300)),
            agent_ttl: duration::field("agent_ttl", raw.agent_ttl.as_deref())?.unwrap_or(hour),
            join_token_ttl: duration::field("join_token_ttl", raw.join_token_ttl.as_deref())?
                .unwrap_or(Duration::from_secs(600)),
            ca_ttl: duration::field("ca_ttl", raw.ca_ttl.as_deref())?
                .unwrap_or(Duration::from_secs(365 * 24 * 3600)),
            server_names: raw.server_names,
            ca: raw.ca,
            log: raw.log,
            tpm: raw.tpm.map(tpm_config).transpose()?,
            telemetry: raw.telemetry,
            limits: raw.limits.validate()?,
            source: None,
        };
        for (field, ttl) in [
            ("default_x509_ttl", cfg.default_x509_ttl),
            ("default_jwt_ttl", cfg.default_jwt_ttl),
            ("agent_ttl", cfg.agent_ttl),
        ] {
            if ttl >= cfg.ca_ttl {
                return Err(format!("{field}: must be shorter than ca_ttl"));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, EkTemplate, DEFAULT_EK_TEMPLATE};

    const MIN: &str = "trust_domain = \"example.org\"\nlisten_address = \"127.0.0.1:8081\"\ndata_dir = \"/var/lib/tessera\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.default_x509_ttl.as_secs(), 3600);
        assert_eq!(c.default_jwt_ttl.as_secs(), 300);
        assert!(c.database_url.starts_with("sqlite:///var/lib/tessera/"));
    }

    #[test]
    fn tpm_section() {
        let tpm = format!("{MIN}[tpm]\nek_ca_dir = \"/etc/tessera/ek-ca\"\n[[tpm.policy]]\nname = \"sb\"\nrequire_secure_boot = true\n");
        let c = Config::parse(&tpm).unwrap().tpm.unwrap();
        assert_eq!(c.pcrs, super::DEFAULT_PCRS.to_vec());
        assert_eq!(c.policies[0].name, "sb");
        assert_eq!(c.ek_template, DEFAULT_EK_TEMPLATE);
        let ecc = format!("{MIN}[tpm]\nek_ca_dir = \"/x\"\nek_template = \"H-3\"\n");
        assert_eq!(
            Config::parse(&ecc).unwrap().tpm.unwrap().ek_template,
            EkTemplate::H3EccP384
        );
        let bad = format!("{MIN}[tpm]\nek_ca_dir = \"/x\"\nek_template = \"rsa\"\n");
        assert!(Config::parse(&bad)
            .unwrap_err()
            .starts_with("tpm.ek_template: \"rsa\" is not an EK template"));
        let bad = format!("{MIN}[tpm]\n");
        assert!(Config::parse(&bad).unwrap_err().starts_with("tpm:"));
        let bad = format!("{MIN}[tpm]\nek_ca_dir = \"/x\"\npcrs = [24]\n");
        assert!(Config::parse(&bad).unwrap_err().starts_with("tpm.pcrs:"));
        let bad = format!("{MIN}[tpm]\nek_ca_dir = \"/x\"\npcrs = [7]\n[[tpm.policy]]\nname = \"g\"\npcrs = {{ \"0\" = \"00\" }}\n");
        assert_eq!(
            Config::parse(&bad).unwrap_err(),
            "tpm.policy \"g\": pcrs reads PCR 0, which tpm.pcrs does not quote"
        );
        let bad = format!("{MIN}[tpm]\nek_ca_dir = \"/x\"\npcrs = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]\n[[tpm.policy]]\nname = \"cmd\"\nkernel_cmdline = [\"quiet\"]\n");
        assert_eq!(
            Config::parse(&bad).unwrap_err(),
            "tpm.policy \"cmd\": kernel_cmdline reads PCR 12, which tpm.pcrs does not quote"
        );
        let bad = format!("{MIN}[tpm]\nek_ca_dir = \"/x\"\npcrs = [0, 7]\n[[tpm.policy]]\nname = \"apps\"\nboot_digests = [\"00\"]\n");
        assert!(Config::parse(&bad)
            .unwrap_err()
            .contains("boot_digests reads PCR 4"));
    }

    #[test]
    fn errors_name_the_field() {
        let bad_td = MIN.replace("example.org", "Example.org");
        assert!(Config::parse(&bad_td)
            .unwrap_err()
            .starts_with("trust_domain:"));
        let bad_addr = MIN.replace("127.0.0.1:8081", "localhost");
        assert!(Config::parse(&bad_addr)
            .unwrap_err()
            .starts_with("listen_address:"));
        let unknown = format!("{MIN}colour = \"blue\"\n");
        assert!(Config::parse(&unknown).unwrap_err().contains("colour"));
        let ttl = format!("{MIN}default_x509_ttl = \"soon\"\n");
        assert!(Config::parse(&ttl)
            .unwrap_err()
            .starts_with("default_x509_ttl:"));
        let relative = MIN.replace("/var/lib/tessera", "data");
        assert!(Config::parse(&relative)
            .unwrap_err()
            .starts_with("data_dir:"));
        let listen = format!("{MIN}[telemetry]\nlisten = \"metrics.local:9090\"\n");
        assert!(Config::parse(&listen)
            .unwrap_err()
            .starts_with("telemetry.listen:"));
        let level = format!("{MIN}[log]\nlevel = \"tessera=loud\"\n");
        assert!(Config::parse(&level).unwrap_err().starts_with("log.level:"));
    }

    #[test]
    fn telemetry_section() {
        let c = Config::parse(&format!("{MIN}[telemetry]\nlisten = \"127.0.0.1:9090\"\n")).unwrap();
        assert_eq!(c.telemetry.listen.as_deref(), Some("127.0.0.1:9090"));
        assert!(Config::parse(MIN).unwrap().telemetry.listen.is_none());
    }
}
