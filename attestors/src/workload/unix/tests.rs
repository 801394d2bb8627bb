use super::*;
use std::collections::BTreeSet;
use std::fs;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};
use sha2::{Digest, Sha256};

pub(crate) fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

pub(crate) fn values(sels: &[Selector], kind: &str, prefix: &str) -> Vec<String> {
    sels.iter()
        .filter(|s| s.kind == kind)
        .filter_map(|s| s.value.strip_prefix(prefix).map(str::to_owned))
        .collect()
}

pub(crate) fn one(sels: &[Selector], kind: &str, prefix: &str) -> String {
    let v = values(sels, kind, prefix);
    assert_eq!(v.len(), 1, "expected one {kind}:{prefix} in {sels:?}");
    v.into_iter().next().unwrap()
}

pub(crate) fn spawn_retrying(cmd: impl Fn() -> Command) -> Child {
    // ETXTBSY: another test thread may have forked while a freshly written binary was open.
    for _ in 0..50 {
        match cmd().spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("spawn: {e}"),
        }
    }
    panic!("spawn kept failing with ETXTBSY");
}

#[test]
fn attest_self() {
    let a = UnixAttestor::new();
    let sels = a.attest(std::process::id() as i32).unwrap();

    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    assert_eq!(one(&sels, "unix", "uid:"), uid.to_string());
    assert_eq!(one(&sels, "unix", "gid:"), gid.to_string());
    let user = User::from_uid(Uid::from_raw(uid)).unwrap().map(|u| u.name);
    assert_eq!(
        values(&sels, "unix", "user:"),
        user.into_iter().collect::<Vec<_>>()
    );
    let group = Group::from_gid(Gid::from_raw(gid)).unwrap().map(|g| g.name);
    assert_eq!(
        values(&sels, "unix", "group:"),
        group.into_iter().collect::<Vec<_>>()
    );

    let want_groups: BTreeSet<String> = nix::unistd::getgroups()
        .unwrap()
        .iter()
        .map(|g| g.as_raw().to_string())
        .collect();
    let got_groups: BTreeSet<String> = values(&sels, "unix", "supplementary_gid:")
        .into_iter()
        .collect();
    assert_eq!(got_groups, want_groups);

    let exe = std::env::current_exe().unwrap();
    assert_eq!(one(&sels, "unix", "path:"), exe.to_str().unwrap());
    assert_eq!(one(&sels, "unix", "sha256:"), sha256_hex(&exe));

    let cg = one(&sels, "cgroup", "path:");
    assert!(cg.starts_with('/'), "{cg}");
    // uid, gid, path, sha256, cgroup, plus the optional, per-group and derived ones.
    let derived = sels
        .iter()
        .filter(|s| matches!(s.kind.as_str(), "systemd" | "container" | "k8s"))
        .count();
    assert_eq!(
        sels.len(),
        5 + values(&sels, "unix", "user:").len()
            + values(&sels, "unix", "group:").len()
            + want_groups.len()
            + derived
    );
}

#[test]
fn second_attest_hits_cache() {
    let a = UnixAttestor::default();
    let pid = std::process::id() as i32;
    let first = a.attest(pid).unwrap();
    assert_eq!(a.cache_stats(), (0, 1));
    let second = a.attest(pid).unwrap();
    assert_eq!(a.cache_stats(), (1, 1));
    assert_eq!(first, second);
}

#[test]
fn cache_hit_does_not_read_file() {
    let a = UnixAttestor::new();
    let me = ProcDir::open(Path::new("/proc"), std::process::id() as i32).unwrap();
    let f = tempfile::NamedTempFile::new().unwrap();
    fs::write(f.path(), b"real content").unwrap();
    let file = File::open(f.path()).unwrap();
    let key = FileKey::of(&file).unwrap();
    // Primed with a digest the content does not have: a hit must not read the file.
    a.hasher.digest(key, || Ok(Some([0xab; 32]))).unwrap();
    assert_eq!(a.cache_stats(), (0, 1));
    assert_eq!(
        a.exe_digest(&file, FileKey::of(&file).unwrap(), &me)
            .unwrap(),
        Some([0xab; 32])
    );
    assert_eq!(a.cache_stats(), (1, 1));

    // A miss hashes the content and caches it.
    let g = tempfile::NamedTempFile::new().unwrap();
    fs::write(g.path(), b"other").unwrap();
    let file = File::open(g.path()).unwrap();
    let want: [u8; 32] = Sha256::digest(b"other").into();
    assert_eq!(
        a.exe_digest(&file, FileKey::of(&file).unwrap(), &me)
            .unwrap(),
        Some(want)
    );
    assert_eq!(
        a.exe_digest(&file, FileKey::of(&file).unwrap(), &me)
            .unwrap(),
        Some(want)
    );
    assert_eq!(a.cache_stats(), (2, 2));
}

