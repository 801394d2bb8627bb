//! The deployment's agent: start/stop, its CLI, and Workload API clients on its socket.

use crate::cli::{run_cmd, CmdOut};
use crate::grpc::{deadline, uds_channel, Raw};
use crate::process::{bin, Daemon};
use crate::{secs, Deployment, STARTUP};
use anyhow::{anyhow, ensure, Context, Result};
use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitStatus;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::Channel;

impl Deployment {
    /// Starts the agent and waits for its READY=1 (sent once its Workload API socket
    /// is served; callers get Unavailable until it has attested).
    pub async fn start_agent(&mut self) -> Result<()> {
        self.spawn_agent()?;
        match self.agent.as_mut() {
            Some(agent) => agent.wait_ready(STARTUP).await.map(drop),
            None => Err(anyhow!("the agent was not started")),
        }
    }

    /// Waits until the running agent reports `STATUS=attested as …`, sent once
    /// its first credential is stored in `data_dir` (READY=1 comes before that).
    pub async fn wait_agent_attested(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            let agent = self
                .agent
                .as_mut()
                .ok_or_else(|| anyhow!("the agent is not running"))?;
            if agent
                .statuses()
                .iter()
                .any(|s| s.starts_with("attested as "))
            {
                return Ok(());
            }
            ensure!(
                agent.exited().is_none(),
                "the agent exited before attesting"
            );
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the agent did not attest within {STARTUP:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Starts the agent without waiting for anything.
    pub fn spawn_agent(&mut self) -> Result<()> {
        ensure!(self.agent.is_none(), "agent already running");
        let daemon =
            self.spawn_agent_daemon("agent", &self.agent_config(), &self.dir.join("agent.log"))?;
        self.agent = Some(daemon);
        Ok(())
    }

    pub fn spawn_agent_daemon(&self, name: &str, config: &Path, log: &Path) -> Result<Daemon> {
        Daemon::spawn(
            name,
            &bin("tessera-agent")?,
            &[
                OsStr::new("run"),
                OsStr::new("--config"),
                config.as_os_str(),
            ],
            log,
            &[("TESSERA_LOG", "info,tessera_agent=debug")],
        )
    }

    /// SIGTERM and up to 5s to exit (then SIGKILL). Returns (status, exited in time).
    pub async fn stop_agent(&mut self) -> Result<(ExitStatus, bool)> {
        let mut daemon = self
            .agent
            .take()
            .ok_or_else(|| anyhow!("the agent is not running"))?;
        daemon.stop_async(secs(5)).await
    }

    /// `stop_agent`, failing unless it exited 0 within the grace period.
    pub async fn stop_agent_cleanly(&mut self) -> Result<()> {
        let (st, in_time) = self.stop_agent().await?;
        ensure!(in_time, "tessera-agent did not exit within 5s of SIGTERM");
        ensure!(
            st.success(),
            "tessera-agent should exit 0 on SIGTERM, got {st}"
        );
        Ok(())
    }

    /// The running agent's telemetry `host:port` (see [`Daemon::telemetry`]).
    pub fn agent_telemetry(&mut self) -> Result<String> {
        self.agent
            .as_mut()
            .ok_or_else(|| anyhow!("the agent is not running"))?
            .telemetry()
    }

    /// The running agent's pid.
    pub fn agent_pid(&self) -> Result<u32> {
        self.agent
            .as_ref()
            .map(Daemon::pid)
            .ok_or_else(|| anyhow!("the agent is not running"))
    }

    /// `Some(status)` if the agent process has exited.
    pub fn agent_exited(&mut self) -> Option<ExitStatus> {
        self.agent.as_mut().and_then(|d| d.exited())
    }

    pub async fn agent_cli(&self, args: &[&str]) -> Result<CmdOut> {
        run_cmd(&bin("tessera-agent")?, args, None, &[]).await
    }

    /// The `spiffe` crate's client on `unix://<socket>`.
    pub async fn client(&self) -> Result<spiffe::WorkloadApiClient> {
        let uri = self.socket_uri();
        deadline(
            secs(10),
            "connect the spiffe WorkloadApiClient",
            spiffe::WorkloadApiClient::connect_to(uri.clone()),
        )
        .await?
        .with_context(|| format!("spiffe WorkloadApiClient::connect_to({uri})"))
    }

    /// A raw tonic client on the agent socket (a new connection).
    pub async fn raw(&self) -> Result<Raw> {
        Ok(SpiffeWorkloadApiClient::new(self.channel().await?))
    }

    pub async fn channel(&self) -> Result<Channel> {
        uds_channel(&self.socket_path()).await
    }
}
