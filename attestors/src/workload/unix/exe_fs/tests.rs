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

/// A FUSE daemon serving `prog` with the same attributes throughout: the first binary, or
/// the second once `switch` exists; once `stall` exists it never answers GETATTR.
const FUSE_DAEMON: &str = r#"
import errno, os, stat, sys, time
from fusepy import FUSE, FuseOSError, Operations
first, second, switch, stall, mnt = sys.argv[1:6]
data = {False: open(first, "rb").read(), True: open(second, "rb").read()}
assert len(data[False]) == len(data[True])
class Fs(Operations):
    def getattr(self, path, fh=None):
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_ino=1)
        if path != "/prog":
            raise FuseOSError(errno.ENOENT)
        while os.path.exists(stall):
            time.sleep(1)
        return dict(st_mode=stat.S_IFREG | 0o755, st_nlink=1, st_ino=42,
                    st_size=len(data[False]), st_mtime=1e9, st_ctime=1e9, st_atime=1e9)
    def readdir(self, path, fh):
        return [".", "..", "prog"]
    def read(self, path, size, offset, fh):
        return data[os.path.exists(switch)][offset:offset + size]
FUSE(Fs(), mnt, foreground=True, use_ino=True, allow_other=True)
"#;

/// A temp dir with `first` (a copy of `sleep`) and `second` (of `tail`), padded to one size
/// (zeros after an ELF image are never loaded), and an empty `mnt`.
fn two_binaries() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let (sleep, tail) = (
        fs::read(which("sleep")).unwrap(),
        fs::read(which("tail")).unwrap(),
    );
    let len = sleep.len().max(tail.len());
    for (name, mut bytes) in [("first", sleep), ("second", tail)] {
        bytes.resize(len, 0);
        fs::write(tmp.path().join(name), bytes).unwrap();
    }
    fs::create_dir(tmp.path().join("mnt")).unwrap();
    tmp
}

/// `FUSE_DAEMON` mounted on `mnt` of `two_binaries`: one file key for both.
struct FuseMount {
    daemon: Killed,
    tmp: tempfile::TempDir,
}