#[test]
fn child_then_gone() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let a = UnixAttestor::new();
    // Until exec completes the child still runs the test binary; wait for it to become sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sels = loop {
        let sels = a.attest(pid).unwrap();
        if one(&sels, "unix", "path:") != std::env::current_exe().unwrap().to_str().unwrap() {
            break sels;
        }
        assert!(Instant::now() < deadline, "child never exec'd");
        std::thread::sleep(Duration::from_millis(10));
    };
    let path = one(&sels, "unix", "path:");
    assert!(path.contains("sleep") || path.contains("coreutils") || path.contains("busybox"));
    assert_eq!(one(&sels, "unix", "sha256:"), sha256_hex(Path::new(&path)));
    assert_eq!(
        one(&sels, "unix", "uid:"),
        nix::unistd::getuid().as_raw().to_string()
    );

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(matches!(a.attest(pid), Err(UnixError::ProcessGone)));
}

#[test]
fn zombie_is_gone() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    child.kill().unwrap();
    let a = UnixAttestor::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if proc::parse_stat(&stat).unwrap().exited() {
            break;
        }
        assert!(Instant::now() < deadline, "child never became a zombie");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(a.attest(pid), Err(UnixError::ProcessGone)));
    child.wait().unwrap();
}

#[test]
fn deleted_executable_is_hashed_through_proc() {
    let dir = tempfile::tempdir().unwrap();
    // Named "sleep" so a multi-call binary dispatching on argv[0] still sleeps.
    let copy = dir.path().join("sleep");
    fs::copy("/bin/sleep", &copy).unwrap();
    let want = sha256_hex(&copy);
    let mut child = spawn_retrying(|| {
        let mut c = Command::new(&copy);
        c.arg("30");
        c
    });
    let pid = child.id() as i32;
    // Make sure the child has exec'd before the file goes away.
    let a = UnixAttestor::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while one(&a.attest(pid).unwrap(), "unix", "path:") != copy.to_str().unwrap() {
        assert!(Instant::now() < deadline, "child never exec'd");
        std::thread::sleep(Duration::from_millis(10));
    }
    fs::remove_file(&copy).unwrap();
    // Something else at the same path must not be what gets hashed.
    fs::write(&copy, b"impostor").unwrap();

    let sels = a.attest(pid).unwrap();
    // The path no longer names the running file: no path selector, the hash still counts.
    assert!(values(&sels, "unix", "path:").is_empty(), "{sels:?}");
    assert_eq!(one(&sels, "unix", "sha256:"), want);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn invalid_pid() {
    let a = UnixAttestor::new();
    assert!(matches!(a.attest(0), Err(UnixError::InvalidPid(0))));
    assert!(matches!(a.attest(-1), Err(UnixError::InvalidPid(-1))));
}

// A fake proc root: <root>/<pid>/{stat,status,cgroup,exe}.
pub(crate) struct FakeProc {
    root: tempfile::TempDir,
    pub pid: i32,
}

const FAKE_PID: i32 = 4242;

fn stat_line(state: char, start: u64) -> String {
    format!(
        "{FAKE_PID} (a b) c)) {state} 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0 0 0 0\n"
    )
}

fn status_text(uid: u32) -> String {
    format!("Name:\ta b\nUid:\t{uid}\t0\t0\t0\nGid:\t2001\t0\t0\t0\nGroups:\t7 9\n")
}

impl FakeProc {
    pub fn new(exe_target: &Path) -> Self {
        let root = tempfile::tempdir().unwrap();
        let fp = FakeProc {
            root,
            pid: FAKE_PID,
        };
        fs::create_dir(fp.dir()).unwrap();
        fp.write("stat", &stat_line('S', 1000));
        fp.write("status", &status_text(1001));
        fp.write("cgroup", "1:name=systemd:/system.slice/x.service\n0::/\n");
        std::os::unix::fs::symlink(exe_target, fp.dir().join("exe")).unwrap();
        fp
    }
    fn dir(&self) -> PathBuf {
        self.root.path().join(self.pid.to_string())
    }
    pub fn write(&self, name: &str, text: &str) {
        fs::write(self.dir().join(name), text).unwrap();
    }
    pub fn attestor(&self) -> UnixAttestor {
        UnixAttestor::with_proc_root(self.root.path().to_path_buf())
    }
}

pub(crate) fn fake_exe(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, b"#!fake binary\n").unwrap();
    p
}

