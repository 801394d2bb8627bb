//! A deployment: one authority and (once started) one agent, in a private temp dir,
//! configured through files an operator would write. On a panic it prints both
//! daemons' logs before it stops them.

use crate::process::{tail, Daemon};
use crate::TD;
use anyhow::{ensure, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Agent limits for one local user doing what many would (the bench, the
/// soak): the per-uid caps raised to the global ones; every other default stays.
pub const ONE_UID_AS_MANY: &str = "\n[workload_api]\nmax_connections_per_uid = 1024\n\
    attestations_per_second = 1000000\nattestation_burst = 1000000\n";

#[derive(Clone, Debug)]
pub struct Opts {
    pub default_x509_ttl: &'static str,
    pub default_jwt_ttl: &'static str,
    pub agent_ttl: &'static str,
    /// Appended to the authority's config (e.g. a `[tpm]` section).
    pub authority_extra: String,
    /// Appended to every agent config the deployment writes (e.g. `[telemetry]`).
    pub agent_extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            default_x509_ttl: "1h",
            default_jwt_ttl: "5m",
            agent_ttl: "1h",
            authority_extra: String::new(),
            agent_extra: String::new(),
        }
    }
}

pub struct Deployment {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    /// The authority's port: it binds port 0 at its first start and reports the
    /// port it got; its config then names that port, so a restart keeps it.
    pub port: u16,
    /// The join token in the agent's config (already consumed once the agent attested).
    pub token: String,
    /// `spiffe://example.org/tessera/agent/join_token/<token>`.
    pub agent_id: String,
    pub(crate) authority: Option<Daemon>,
    pub(crate) agent: Option<Daemon>,
    /// Further daemons a test started (e.g. a second agent); their logs are printed too.
    pub extra: Vec<Daemon>,
    /// `Opts::agent_extra`.
    pub agent_extra: String,
}

impl Deployment {
    /// Starts an authority, generates a join token and writes the agent's config and trust
    /// bundle. The agent is not started: register entries first, then `start_agent`.
    pub async fn new(opts: Opts) -> Result<Deployment> {
        let tmp = tempfile::Builder::new()
            .prefix("tessera-e2e-")
            .tempdir_in("/tmp")
            .context("create a temp dir in /tmp")?;
        // A non-root child must be able to reach the agent socket inside it.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))?;
        let dir = tmp.path().to_path_buf();
        let cfg = format!(
            "trust_domain = \"{TD}\"\n\
             listen_address = \"127.0.0.1:0\"\n\
             admin_socket_path = \"{admin}\"\n\
             data_dir = \"{data}\"\n\
             default_x509_ttl = \"{x509}\"\n\
             default_jwt_ttl = \"{jwt}\"\n\
             agent_ttl = \"{agent}\"\n{extra}",
            admin = dir.join("admin.sock").display(),
            data = dir.join("authority").display(),
            x509 = opts.default_x509_ttl,
            jwt = opts.default_jwt_ttl,
            agent = opts.agent_ttl,
            extra = opts.authority_extra,
        );
        fs::write(dir.join("authority.toml"), cfg)?;
        let mut d = Deployment {
            dir,
            _tmp: tmp,
            port: 0,
            token: String::new(),
            agent_id: String::new(),
            authority: None,
            agent: None,
            extra: Vec::new(),
            agent_extra: opts.agent_extra.clone(),
        };
        d.start_authority().await?;
        d.token = d.generate_token().await?;
        d.agent_id = format!("spiffe://{TD}/tessera/agent/join_token/{}", d.token);
        let pem = d.admin_ok(&["bundle", "show", "--format", "pem"]).await?;
        ensure!(
            pem.contains("-----BEGIN CERTIFICATE-----"),
            "bundle show --format pem printed no certificate: {pem:?}"
        );
        fs::write(d.dir.join("bundle.pem"), pem)?;
        let (cfg, token) = (d.agent_config(), d.token.clone());
        d.write_agent_config(&cfg, &d.socket_path(), &d.dir.join("agent-data"), &token)?;
        Ok(d)
    }

    /// `new` + an entry for this process (`unix:uid:0`) with SPIFFE ID
    /// `spiffe://example.org/<path>` + the agent. Returns the SPIFFE ID.
    pub async fn up(path: &str) -> Result<(Deployment, String)> {
        let mut d = Deployment::new(Opts::default()).await?;
        let (id, _) = d.register_self(path, &[]).await?;
        d.start_agent().await?;
        Ok((d, id))
    }

    // ---- paths

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
    pub fn authority_config(&self) -> PathBuf {
        self.dir.join("authority.toml")
    }
    pub fn authority_data(&self) -> PathBuf {
        self.dir.join("authority")
    }
    pub fn agent_config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("agent").join("api.sock")
    }
    pub fn socket_uri(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    pub fn write_agent_config(
        &self,
        path: &Path,
        socket: &Path,
        data_dir: &Path,
        token: &str,
    ) -> Result<()> {
        let cfg = format!(
            "trust_domain = \"{TD}\"\n\
             authority_address = \"127.0.0.1:{port}\"\n\
             trust_bundle_path = \"{bundle}\"\n\
             socket_path = \"{socket}\"\n\
             data_dir = \"{data}\"\n\
             sync_interval = \"500ms\"\n\
             \n\
             [node_attestation]\n\
             method = \"join_token\"\n\
             join_token = \"{token}\"\n",
            port = self.port,
            bundle = self.dir.join("bundle.pem").display(),
            socket = socket.display(),
            data = data_dir.display(),
        );
        fs::write(path, cfg + &self.agent_extra)
            .with_context(|| format!("write {}", path.display()))
    }

    // ---- logs

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, log) in [
            ("authority", self.dir.join("authority.log")),
            ("agent", self.dir.join("agent.log")),
        ] {
            s.push_str(&format!(
                "----- {name} log ({}) -----\n{}\n",
                log.display(),
                tail(&log, 150)
            ));
        }
        for d in &self.extra {
            s.push_str(&format!(
                "----- {} log ({}) -----\n{}\n",
                d.name,
                d.log.display(),
                tail(&d.log, 80)
            ));
        }
        s
    }

    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n===== test failed; daemon logs from {} =====\n{}",
                self.dir.display(),
                self.logs()
            );
        }
        for mut d in self.extra.drain(..) {
            d.stop();
        }
        if let Some(mut d) = self.agent.take() {
            d.stop();
        }
        if let Some(mut d) = self.authority.take() {
            d.stop();
        }
    }
}
