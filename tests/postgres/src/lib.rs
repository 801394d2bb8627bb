//! A throwaway PostgreSQL cluster for tests: `initdb` into a private temp dir,
//! then `postgres` listening only on a Unix socket in that dir (no TCP, so no
//! port to race for), with trust authentication for superuser [`USER`].
//! Killed by pid on drop, and by the kernel if the test process dies.
//!
//! PostgreSQL refuses to run as root: as root, the cluster runs as the
//! `postgres` system user Debian's package creates, and owns the temp dir.
//! Binaries: the newest `/usr/lib/postgresql/<version>/bin` (Debian), else
//! `pg_config --bindir`. Missing binaries are an error, never a skip.

use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The cluster's superuser (trust authentication, socket only).
pub const USER: &str = "tessera";
/// Only names the socket file (`.s.PGSQL.<port>`) in the private dir.
const PORT: u16 = 5432;
const STARTUP: Duration = Duration::from_secs(30);
const SHUTDOWN: Duration = Duration::from_secs(5);

pub struct Cluster {
    child: Child,
    bindir: PathBuf,
    dir: tempfile::TempDir,
    /// Keeps the thread that forked `postgres` alive; dropped after the kill.
    _parent: mpsc::Sender<()>,
}

impl Cluster {
    /// Creates and starts a cluster; returns once it accepts connections.
    pub fn start() -> Result<Cluster> {
        let bindir = bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("tessera-pg-")
            .tempdir_in("/tmp")
            .context("create a temp dir in /tmp")?;
        let owner = run_as()?;
        if let Some(user) = &owner {
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
                .with_context(|| format!("chown {} to postgres", dir.path().display()))?;
        }
        // Readable so a caller other than the cluster's user can reach the socket.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let log = dir.path().join("postgres.log");
        let data = dir.path().join("data");
        let initdb = command(&bindir.join("initdb"), owner.as_ref(), dir.path(), &log)?
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", USER, "--auth=trust", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .status()
            .context("run initdb")?;
        ensure!(
            initdb.success(),
            "initdb failed ({initdb}):\n{}",
            tail(&log)
        );
        let mut postgres = command(&bindir.join("postgres"), owner.as_ref(), dir.path(), &log)?;
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-p", &PORT.to_string(), "-c", "listen_addresses="])
            // Throwaway data: no durability, little memory.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"]);
        let (child, _parent) = spawn_from_own_thread(postgres).context("start postgres")?;
        let mut cluster = Cluster {
            child,
            bindir,
            dir,
            _parent,
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// The Unix socket's directory.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `postgres://` URL for database `db` over the cluster's socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}@localhost/{db}?host={}&port={PORT}",
            self.socket_dir().display()
        )
    }

    /// Creates database `db` (`createdb`); returns its URL.
    pub fn create_database(&self, db: &str) -> Result<String> {
        let out = self.client("createdb").arg(db).output()?;
        ensure!(
            out.status.success(),
            "createdb {db} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(self.url(db))
    }

    /// The cluster's log so far (initdb's and the server's).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("postgres.log"))
    }

    /// A client tool from the server's bindir, pointed at the socket.
    fn client(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(tool));
        cmd.arg("--host")
            .arg(self.socket_dir())
            .args(["--port", &PORT.to_string(), "--username", USER])
            .stdin(Stdio::null());
        cmd
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "postgres exited ({st}) before it was ready:\n{}",
                    self.log()
                );
            }
            let ready = self
                .client("pg_isready")
                .args(["--dbname", "postgres", "--quiet"])
                .status()
                .context("run pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("postgres not ready within {STARTUP:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    /// Immediate shutdown (SIGQUIT): nothing here is worth a checkpoint.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let deadline = Instant::now() + SHUTDOWN;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The newest Debian `/usr/lib/postgresql/<version>/bin` with `initdb`, else `pg_config --bindir`.
fn bindir() -> Result<PathBuf> {
    let debian = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(debian)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file());
    from_pg_config.context(
        "PostgreSQL server binaries not found (no /usr/lib/postgresql/<version>/bin/initdb, \
         and `pg_config --bindir` names none): install Debian's `postgresql` package \
         (scripts/install-deps.sh does), or set TESSERA_TEST_POSTGRES_URL to a server",
    )
}

/// The user to run the cluster as: `postgres` when we are root, else ourselves (None).
fn run_as() -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres")? {
        Some(user) => Ok(Some(user)),
        None => bail!(
            "running as root, and PostgreSQL refuses root: no `postgres` user to run the \
             test cluster as (Debian's `postgresql` package creates it)"
        ),
    }
}

/// Spawns `cmd` from a thread that lives until the returned sender is dropped.
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, and the
/// caller's may not outlive the cluster: tokio's blocking pool retires a thread
/// idle for 10 s, which once killed a replica test's cluster under load.
fn spawn_from_own_thread(mut cmd: Command) -> Result<(Child, mpsc::Sender<()>)> {
    let (spawned_tx, spawned) = mpsc::channel();
    let (parent, stop) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let _ = spawned_tx.send(cmd.spawn());
            // Returns when the Cluster drops its sender.
            let _ = stop.recv();
        })
        .context("start the thread that runs postgres")?;
    let child = spawned
        .recv()
        .context("the thread that runs postgres died")??;
    Ok((child, parent))
}

/// `program` as `owner` (if any) in `dir`, output appended to `log`. Its fds >= 3
/// are close-on-exec (libtss2's swtpm sockets lack it, and a long-lived child holding
/// one stalls swtpm; see tessera_attestors' swtpm::command); SIGKILL if our thread dies.
fn command(
    program: &Path,
    owner: Option<&nix::unistd::User>,
    dir: &Path,
    log: &Path,
) -> Result<Command> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env_remove("PGDATA");
    if let Some(user) = owner {
        // std drops the supplementary groups when it changes the uid as root.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    // SAFETY: runs after the uid change (which would clear the death signal), and
    // makes only async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(|| {
            let cloexec = nix::libc::CLOSE_RANGE_CLOEXEC as nix::libc::c_int;
            let _ = nix::libc::close_range(3, u32::MAX, cloexec);
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)
        });
    }
    Ok(cmd)
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_serves_its_socket_and_goes_away_on_drop() {
        let pg = Cluster::start().expect("start a PostgreSQL cluster");
        let url = pg.create_database("probe").expect("createdb");
        assert!(url.contains("/probe?host=/tmp/tessera-pg-"), "{url}");
        let out = pg
            .client("psql")
            .args(["--dbname", "probe", "-tAc", "SELECT current_user"])
            .output()
            .expect("psql");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), USER);
        let pid = pg.child.id();
        let dir = pg.socket_dir().to_path_buf();
        assert!(dir.join(".s.PGSQL.5432").exists());
        drop(pg);
        assert!(!dir.exists(), "temp dir removed");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "postgres {pid} still running"
        );
    }

    /// The cluster outlives the thread that started it (as one started on tokio's
    /// blocking pool must, whose idle threads exit).
    #[test]
    fn cluster_outlives_the_thread_that_started_it() {
        let mut pg = std::thread::spawn(Cluster::start)
            .join()
            .expect("join the starting thread")
            .expect("start a PostgreSQL cluster");
        // PR_SET_PDEATHSIG is delivered as the thread exits; give it time to land.
        std::thread::sleep(Duration::from_millis(500));
        let exited = pg.child.try_wait().expect("wait for postgres");
        assert!(
            exited.is_none(),
            "postgres died with the thread that started it: {exited:?}"
        );
        pg.create_database("after")
            .expect("createdb after the thread exited");
    }
}
