//! Test support: a private, provisioned swtpm per test.
//!
//! API:
//! * [`Swtpm::start()`] runs `swtpm_setup` (TPM 2.0, sha1+sha256 banks, RSA-2048 and
//!   P-384 EKs with certificates, platform certificate) with a private local CA
//!   under a fresh temp dir, then `swtpm socket` on two free loopback ports.
//!   Nothing under /etc or /var/lib/swtpm-localca is read or written.
//! * [`Swtpm::tcti()`] is the TCTI string for [`super::Tpm::open`] and
//!   [`Swtpm::tools_tcti()`] the same for tpm2-tools' `-T`.
//! * [`Swtpm::ca_certs()`] are the local CA's issuer and root certificate (PEM paths).
//! * [`Swtpm::dir()`] is a scratch dir removed on drop; the swtpm process is
//!   killed by pid on drop.
//! * [`Swtpm::reboot()`] power-cycles it (same state and ports; reset count up).
//! * [`Swtpm::crash()`] SIGKILLs it (no TPM2_Shutdown) and [`Swtpm::start_again()`]
//!   brings it back on the same state and ports: a TPM that vanished and returned.
//! * [`Swtpm::tool()`] runs a tpm2-tools command against it (e.g. `tpm2_pcrextend`),
//!   fine between two [`super::Tpm`] calls: libtss2's swtpm TCTI connects per
//!   command, and swtpm serves one connection at a time.
//! * [`make_credential()`] is `tpm2_makecredential -T none` (no TPM needed), an
//!   independent MakeCredential to check activation or the authority against;
//!   [`parse_credential_file()`] splits its output format.
//!
//! Pitfall: those per-command sockets are opened without O_CLOEXEC, so a child
//! forked while a TPM command is in flight inherits one and swtpm then waits
//! on it (hang) until that child exits. Every process spawned here marks its
//! fds >= 3 close-on-exec; spawn others likewise (see [`command()`]).
//!
//! Needs `swtpm`, `swtpm_setup`, `swtpm_localca` (and tpm2-tools for the
//! helpers) on PATH.

use std::fs;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running, provisioned software TPM. Killed on drop.
pub struct Swtpm {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Swtpm {
    /// Provision a new TPM state and start swtpm on it.
    pub fn start() -> io::Result<Swtpm> {
        let dir = tempfile::Builder::new()
            .prefix("tessera-swtpm-")
            .tempdir()?;
        provision(dir.path())?;
        // Ports can be taken between probing and binding: retry a few times.
        let _serial = super::super::SWTPM_START
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port_pair()?;
            match spawn(dir.path(), port) {
                Ok(child) => return Ok(Swtpm { child, port, dir }),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("swtpm did not start")))
    }

    /// Orderly reboot: TPM2_Shutdown(CLEAR) (so the clock stays "safe"), then
    /// swtpm is started again on the same state and ports and its
    /// TPM2_Startup(CLEAR) is a TPM Reset (reset count up, PCRs back to zero,
    /// persistent objects and NV kept).
    pub fn reboot(&mut self) -> io::Result<()> {
        self.tool(&["tpm2_shutdown", "--clear"])?;
        let _ = self.child.kill();
        self.child.wait()?;
        let _serial = super::super::SWTPM_START
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.child = spawn(self.dir.path(), self.port)?;
        Ok(())
    }

