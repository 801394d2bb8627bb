//! Authority replicas sharing one PostgreSQL datastore (a private [`Cluster`]): the
//! deployment's authority plus further replicas started from its config, each
//! with its own port, admin socket and data_dir. A replica's data_dir holds
//! copies of the first authority's CA and JWT keys, as an operator hands the same
//! keys to every replica, so all of them issue under one trust bundle.

use crate::authority::{admin_at, admin_ok_at};
use crate::cli::CmdOut;
use crate::process::{bin, Daemon};
use crate::readiness::listening_on;
use crate::{Deployment, STARTUP};
use anyhow::{ensure, Context, Result};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

pub use tessera_test_postgres::Cluster;

/// What an authority keeps in data_dir and every replica needs the same copy of.
const KEY_FILES: [&str; 4] = ["ca_cert.pem", "ca_key.pem", "jwt_key.pk8", "jwt_key.kid"];

/// Another authority replica; its daemon is in the deployment's `extra`.
pub struct Replica {
    pub name: String,
    pub port: u16,
    pub pid: u32,
    pub admin_socket: PathBuf,
}

impl Replica {
    /// Runs `tessera-authority <args> --admin-socket <this replica's>`.
    pub async fn admin(&self, args: &[&str]) -> Result<CmdOut> {
        admin_at(&self.admin_socket, args).await
    }

    /// An admin command that must succeed; returns its stdout.
    pub async fn admin_ok(&self, args: &[&str]) -> Result<String> {
        admin_ok_at(&self.admin_socket, args).await
    }
}

impl Deployment {
    /// Starts replica `name` of the (running) authority: its config with port 0, its
    /// own admin socket and data_dir, and copies of its key files. The config must
    /// name a shared `database_url` for the replicas to be one authority.
    pub async fn start_replica(&mut self, name: &str) -> Result<Replica> {
        let text = fs::read_to_string(self.authority_config())?;
        let data = self.dir.join(format!("{name}-data"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&data)
            .with_context(|| format!("create {}", data.display()))?;
        for f in KEY_FILES {
            fs::copy(self.authority_data().join(f), data.join(f))
                .with_context(|| format!("copy the authority's {f} to {}", data.display()))?;
        }
        let admin_socket = self.dir.join(format!("{name}-admin.sock"));
        let line = |key: &str, value: &str| format!("{key} = \"{value}\"");
        let mut cfg = String::new();
        for l in text.lines() {
            let key = l.split('=').next().unwrap_or("").trim();
            let l = match key {
                "listen_address" => line(key, "127.0.0.1:0"),
                "admin_socket_path" => line(key, &admin_socket.display().to_string()),
                "data_dir" => line(key, &data.display().to_string()),
                _ => l.to_string(),
            };
            cfg.push_str(&l);
            cfg.push('\n');
        }
        ensure!(
            cfg.contains(&format!("data_dir = \"{}\"", data.display())),
            "the authority config names no data_dir:\n{text}"
        );
        let cfg_path = self.dir.join(format!("{name}.toml"));
        fs::write(&cfg_path, cfg)?;
        let mut daemon = Daemon::spawn(
            name,
            &bin("tessera-authority")?,
            &[
                OsStr::new("run"),
                OsStr::new("--config"),
                cfg_path.as_os_str(),
            ],
            &self.dir.join(format!("{name}.log")),
            &[("TESSERA_LOG", "info")],
        )?;
        let ready = daemon.wait_ready(STARTUP).await;
        let pid = daemon.pid();
        self.extra.push(daemon);
        let addr = listening_on(&ready?).with_context(|| format!("{name}'s bound address"))?;
        Ok(Replica {
            name: name.to_string(),
            port: addr.port(),
            pid,
            admin_socket,
        })
    }
}