#[test]
fn fake_proc_full_selector_list() {
    let bin = tempfile::tempdir().unwrap();
    let exe = fake_exe(bin.path(), "prog");
    let fp = FakeProc::new(&exe);
    let sels = fp.attestor().attest(fp.pid).unwrap();

    let mut want = vec![Selector::new("unix", "uid:1001")];
    if let Some(u) = User::from_uid(Uid::from_raw(1001)).unwrap() {
        want.push(Selector::new("unix", format!("user:{}", u.name)));
    }
    want.push(Selector::new("unix", "gid:2001"));
    if let Some(g) = Group::from_gid(Gid::from_raw(2001)).unwrap() {
        want.push(Selector::new("unix", format!("group:{}", g.name)));
    }
    want.push(Selector::new("unix", "supplementary_gid:7"));
    want.push(Selector::new("unix", "supplementary_gid:9"));
    want.push(Selector::new("unix", format!("path:{}", exe.display())));
    want.push(Selector::new(
        "unix",
        format!("sha256:{}", sha256_hex(&exe)),
    ));
    want.push(Selector::new("cgroup", "path:/system.slice/x.service"));
    want.push(Selector::new("systemd", "unit:x.service"));
    want.push(Selector::new("systemd", "slice:system.slice"));
    assert_eq!(sels, want);
}

fn derived_of(cgroup_file: &str) -> Vec<String> {
    let bin = tempfile::tempdir().unwrap();
    let fp = FakeProc::new(&fake_exe(bin.path(), "prog"));
    fp.write("cgroup", cgroup_file);
    let sels = fp.attestor().attest(fp.pid).unwrap();
    sels.iter()
        .filter(|s| s.kind != "unix" && s.kind != "cgroup")
        .map(|s| s.to_string())
        .collect()
}

const CID: &str = "3f1b5c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

#[test]
fn fake_proc_container_on_a_hybrid_host() {
    let file = format!("9:name=systemd:/system.slice/docker-{CID}.scope\n1:cpu:/x\n0::/\n");
    assert_eq!(
        derived_of(&file),
        [
            format!("systemd:unit:docker-{CID}.scope"),
            "systemd:slice:system.slice".to_string(),
            format!("systemd:scope:docker-{CID}.scope"),
            format!("container:id:{CID}"),
            "container:runtime:docker".to_string(),
        ]
    );
}

#[test]
fn fake_proc_user_cannot_claim_a_rootful_container_or_pod() {
    // uid 1000 owns its user manager's subtree and can create any cgroup name there.
    let base = "0::/user.slice/user-1000.slice/user@1000.service/app.slice";
    let got = derived_of(&format!("{base}/docker-{CID}.scope\n"));
    assert!(
        got.contains(&format!("container:id:user@1000.service/{CID}")),
        "{got:?}"
    );
    assert!(!got.contains(&format!("container:id:{CID}")), "{got:?}");
    assert!(
        !got.contains(&"container:runtime:docker".to_string()),
        "{got:?}"
    );
    let pod = "kubepods.slice/kubepods-pod0a1b2c3d_1111_2222_3333_444455556666.slice";
    let got = derived_of(&format!("{base}/{pod}/cri-containerd-{CID}.scope\n"));
    assert!(got.iter().all(|s| !s.starts_with("k8s:")), "{got:?}");
    assert!(!got.contains(&format!("systemd:unit:cri-containerd-{CID}.scope")));
}

