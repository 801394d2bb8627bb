//! Each test runs an executable from a file system an attacker could serve or mount, and
//! checks that the agent does not vouch for bytes it cannot prove the process runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::super::tests::{sha256_hex, spawn_retrying, values};
use super::super::UnixAttestor;
use super::{trust, Trust};
use crate::workload::unix::proc::ProcDir;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn hashes(a: &UnixAttestor, pid: u32) -> Vec<String> {
    let sels = a.attest(pid as i32).expect("attestation");
    values(&sels, "unix", "sha256:")
}

/// The real path of a command on this host.
fn which(cmd: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .unwrap();
    fs::canonicalize(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

/// Waits until `pid` runs the file at `exe` (an exec inside a shell or `unshare` takes a
/// moment after spawn returns).
fn wait_exec(pid: u32, exe: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref() != Some(exe) {
        assert!(Instant::now() < deadline, "{pid} did not exec {exe:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agents_own_files_are_local() {
    let dir = ProcDir::open(Path::new("/proc"), std::process::id() as i32).unwrap();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let kind = nix::sys::statfs::fstatfs(tmp.as_file()).unwrap();
    // The temp dir is on the root disk or a tmpfs on every machine this runs on.
    assert_eq!(
        trust(tmp.as_file(), &dir),
        Trust::Local,
        "f_type {:#x}",
        kind.filesystem_type().0
    );
}

/// A FUSE daemon serves `prog` with the same attributes throughout, first as one binary,
/// then as another. Were the attributes trusted, the second binary would be attested with the
/// first one's hash from the cache; were the daemon's bytes trusted, it could serve the agent
/// the first binary while the kernel runs the second.
const FUSE_DAEMON: &str = r#"
import errno, os, stat, sys
from fusepy import FUSE, FuseOSError, Operations
first, second, switch, mnt = sys.argv[1:5]
data = {False: open(first, "rb").read(), True: open(second, "rb").read()}
assert len(data[False]) == len(data[True])
class Fs(Operations):
    def content(self):
        return data[os.path.exists(switch)]
    def getattr(self, path, fh=None):
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_ino=1)
        if path != "/prog":
            raise FuseOSError(errno.ENOENT)
        return dict(st_mode=stat.S_IFREG | 0o755, st_nlink=1, st_ino=42,
                    st_size=len(data[False]), st_mtime=1e9, st_ctime=1e9, st_atime=1e9)
    def readdir(self, path, fh):
        return [".", "..", "prog"]
    def read(self, path, size, offset, fh):
        return self.content()[offset:offset + size]
FUSE(Fs(), mnt, foreground=True, use_ino=True, allow_other=True)
"#;

struct FuseMount {
    daemon: Killed,
    mnt: PathBuf,
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = self.daemon.0.kill();
    }
}

#[test]
fn a_fuse_daemon_cannot_pass_one_binary_off_as_another() {
    if !is_root() {
        eprintln!("needs root (mounts FUSE); skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (sleep, tail) = (
        fs::read(which("sleep")).unwrap(),
        fs::read(which("tail")).unwrap(),
    );
    let len = sleep.len().max(tail.len());
    // Zeros after an ELF image are never loaded; the two files get one size, so one key.
    let pad = |mut b: Vec<u8>| {
        b.resize(len, 0);
        b
    };
    let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
    fs::write(&first, pad(sleep)).unwrap();
    fs::write(&second, pad(tail)).unwrap();
    let switch = tmp.path().join("switch");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let script = tmp.path().join("daemon.py");
    fs::write(&script, FUSE_DAEMON).unwrap();
    // Debian's python3-fusepy, for Debian's python3 (not whatever `python3` is on PATH).
    let daemon = Killed(
        Command::new("/usr/bin/python3")
            .arg(&script)
            .args([&first, &second, &switch, &mnt])
            .stdin(Stdio::null())
            .spawn()
            .expect("/usr/bin/python3 (scripts/install-deps.sh installs python3-fusepy)"),
    );
    let fuse = FuseMount { daemon, mnt };
    let prog = fuse.mnt.join("prog");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !prog.exists() {
        let daemon_stat = fs::read_to_string(format!("/proc/{}/stat", fuse.daemon.0.id()));
        assert!(
            !daemon_stat.unwrap_or_default().contains(") Z "),
            "the FUSE daemon exited"
        );
        assert!(Instant::now() < deadline, "the FUSE mount did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a = UnixAttestor::new();

    let runs_first = Killed(spawn_retrying(|| {
        let mut c = Command::new(&prog);
        c.arg("60");
        c
    }));
    let of_first = hashes(&a, runs_first.0.id());
    drop(runs_first);

    fs::write(&switch, b"").unwrap();
    let runs_second = Killed(spawn_retrying(|| {
        let mut c = Command::new(&prog);
        c.args(["-f", "/dev/null"]);
        c
    }));
    let of_second = hashes(&a, runs_second.0.id());
    assert!(
        !of_second.contains(&sha256_hex(&first)),
        "the second binary was attested as the first: {of_second:?}"
    );
    let none = Vec::<String>::new();
    assert_eq!(
        (of_first, of_second),
        (none.clone(), none),
        "bytes a FUSE daemon served are not proof of what runs"
    );
}

/// `lower/prog` (a copy of `sleep`) under an overlay at `mnt`, from `tmp`'s dirs.
fn overlay_dirs(tmp: &Path) -> (PathBuf, String) {
    for d in ["lower", "upper", "work", "mnt"] {
        fs::create_dir(tmp.join(d)).unwrap();
    }
    fs::copy(which("sleep"), tmp.join("lower/prog")).unwrap();
    let t = tmp.display();
    let mount = format!(
        "mount -t overlay overlay -o lowerdir={t}/lower,upperdir={t}/upper,workdir={t}/work {t}/mnt"
    );
    (tmp.join("mnt/prog"), mount)
}

/// Runs `sh -c "<mount> && exec <then>"` under `unshare <flags>`.
fn in_namespace(flags: &str, mount: &str, then: &str) -> Killed {
    Killed(
        Command::new("unshare")
            .args([flags, "--propagation", "private", "sh", "-c"])
            .arg(format!("{mount} && exec {then}"))
            .spawn()
            .unwrap(),
    )
}

/// A process that runs `lower/prog` (a copy of `sleep`) from an overlay mounted under
/// `unshare <flags>`; `None` without root.
fn overlay_workload(flags: &str) -> Option<(tempfile::TempDir, Killed)> {
    if !is_root() {
        eprintln!("needs root (mounts overlay); skipped");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (prog, mount) = overlay_dirs(tmp.path());
    let w = in_namespace(flags, &mount, &format!("{} 60", prog.display()));
    wait_exec(w.0.id(), &prog);
    Some((tmp, w))
}

#[test]
fn an_overlay_root_mounted_is_hashed_once() {
    let Some((tmp, w)) = overlay_workload("-m") else {
        return;
    };
    let a = UnixAttestor::new();
    let want = vec![sha256_hex(&tmp.path().join("lower/prog"))];
    assert_eq!(hashes(&a, w.0.id()), want);
    assert_eq!(hashes(&a, w.0.id()), want);
    assert_eq!(a.hasher.hashes(), 1, "a container's binary is cached");
}

/// An unprivileged user can mount an overlay inside a user namespace of their own, over
/// layers they serve (e.g. a FUSE mount): no hash for it.
#[test]
fn an_overlay_mounted_in_a_user_namespace_gets_no_hash() {
    let Some((_tmp, w)) = overlay_workload("-Urm") else {
        return;
    };
    assert_eq!(hashes(&UnixAttestor::new(), w.0.id()), Vec::<String>::new());
}

/// The overlay is in another process's namespace; the workload, in the agent's own, runs its
/// file through `/proc/<pid>/root` (as it could through a descriptor passed to it).
#[test]
fn an_overlay_from_another_namespace_gets_no_hash() {
    if !is_root() {
        eprintln!("needs root (mounts overlay); skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (prog, mount) = overlay_dirs(tmp.path());
    let sleep = which("sleep");
    let holder = in_namespace("-m", &mount, &format!("{} 60", sleep.display()));
    wait_exec(holder.0.id(), &sleep);
    let through = PathBuf::from(format!("/proc/{}/root{}", holder.0.id(), prog.display()));
    let w = Killed(spawn_retrying(|| {
        let mut c = Command::new(&through);
        c.arg("60");
        c
    }));
    let digest = Sha256::digest(fs::read(&through).unwrap());
    let got = hashes(&UnixAttestor::new(), w.0.id());
    assert!(!got.contains(&hex::encode(digest)), "{got:?}");
    assert_eq!(got, Vec::<String>::new());
}
