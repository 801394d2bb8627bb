//! One-shot CLI runs (the admin CLI, `tessera-agent eventlog`, ...), bounded in time.

use crate::grpc::deadline;
use crate::process::child_command;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct CmdOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The contract: a non-zero exit and exactly one `error: ...` line (clap's fixed
    /// "For more information, try '--help'." hint is tolerated), never a panic.
    /// Returns the error line, or what is wrong.
    pub fn check_one_line_error(&self) -> Result<String, String> {
        if self.success() {
            return Err(format!(
                "exit 0 (expected non-zero); stdout: {:?}",
                self.stdout.chars().take(300).collect::<String>()
            ));
        }
        if self.status.code().is_none() {
            return Err(format!(
                "killed by a signal ({:?}); stderr: {}",
                self.status, self.stderr
            ));
        }
        if self.stderr.contains("panicked") || self.stderr.contains("RUST_BACKTRACE") {
            return Err(format!("panicked: {}", self.stderr));
        }
        let lines: Vec<&str> = self
            .stderr_lines()
            .into_iter()
            .filter(|l| l.trim() != "For more information, try '--help'.")
            .collect();
        if lines.len() == 1 && lines[0].starts_with("error: ") {
            Ok(lines[0].to_string())
        } else {
            Err(format!(
                "expected exactly one `error: ...` line on stderr, got {} lines: {:?}",
                lines.len(),
                self.stderr
            ))
        }
    }

    /// A test assertion: `check_one_line_error`, panicking with `what` on failure.
    pub fn assert_one_line_error(&self, what: &str) -> String {
        match self.check_one_line_error() {
            Ok(line) => line,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Runs a CLI to completion (killed after 30s). `uid` runs it as another user.
pub async fn run_cmd(
    program: &Path,
    args: &[&str],
    uid: Option<u32>,
    env: &[(&str, &str)],
) -> Result<CmdOut> {
    let mut cmd = tokio::process::Command::from(child_command(program));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("RUST_BACKTRACE")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(u) = uid {
        cmd.uid(u).gid(u);
    }
    let what = format!("{} {}", program.display(), args.join(" "));
    let out = deadline(CLI_TIMEOUT, &what, cmd.output())
        .await?
        .with_context(|| format!("cannot run {what}"))?;
    Ok(CmdOut {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
