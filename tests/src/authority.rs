//! The deployment's authority: start/stop, and its admin CLI.

use crate::cli::{run_cmd, CmdOut};
use crate::process::{bin, Daemon};
use crate::readiness::listening_on;
use crate::{secs, Deployment, STARTUP};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::ffi::OsStr;
use std::fs;
use std::path::Path;

/// What `Deployment::new` writes; replaced by the bound port after the first start.
const ANY_PORT: &str = "listen_address = \"127.0.0.1:0\"";

impl Deployment {
    /// Starts the authority and waits for its READY=1. It reports the address it bound
    /// (`STATUS=listening on <addr>`); a config that asked for port 0 is rewritten to
    /// name that port, so the agent's config and a restart agree with it.
    pub async fn start_authority(&mut self) -> Result<()> {
        ensure!(self.authority.is_none(), "authority already running");
        let cfg = self.authority_config();
        let mut daemon = Daemon::spawn(
            "authority",
            &bin("tessera-authority")?,
            &[OsStr::new("run"), OsStr::new("--config"), cfg.as_os_str()],
            &self.dir.join("authority.log"),
            &[("TESSERA_LOG", "info")],
        )?;
        let statuses = daemon.wait_ready(STARTUP).await?;
        let addr = listening_on(&statuses).context("tessera-authority's bound address")?;
        self.port = addr.port();
        let text = fs::read_to_string(&cfg)?;
        if text.contains(ANY_PORT) {
            let bound = format!("listen_address = \"{addr}\"");
            fs::write(&cfg, text.replace(ANY_PORT, &bound))?;
        }
        self.authority = Some(daemon);
        Ok(())
    }

    /// SIGTERM (SIGKILL after 5s). Fails unless it exited 0 within the grace period.
    pub async fn stop_authority(&mut self) -> Result<()> {
        let mut daemon = self
            .authority
            .take()
            .ok_or_else(|| anyhow!("the authority is not running"))?;
        let (st, in_time) = daemon.stop_async(secs(5)).await?;
        ensure!(
            in_time,
            "tessera-authority did not exit within 5s of SIGTERM"
        );
        ensure!(
            st.success(),
            "tessera-authority should exit 0 on SIGTERM, got {st}"
        );
        Ok(())
    }

    /// The running authority's telemetry `host:port` (see [`Daemon::telemetry`]).
    pub fn authority_telemetry(&mut self) -> Result<String> {
        self.authority
            .as_mut()
            .ok_or_else(|| anyhow!("the authority is not running"))?
            .telemetry()
    }

    /// The running authority's pid.
    pub fn authority_pid(&self) -> Result<u32> {
        self.authority
            .as_ref()
            .map(Daemon::pid)
            .ok_or_else(|| anyhow!("the authority is not running"))
    }

    /// Runs `tessera-authority <args> --admin-socket <this deployment's>`.
    pub async fn admin(&self, args: &[&str]) -> Result<CmdOut> {
        admin_at(&self.admin_socket(), args).await
    }

    /// Runs an admin command that must succeed; returns its stdout.
    pub async fn admin_ok(&self, args: &[&str]) -> Result<String> {
        admin_ok_at(&self.admin_socket(), args).await
    }

    pub async fn generate_token(&self) -> Result<String> {
        let token = self.admin_ok(&["token", "generate"]).await?;
        let token = token.trim().to_string();
        ensure!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "token generate printed {token:?}"
        );
        Ok(token)
    }

    /// Creates an entry under this deployment's agent; returns the entry ID.
    pub async fn create_entry(
        &self,
        spiffe_id: &str,
        selectors: &[&str],
        extra: &[&str],
    ) -> Result<String> {
        let mut args = vec![
            "entry",
            "create",
            "--parent-id",
            &self.agent_id,
            "--spiffe-id",
            spiffe_id,
        ];
        for s in selectors {
            args.push("--selector");
            args.push(s);
        }
        args.extend_from_slice(extra);
        let id = self.admin_ok(&args).await?.trim().to_string();
        ensure!(
            !id.is_empty() && !id.contains(char::is_whitespace),
            "entry create printed {id:?} instead of an entry ID"
        );
        Ok(id)
    }

    /// An entry matching this process (it runs as root): `unix:uid:0`.
    /// Returns (SPIFFE ID, entry ID).
    pub async fn register_self(&self, path: &str, extra: &[&str]) -> Result<(String, String)> {
        let spiffe_id = format!("spiffe://{}/{path}", crate::TD);
        let entry = self
            .create_entry(&spiffe_id, &["unix:uid:0"], extra)
            .await?;
        Ok((spiffe_id, entry))
    }

    pub async fn delete_entry(&self, entry_id: &str) -> Result<()> {
        self.admin_ok(&["entry", "delete", entry_id]).await?;
        Ok(())
    }

    /// `Agent ID : ...` lines of `agent list`.
    pub async fn agent_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .admin_ok(&["agent", "list"])
            .await?
            .lines()
            .filter_map(|l| l.strip_prefix("Agent ID"))
            .map(|rest| rest.trim_start().trim_start_matches(':').trim().to_string())
            .collect())
    }

    pub fn bundle_pem(&self) -> Result<String> {
        let path = self.dir.join("bundle.pem");
        fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    }

    /// The authority's JWT signing key (PKCS#8 DER) and its kid, read from its data_dir,
    /// so tests can mint tokens that differ from a valid one in exactly one respect.
    pub fn jwt_signing_key(&self) -> Result<(Vec<u8>, String)> {
        let data = self.authority_data();
        let der = fs::read(data.join("jwt_key.pk8")).with_context(|| {
            format!(
                "cannot read the authority's JWT key {}/jwt_key.pk8",
                data.display()
            )
        })?;
        let kid = fs::read_to_string(data.join("jwt_key.kid"))
            .with_context(|| format!("read {}/jwt_key.kid", data.display()))?;
        Ok((der, kid.trim().to_string()))
    }
}

/// Runs `tessera-authority <args> --admin-socket <sock>`.
pub(crate) async fn admin_at(sock: &Path, args: &[&str]) -> Result<CmdOut> {
    let sock = sock
        .to_str()
        .ok_or_else(|| anyhow!("admin socket path is not UTF-8"))?;
    let mut all: Vec<&str> = args.to_vec();
    all.push("--admin-socket");
    all.push(sock);
    run_cmd(&bin("tessera-authority")?, &all, None, &[]).await
}

/// `admin_at` that must succeed; returns its stdout.
pub(crate) async fn admin_ok_at(sock: &Path, args: &[&str]) -> Result<String> {
    let out = admin_at(sock, args).await?;
    if !out.success() {
        bail!(
            "tessera-authority {} failed ({}): {}",
            args.join(" "),
            out.status,
            out.stderr
        );
    }
    Ok(out.stdout)
}
