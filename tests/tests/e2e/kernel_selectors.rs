//! Selectors derived from the kernel's cgroup paths (`systemd:`, `container:`, `k8s:`): real
//! processes moved into cgroups this test creates, seen through `tessera-agent inspect --pid`
//! and through the Workload API.
//!
//! Needs root and a writable cgroup hierarchy (the v2 one, else the v1 `name=systemd` one of
//! a hybrid host); skips with the reason printed where there is none.

use crate::harness::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

const CID: &str = "5e8f0c1d2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const POD_UID: &str = "0a1b2c3d-1111-2222-3333-444455556666";

/// Where the whole of a hierarchy is mounted: `cgroup2`, or the v1 `name=systemd` one.
fn mount_of(kind: &str) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let matches = match kind {
            "cgroup2" => r.first() == Some(&"cgroup2"),
            _ => r.first() == Some(&"cgroup") && r.get(2)?.split(',').any(|o| o == kind),
        };
        (matches && l.get(3) == Some(&"/") && !l.get(4)?.contains('\\'))
            .then(|| PathBuf::from(l[4]))
    })
}

fn writable(root: &Path) -> bool {
    let probe = root.join(format!("tessera-probe-{}", std::process::id()));
    let ok = fs::create_dir(&probe).is_ok();
    let _ = fs::remove_dir(&probe);
    ok
}

/// A hierarchy this test can create cgroups in and that the agent reads a process's path
/// from: v2, or where v2 is unusable, `name=systemd`.
pub(crate) fn writable_hierarchy() -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    let found: Vec<PathBuf> = ["cgroup2", "name=systemd"]
        .iter()
        .filter_map(|k| mount_of(k))
        .collect();
    found
        .iter()
        .find(|r| writable(r))
        .cloned()
        .ok_or_else(|| format!("no writable cgroup hierarchy among {found:?}"))
}