impl FuseMount {
    /// `None` without root.
    fn serve() -> Option<FuseMount> {
        if !is_root() {
            eprintln!("needs root (mounts FUSE); skipped");
            return None;
        }
        let tmp = two_binaries();
        fs::write(tmp.path().join("daemon.py"), FUSE_DAEMON).unwrap();
        // Debian's python3-fusepy, for Debian's python3 (not whatever `python3` is on PATH).
        let daemon = Killed(
            Command::new("/usr/bin/python3")
                .arg("daemon.py")
                .args(["first", "second", "switch", "stall", "mnt"])
                .current_dir(tmp.path())
                .stdin(Stdio::null())
                .spawn()
                .expect("/usr/bin/python3 (scripts/install-deps.sh installs python3-fusepy)"),
        );
        let fuse = FuseMount { daemon, tmp };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fuse.prog().exists() {
            let daemon = fs::read_to_string(format!("/proc/{}/stat", fuse.daemon.0.id()));
            assert!(
                !daemon.unwrap_or_default().contains(") Z "),
                "the FUSE daemon exited"
            );
            assert!(Instant::now() < deadline, "the FUSE mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(fuse)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn prog(&self) -> PathBuf {
        self.path("mnt/prog")
    }

    /// Runs `prog` with `args`.
    fn run(&self, args: &[&str]) -> Killed {
        Killed(spawn_retrying(|| {
            let mut c = Command::new(self.prog());
            c.args(args);
            c
        }))
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.path("mnt"))
            .status();
        // Aborts any request still waiting for the daemon.
        let _ = self.daemon.0.kill();
    }
}

/// Were the attributes trusted, the second binary would be attested with the first one's hash
/// from the cache; were the daemon's bytes trusted, it could serve the agent the first binary
/// while the kernel runs the second.
#[test]
fn a_fuse_daemon_cannot_pass_one_binary_off_as_another() {
    let Some(fuse) = FuseMount::serve() else {
        return;
    };
    let a = UnixAttestor::new();
    let runs_first = fuse.run(&["60"]);
    let of_first = hashes(&a, runs_first.0.id());
    drop(runs_first);

    fs::write(fuse.path("switch"), b"").unwrap();
    let runs_second = fuse.run(&["-f", "/dev/null"]);
    let of_second = hashes(&a, runs_second.0.id());
    assert!(
        !of_second.contains(&sha256_hex(&fuse.path("first"))),
        "the second binary was attested as the first: {of_second:?}"
    );
    let none = Vec::<String>::new();
    assert_eq!(
        (of_first, of_second),
        (none.clone(), none),
        "bytes a FUSE daemon served are not proof of what runs"
    );
}

/// The mark is read on the async runtime's threads before every call: a daemon that stops
/// answering must not hold it (and with two such callers, every worker thread).
#[test]
fn a_stalled_fuse_daemon_does_not_hold_the_mark() {
    let Some(fuse) = FuseMount::serve() else {
        return;
    };
    let a = std::sync::Arc::new(UnixAttestor::new());
    let w = fuse.run(&["60"]);
    let pinned = std::sync::Arc::new(a.pin(w.0.id() as i32).unwrap());
    let before = a.mark(&pinned).unwrap();
    fs::write(fuse.path("stall"), b"").unwrap();
    // Past the kernel's 1 s attribute cache, a synced stat asks the daemon.
    std::thread::sleep(Duration::from_millis(1500));
    let (tx, rx) = std::sync::mpsc::channel();
    let (a2, p2) = (a.clone(), pinned.clone());
    std::thread::spawn(move || tx.send(a2.mark(&p2).map_err(|e| e.to_string())));
    let got = rx.recv_timeout(Duration::from_secs(5));
    // Unblocks the reader (if it is stuck) before the verdict.
    drop(fuse);
    assert_eq!(
        got.expect("the mark waited on the FUSE daemon").unwrap(),
        before
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

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Two disk images, byte for byte the same but for one file's data blocks, mounted in turn
/// on the same loop device: the same device number, inode and attributes (ctime included:
/// an image's inodes say what they like). Only the mount tells them apart.
#[test]
fn an_image_mounted_again_on_the_same_loop_device_is_hashed_again() {
    if !is_root() {
        eprintln!("needs root (loop mounts); skipped");
        return;
    }
    let tmp = two_binaries();
    let t = tmp.path().display();
    sh(&format!(
        "mkfs.ext4 -q -b 4096 {t}/a.img 16M
         mount -o loop {t}/a.img {t}/mnt && cp {t}/first {t}/mnt/prog && chmod 755 {t}/mnt/prog && umount {t}/mnt
         cp {t}/a.img {t}/b.img"
    ));
    // The file's blocks in image b (one extent of `mkfs`'s fresh file system) get `second`.
    let blocks = sh(&format!("debugfs -R 'blocks /prog' {t}/b.img 2>/dev/null"));
    let first_block: u64 = blocks.split_whitespace().next().unwrap().parse().unwrap();
    sh(&format!(
        "dd if={t}/second of={t}/b.img bs=4096 seek={first_block} conv=notrunc status=none"
    ));
    let dev = sh(&format!("losetup -f --show {t}/a.img"))
        .trim()
        .to_owned();
    struct Detach(String, PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.1).status();
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let loop_dev = Detach(dev.clone(), tmp.path().join("mnt"));
    let prog = tmp.path().join("mnt/prog");
    let a = UnixAttestor::new();
    let run = |args: &[&str]| {
        Killed(spawn_retrying(|| {
            let mut c = Command::new(&prog);
            c.args(args);
            c
        }))
    };

    sh(&format!("mount {dev} {t}/mnt"));
    let w = run(&["60"]);
    assert_eq!(
        hashes(&a, w.0.id()),
        vec![sha256_hex(&tmp.path().join("first"))]
    );
    drop(w);
    sh(&format!(
        "umount {t}/mnt && losetup -d {dev} && losetup {dev} {t}/b.img && mount {dev} {t}/mnt"
    ));
    let w = run(&["-f", "/dev/null"]);
    assert_eq!(
        hashes(&a, w.0.id()),
        vec![sha256_hex(&tmp.path().join("second"))],
        "the image mounted second was attested with the first one's hash"
    );
    drop(w);
    drop(loop_dev);
}