    /// The swtpm process (to stop it with SIGSTOP: a TPM that does not answer).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no TPM2_Shutdown: every command fails until [`Swtpm::start_again`].
    pub fn crash(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// Starts swtpm again after [`Swtpm::crash`] on the same state and ports
    /// (a TPM Reset: PCRs zero, reset count up, persistent objects and NV kept).
    /// Retried for 30 s: the killed one's sockets may linger, and while it was down a
    /// loopback connection elsewhere may have been given one of its ports as its source.
    pub fn start_again(&mut self) -> io::Result<()> {
        let _serial = super::super::SWTPM_START
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut tries = 0;
        loop {
            match spawn(self.dir.path(), self.port) {
                Ok(child) => {
                    self.child = child;
                    return Ok(());
                }
                Err(e) if tries >= 100 => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
            tries += 1;
        }
    }

    /// TCTI configuration for `tss-esapi`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// TCTI option for tpm2-tools (`-T`).
    pub fn tools_tcti(&self) -> String {
        self.tcti()
    }

    /// Command port; the control port is `port() + 1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Scratch dir (also holds the TPM state and the CA).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run a tpm2-tools command (`args[0]` is the tool) against this swtpm.
    pub fn tool(&self, args: &[&str]) -> io::Result<Vec<u8>> {
        let (tool, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::other("no tool given"))?;
        let out = command(tool)
            .args(rest)
            .env("TPM2TOOLS_TCTI", self.tools_tcti())
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(out.stdout)
    }

    /// PEM files of the local CA: (intermediate "swtpm-localca", root).
    pub fn ca_certs(&self) -> (PathBuf, PathBuf) {
        let ca = self.dir.path().join("ca");
        (
            ca.join("issuercert.pem"),
            ca.join("swtpm-localca-rootca-cert.pem"),
        )
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Command::new(program)` whose child cannot inherit descriptors >= 3 (TPM
/// sockets from other threads) past exec.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    tessera_common::child::stdio_only(&mut cmd);
    cmd
}

fn provision(dir: &Path) -> io::Result<()> {
    let state = dir.join("state");
    let ca = dir.join("ca");
    fs::create_dir_all(&state)?;
    fs::create_dir_all(&ca)?;
    let d = dir.display();
    write(
        &dir.join("swtpm_setup.conf"),
        &format!(
            "create_certs_tool = /usr/bin/swtpm_localca\n\
             create_certs_tool_config = {d}/swtpm-localca.conf\n\
             create_certs_tool_options = {d}/swtpm-localca.options\n\
             active_pcr_banks = sha1,sha256\n"
        ),
    )?;
    let ca = ca.display();
    write(
        &dir.join("swtpm-localca.conf"),
        &format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\n\
             issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n"
        ),
    )?;
    write(
        &dir.join("swtpm-localca.options"),
        "--platform-manufacturer Tessera\n--platform-version 2.1\n--platform-model swtpm\n",
    )?;
    let out = command("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(&state)
        .args(["--create-ek-cert", "--create-platform-cert"])
        .arg("--config")
        .arg(dir.join("swtpm_setup.conf"))
        .args(["--pcr-banks", "sha1,sha256", "--overwrite"])
        .arg("--logfile")
        .arg(dir.join("swtpm_setup.log"))
        // Keep user config files (~/.config) out of the picture.
        .env("XDG_CONFIG_HOME", dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        let log = fs::read_to_string(dir.join("swtpm_setup.log")).unwrap_or_default();
        return Err(io::Error::other(format!(
            "swtpm_setup failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            log
        )));
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    fs::File::create(path)?.write_all(text.as_bytes())
}

/// A port P such that P and P+1 are both free on 127.0.0.1 right now.
fn free_port_pair() -> io::Result<u16> {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let p = l.local_addr()?.port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(io::Error::other("no free loopback port pair"))
}

fn spawn(dir: &Path, port: u16) -> io::Result<Child> {
    let mut child = command("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", dir.join("state").display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .args(["--flags", "not-need-init,startup-clear"])
        .arg("--log")
        .arg(format!("file={}", dir.join("swtpm.log").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!("swtpm exited: {status}")));
        }
        let up = |p: u16| TcpStream::connect(("127.0.0.1", p)).is_ok();
        // Probing the data port opens a client session swtpm serves one at a
        // time; it is closed right away, before the real client connects.
        if up(port + 1) && up(port) {
            // Listening, but is it ours? A swtpm that lost the port exits at once.
            std::thread::sleep(Duration::from_millis(100));
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!("swtpm exited: {status}")));
            }
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("swtpm did not listen within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tpm2_makecredential -T none` for an EK (marshalled TPMT_PUBLIC) and an AK
/// Name; returns (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET).
pub fn make_credential(
    ek_public: &[u8],
    ak_name: &[u8],
    secret: &[u8],
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let dir = tempfile::tempdir()?;
    let (ek, sec, out) = (
        dir.path().join("ek.pub"),
        dir.path().join("secret"),
        dir.path().join("cred"),
    );
    // The tool wants a TPM2B_PUBLIC.
    let len = u16::try_from(ek_public.len()).map_err(io::Error::other)?;
    fs::write(&ek, [&len.to_be_bytes()[..], ek_public].concat())?;
    fs::write(&sec, secret)?;
    let name: String = ak_name.iter().map(|b| format!("{b:02x}")).collect();
    let run = command("tpm2_makecredential")
        .args(["-T", "none", "-u"])
        .arg(&ek)
        .arg("-s")
        .arg(&sec)
        .args(["-n", &name, "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .output()?;
    if !run.status.success() {
        return Err(io::Error::other(format!(
            "tpm2_makecredential: {}",
            String::from_utf8_lossy(&run.stderr)
        )));
    }
    parse_credential_file(&fs::read(&out)?)
        .ok_or_else(|| io::Error::other("unexpected tpm2_makecredential output"))
}

/// tpm2-tools credential file: BE u32 0xBADCC0DE, BE u32 version 1,
/// TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET (both returned with their sizes).
pub fn parse_credential_file(file: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = file.strip_prefix(&[0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1][..])?;
    let tpm2b = |b: &[u8]| -> Option<usize> {
        Some(2 + usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?])))
    };
    let (id, rest) = rest.split_at_checked(tpm2b(rest)?)?;
    (tpm2b(rest)? == rest.len()).then(|| (id.to_vec(), rest.to_vec()))
}