/// Cgroups created by this test, removed (deepest first) on drop; the processes in them are
/// killed first.
pub(crate) struct Cgroups {
    pub(crate) root: PathBuf,
    made: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Cgroups {
    pub(crate) fn new(root: PathBuf) -> Self {
        Cgroups {
            root,
            made: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Creates `rel` (and missing parents); returns its directory.
    pub(crate) fn make(&mut self, rel: &str) -> PathBuf {
        let mut p = self.root.clone();
        for c in rel.split('/') {
            p.push(c);
            if !p.exists() {
                fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                self.made.push(p.clone());
            }
        }
        p
    }

    /// A `sleep` moved into cgroup `rel`; returns its pid.
    fn sleeper_in(&mut self, rel: &str) -> u32 {
        let dir = self.make(rel);
        let child = child_command("/bin/sleep")
            .arg("120")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", dir.display()));
        pid
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in self.made.iter().rev() {
            // A just-killed process may take a moment to leave its cgroup.
            for _ in 0..50 {
                if fs::remove_dir(p).is_ok() || !p.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Unique per test run (the pid) and per test in it (the clock).
pub(crate) fn rand_hex() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:08x}", std::process::id().rotate_left(16) ^ nanos)
}

/// What systemd does for each unit it starts: only root can set `trusted.` xattrs.
fn set_invocation_id(dir: &Path, id: &str) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated names; `id` is valid for its length.
    let rc = unsafe {
        nix::libc::setxattr(
            path.as_ptr(),
            c"trusted.invocation_id".as_ptr(),
            id.as_ptr().cast(),
            id.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

pub(crate) async fn inspect_json(d: &Deployment, pid: u32) -> (Vec<String>, Vec<String>) {
    let cfg = d.agent_config().display().to_string();
    let out = d
        .agent_cli(&[
            "inspect",
            "--pid",
            &pid.to_string(),
            "--config",
            &cfg,
            "--output",
            "json",
        ])
        .await
        .expect("run tessera-agent");
    assert!(out.success(), "inspect --pid {pid} --output json: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("inspect printed no JSON ({e}):\n{}", out.stdout));
    let strings = |key: &str, field: Option<&str>| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} array in {v}"))
            .iter()
            .filter_map(|x| match field {
                Some(f) => x[f].as_str(),
                None => x.as_str(),
            })
            .map(str::to_owned)
            .collect()
    };
    (
        strings("selectors", None),
        strings("entries", Some("spiffe_id")),
    )
}

fn derived(sels: &[String]) -> Vec<String> {
    sels.iter()
        .filter(|s| {
            ["systemd:", "container:", "k8s:"]
                .iter()
                .any(|p| s.starts_with(p))
        })
        .cloned()
        .collect()
}

/// A synced deployment and an empty set of cgroups under `root`, with a fresh random tag;
/// `None` (the reason printed) when `root` is an `Err`.
async fn setup(test: &str, root: Result<PathBuf, String>) -> Option<(Deployment, Cgroups, String)> {
    let root = match root {
        Ok(r) => r,
        Err(why) => {
            println!("SKIP {test}: {why}");
            return None;
        }
    };
    let (d, id) = Deployment::up(&format!("kernel/{test}"))
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    Some((d, Cgroups::new(root), rand_hex()))
}

#[tokio::test]
async fn inspect_prints_selectors_of_real_cgroups() {
    let Some((d, mut cg, r)) = setup(
        "inspect_prints_selectors_of_real_cgroups",
        writable_hierarchy(),
    )
    .await
    else {
        return;
    };

    // A service with an invocation ID, as systemd writes it (32 hex digits, trusted.* xattr).
    let service = format!("system.slice/tessera-test-{r}.service");
    let pid = cg.sleeper_in(&service);
    let invocation = format!("{r}{r}{r}{r}");
    set_invocation_id(&cg.root.join(&service), &invocation);
    let (sels, _) = inspect_json(&d, pid).await;
    assert_eq!(
        derived(&sels),
        [
            format!("systemd:unit:tessera-test-{r}.service"),
            "systemd:slice:system.slice".to_string(),
            format!("systemd:invocation_id:{invocation}"),
        ],
        "{sels:?}"
    );
    assert!(
        sels.contains(&format!("cgroup:path:/{service}")),
        "{sels:?}"
    );

    // A transient scope, as `systemd-run --scope` makes for each CI job.
    let pid = cg.sleeper_in(&format!("tessera-test-{r}.slice/run-r{r}.scope"));
    let (sels, _) = inspect_json(&d, pid).await;
    assert_eq!(
        derived(&sels),
        [
            format!("systemd:unit:run-r{r}.scope"),
            format!("systemd:slice:tessera-test-{r}.slice"),
            format!("systemd:scope:run-r{r}.scope"),
        ]
    );

    // A kubelet (systemd driver) pod with a containerd container, under a prefix of our own.
    let k = format!("tessera{r}-kubepods");
    let pod = POD_UID.replace('-', "_");
    let pid = cg.sleeper_in(&format!(
        "{k}.slice/{k}-burstable.slice/{k}-burstable-pod{pod}.slice/cri-containerd-{CID}.scope"
    ));
    let (sels, _) = inspect_json(&d, pid).await;
    let d_sels = derived(&sels);
    for want in [
        format!("container:id:{CID}"),
        "container:runtime:containerd".to_string(),
        format!("k8s:pod_uid:{POD_UID}"),
        "k8s:qos:burstable".to_string(),
    ] {
        assert!(d_sels.contains(&want), "{want} missing from {d_sels:?}");
    }

    // Podman: the container's scope, and its conmon's, which is not the container.
    let pid = cg.sleeper_in(&format!("tessera-test-{r}.slice/libpod-{CID}.scope"));
    let (sels, _) = inspect_json(&d, pid).await;
    assert!(sels.contains(&format!("container:id:{CID}")), "{sels:?}");
    assert!(
        sels.contains(&"container:runtime:podman".to_string()),
        "{sels:?}"
    );
    let pid = cg.sleeper_in(&format!("tessera-test-{r}.slice/libpod-conmon-{CID}.scope"));
    let (sels, _) = inspect_json(&d, pid).await;
    assert!(
        derived(&sels).iter().all(|s| !s.starts_with("container:")),
        "{sels:?}"
    );

    // The text output carries the same selectors, one a line.
    let cfg = d.agent_config().display().to_string();
    let out = d
        .agent_cli(&["inspect", "--pid", &pid.to_string(), "--config", &cfg])
        .await
        .expect("run tessera-agent");
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == format!("systemd:scope:libpod-conmon-{CID}.scope")),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn user_cannot_name_its_way_into_a_container_identity() {
    let Some((d, mut cg, r)) = setup(
        "user_cannot_name_its_way_into_a_container_identity",
        writable_hierarchy(),
    )
    .await
    else {
        return;
    };
    // A user manager's subtree, delegated to nobody as systemd does for user@<uid>.service.
    let manager = format!("tessera-test-{r}.slice/user@{NOBODY}.service");
    let dir = cg.make(&manager);
    nix::unistd::chown(&dir, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    for f in ["cgroup.procs", "cgroup.subtree_control"] {
        let _ = nix::unistd::chown(&dir.join(f), Some(NOBODY.into()), Some(NOBODY.into()));
    }
    // The user itself names cgroups as a rootful docker container and a pod would be.
    for name in [format!("docker-{CID}.scope"), "kubepods".to_string()] {
        let st = child_command("/bin/mkdir")
            .arg(dir.join(&name))
            .uid(NOBODY)
            .gid(NOBODY)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "nobody could not mkdir {name} in its own subtree"
        );
    }
    cg.made.push(dir.join(format!("docker-{CID}.scope")));
    cg.made.push(dir.join("kubepods"));
    let pid = cg.sleeper_in(&format!("{manager}/docker-{CID}.scope"));
    let (sels, _) = inspect_json(&d, pid).await;
    assert_eq!(
        derived(&sels),
        [
            format!("systemd:unit:user@{NOBODY}.service/docker-{CID}.scope"),
            format!("systemd:slice:tessera-test-{r}.slice"),
            format!("systemd:scope:user@{NOBODY}.service/docker-{CID}.scope"),
            format!("container:id:user@{NOBODY}.service/{CID}"),
            format!("container:runtime:user@{NOBODY}.service/docker"),
        ]
    );
    let pid = cg.sleeper_in(&format!("{manager}/kubepods/pod{POD_UID}/{CID}"));
    let (sels, _) = inspect_json(&d, pid).await;
    assert_eq!(
        derived(&sels),
        [format!("systemd:slice:tessera-test-{r}.slice")],
        "a pod path in a user's subtree must give no container or k8s selector"
    );
}

/// Runs `tessera-agent api fetch x509` from inside cgroup `dir`: the child moves itself there
/// before exec, so the agent attests it in that cgroup.
async fn fetch_from(d: &Deployment, dir: &Path) -> CmdOut {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .unwrap();
    let fd = procs.as_raw_fd();
    let mut cmd = child_command(bin("tessera-agent").expect("binary built"));
    cmd.args(["api", "fetch", "x509", "--socket", &d.socket_uri()])
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .stdin(Stdio::null());
    // SAFETY: write(2) is async-signal-safe; "0" moves the writing process.
    unsafe {
        cmd.pre_exec(
            move || match nix::libc::write(fd, b"0".as_ptr().cast(), 1) {
                1 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            },
        );
    }
    let out = within(secs(60), "api fetch x509", async {
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    })
    .await;
    drop(procs);
    CmdOut {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn systemd_unit_entry_gives_that_unit_an_svid() {
    let Some((d, mut cg, r)) = setup(
        "systemd_unit_entry_gives_that_unit_an_svid",
        writable_hierarchy(),
    )
    .await
    else {
        return;
    };
    let unit = format!("tessera-test-{r}.service");
    let spiffe_id = format!("spiffe://{TD}/svc/{r}");
    d.create_entry(&spiffe_id, &[&format!("systemd:unit:{unit}")], &[])
        .await
        .expect("create an entry");
    let inside = cg.make(&format!("system.slice/{unit}"));
    let elsewhere = cg.make(&format!("system.slice/tessera-other-{r}.service"));

    let mut got = None;
    let deadline = std::time::Instant::now() + PROPAGATION;
    while std::time::Instant::now() < deadline {
        // The setup's own entry may answer first; wait for the unit's one.
        let out = fetch_from(&d, &inside).await;
        if out.success() && out.stdout.contains(&spiffe_id) {
            got = Some(out);
            break;
        }
        tokio::time::sleep(secs(1)).await;
    }
    got.unwrap_or_else(|| panic!("no {spiffe_id} for a process in {unit}:\n{}", d.logs()));

    let out = fetch_from(&d, &elsewhere).await;
    assert!(
        !out.stdout.contains(&spiffe_id),
        "a process in another unit got {spiffe_id}:\n{}",
        out.stdout
    );
}

/// This process's v2 cgroup path (`0::`), if it has one.
fn own_v2_path() -> Option<String> {
    fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
}

#[tokio::test]
async fn hybrid_host_name_systemd_hierarchy() {
    // On a hybrid host a process whose v2 cgroup is `/` is placed by the v1 name=systemd one.
    let root = match (nix::unistd::geteuid().is_root(), mount_of("name=systemd")) {
        (false, _) => Err("not root".to_string()),
        (_, None) => Err("no name=systemd hierarchy (not a hybrid host)".to_string()),
        (_, Some(r)) if !writable(&r) => Err(format!("{} is not writable", r.display())),
        (_, Some(_)) if own_v2_path().is_some_and(|p| p != "/") => {
            Err("this process's v2 cgroup is not /, so the agent reads that one".to_string())
        }
        (_, Some(r)) => Ok(r),
    };
    let Some((d, mut cg, r)) = setup("hybrid_host_name_systemd_hierarchy", root).await else {
        return;
    };
    let service = format!("system.slice/tessera-v1-{r}.service");
    let pid = cg.sleeper_in(&service);
    let invocation = format!("{r}{r}{r}{r}");
    set_invocation_id(&cg.root.join(&service), &invocation);
    let (sels, _) = inspect_json(&d, pid).await;
    assert_eq!(
        derived(&sels),
        [
            format!("systemd:unit:tessera-v1-{r}.service"),
            "systemd:slice:system.slice".to_string(),
            format!("systemd:invocation_id:{invocation}"),
        ],
        "{sels:?}"
    );
}
