//! Faults the end-to-end tests inject into a deployment: a daemon killed
//! with SIGKILL (no shutdown path runs), as a crash or the OOM killer would.

use crate::process::Daemon;
use crate::{secs, Deployment};
use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

impl Deployment {
    /// SIGKILLs the authority and reaps it; `start_authority` brings it back on its port.
    pub async fn kill_authority(&mut self) -> Result<()> {
        let d = self
            .authority
            .take()
            .ok_or_else(|| anyhow!("the authority is not running"))?;
        sigkill(d).await
    }

    /// SIGKILLs the agent and reaps it; `start_agent` starts it again.
    pub async fn kill_agent(&mut self) -> Result<()> {
        let d = self
            .agent
            .take()
            .ok_or_else(|| anyhow!("the agent is not running"))?;
        sigkill(d).await
    }
}

async fn sigkill(mut d: Daemon) -> Result<()> {
    kill(Pid::from_raw(d.pid() as i32), Signal::SIGKILL)
        .with_context(|| format!("SIGKILL {}", d.name()))?;
    d.stop_async(secs(5)).await.map(drop)
}