#[test]
fn fake_proc_odd_cgroup_has_no_derived_selectors() {
    assert!(derived_of("0::/system.slice/a b.service\n").is_empty());
    let long = format!("0::/system.slice/{}.service\n", "a".repeat(300));
    assert!(derived_of(&long).is_empty());
}

#[test]
fn fake_proc_odd_exe_path_is_left_out() {
    let bin = tempfile::tempdir().unwrap();
    let exe = fake_exe(bin.path(), "evil\nname");
    let fp = FakeProc::new(&exe);
    let sels = fp.attestor().attest(fp.pid).unwrap();
    assert!(values(&sels, "unix", "path:").is_empty(), "{sels:?}");
    assert_eq!(one(&sels, "unix", "sha256:"), sha256_hex(&exe));
}

#[test]
fn fake_proc_missing_exe_of_live_process_is_io_error() {
    let bin = tempfile::tempdir().unwrap();
    let fp = FakeProc::new(&bin.path().join("does-not-exist"));
    match fp.attestor().attest(fp.pid) {
        Err(UnixError::Io { path, .. }) => assert!(path.ends_with("exe"), "{path:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fake_proc_oversized_file() {
    let bin = tempfile::tempdir().unwrap();
    let fp = FakeProc::new(&fake_exe(bin.path(), "prog"));
    fp.write("cgroup", &"0::/x\n".repeat(20_000));
    assert!(matches!(
        fp.attestor().attest(fp.pid),
        Err(UnixError::TooLarge { .. })
    ));
}

#[test]
fn fake_proc_recheck() {
    let bin = tempfile::tempdir().unwrap();
    let exe = fake_exe(bin.path(), "prog");
    let fp = FakeProc::new(&exe);
    let a = fp.attestor();
    let seen = Seen {
        status: proc::parse_status(&status_text(1001)).unwrap(),
        exe: FileKey::of(&File::open(&exe).unwrap()).unwrap(),
    };
    a.recheck(fp.pid, 1000, &seen).unwrap();

    // Another process now has the pid.
    fp.write("stat", &stat_line('S', 2000));
    assert!(matches!(
        a.recheck(fp.pid, 1000, &seen),
        Err(UnixError::PidReused)
    ));

    fp.write("stat", &stat_line('Z', 1000));
    assert!(matches!(
        a.recheck(fp.pid, 1000, &seen),
        Err(UnixError::ProcessGone)
    ));

    fp.write("stat", &stat_line('S', 1000));
    fp.write("status", &status_text(0));
    assert!(matches!(
        a.recheck(fp.pid, 1000, &seen),
        Err(UnixError::CredentialsChanged)
    ));

    // The process executed another file after its executable was read and hashed, or the
    // same file rewritten meanwhile.
    fp.write("status", &status_text(1001));
    a.recheck(fp.pid, 1000, &seen).unwrap();
    fs::write(&exe, b"#!another binary\n").unwrap();
    assert!(matches!(
        a.recheck(fp.pid, 1000, &seen),
        Err(UnixError::ExecutableChanged)
    ));
    fs::remove_file(fp.dir().join("exe")).unwrap();
    std::os::unix::fs::symlink(fake_exe(bin.path(), "other"), fp.dir().join("exe")).unwrap();
    assert!(matches!(
        a.recheck(fp.pid, 1000, &seen),
        Err(UnixError::ExecutableChanged)
    ));

    fs::remove_dir_all(fp.dir()).unwrap();
    assert!(matches!(
        a.recheck(fp.pid, 1000, &seen),
        Err(UnixError::ProcessGone)
    ));
    assert!(matches!(a.attest(fp.pid), Err(UnixError::ProcessGone)));
}

#[test]
fn fake_proc_classify_not_found() {
    let bin = tempfile::tempdir().unwrap();
    let fp = FakeProc::new(&fake_exe(bin.path(), "prog"));
    let a = fp.attestor();
    let nf = || UnixError::Io {
        path: PathBuf::from("x"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    // Started at a different time: the pid was reused.
    assert!(matches!(
        a.classify(fp.pid, 999, nf()),
        UnixError::PidReused
    ));
    // Same live process: the error stands (a kernel thread has no exe).
    assert!(matches!(
        a.classify(fp.pid, 1000, nf()),
        UnixError::Io { .. }
    ));
    // Other errors are never reinterpreted.
    let denied = UnixError::Io {
        path: PathBuf::from("x"),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    assert!(matches!(
        a.classify(fp.pid, 999, denied),
        UnixError::Io { .. }
    ));
    fp.write("stat", &stat_line('Z', 1000));
    assert!(matches!(
        a.classify(fp.pid, 1000, nf()),
        UnixError::ProcessGone
    ));
    fs::remove_dir_all(fp.dir()).unwrap();
    assert!(matches!(
        a.classify(fp.pid, 1000, nf()),
        UnixError::ProcessGone
    ));
}

#[test]
fn pinned_process_is_never_replaced() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let a = UnixAttestor::new();
    let pinned = a.pin(pid).unwrap();
    assert!(
        pinned.pidfd().is_some(),
        "pidfd_open is available on this kernel"
    );
    a.check(&pinned).unwrap();
    a.attest_pinned(&pinned).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(pinned.exited());
    assert!(matches!(a.check(&pinned), Err(UnixError::ProcessGone)));
    assert!(matches!(
        a.attest_pinned(&pinned),
        Err(UnixError::ProcessGone)
    ));
}

#[test]
fn pinned_exited_process_is_gone() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    let a = UnixAttestor::new();
    let pinned = a.pin(pid).unwrap();
    assert!(pinned.exited());
    assert!(matches!(
        a.attest_pinned(&pinned),
        Err(UnixError::ProcessGone)
    ));
}

// Without a pidfd (kernels before 5.3, or a test proc root) the start time read at pin time
// is what tells the pinned process from a later one with the same pid.
#[test]
fn fake_proc_pinned_start_time_detects_reuse() {
    let bin = tempfile::tempdir().unwrap();
    let fp = FakeProc::new(&fake_exe(bin.path(), "prog"));
    let a = fp.attestor();
    let pinned = a.pin(fp.pid).unwrap();
    assert!(pinned.pidfd().is_none());
    a.attest_pinned(&pinned).unwrap();
    // The pinned process exited and another one got its pid.
    fp.write("stat", &stat_line('S', 2000));
    fp.write("status", &status_text(0));
    assert!(matches!(a.check(&pinned), Err(UnixError::PidReused)));
    assert!(matches!(
        a.attest_pinned(&pinned),
        Err(UnixError::PidReused)
    ));
    // A fresh pin names the new process.
    let again = a.pin(fp.pid).unwrap();
    assert_eq!(one(&a.attest_pinned(&again).unwrap(), "unix", "uid:"), "0");
}

/// A process in a mount namespace of its own, running a binary bind-mounted over `claimed`:
/// its /proc/<pid>/exe says `claimed`, which in the agent's view is another file.
#[test]
fn path_claimed_in_another_mount_namespace_is_left_out() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (unshare -m); skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("sleep");
    fs::copy("/bin/sleep", &real).unwrap();
    let claimed = dir.path().join("trusted-daemon");
    fs::write(&claimed, b"the binary an entry trusts by path").unwrap();
    let script = format!(
        "mount --bind {real} {claimed} && exec {claimed} 30",
        real = real.display(),
        claimed = claimed.display()
    );
    let mut child = spawn_retrying(|| {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c", &script]);
        c
    });
    let pid = child.id() as i32;
    let a = UnixAttestor::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let sels = loop {
        let link = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        if link == claimed {
            break a.attest(pid).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "child never exec'd the claimed path"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(values(&sels, "unix", "path:").is_empty(), "{sels:?}");
    assert_eq!(one(&sels, "unix", "sha256:"), sha256_hex(&real));
}
