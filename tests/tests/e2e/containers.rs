//! A real container: Debian's podman runs an image imported from a rootfs tarball made here
//! (busybox-static; no registry is reachable). `tessera-agent inspect --pid` sees the
//! container's id and runtime in its cgroup path; with `podman system service` serving the
//! Docker Engine API on a private socket, also its image ID and labels; and an entry on a
//! label gives a process inside the container its SVID.
//!
//! Needs root and podman (scripts/install-deps.sh); skips with the reason printed otherwise,
//! or where podman cannot run a container on this host.

use crate::harness::*;
use crate::kernel_selectors::inspect_json;
use std::fs;
use std::path::Path;
use std::process::Stdio;

/// Podman with all of its state in a private directory: its own storage (vfs: works on any
/// filesystem), the cgroupfs manager (no systemd needed), no network.
struct Podman {
    dir: tempfile::TempDir,
    _service: Option<ChildGuard>,
}

impl Podman {
    fn new() -> Result<Podman, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root".into());
        }
        match std::process::Command::new("podman")
            .arg("--version")
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("podman --version: {o:?}")),
            Err(e) => return Err(format!("podman: {e} (scripts/install-deps.sh installs it)")),
        }
        let dir = tempfile::Builder::new()
            .prefix("tessera-podman-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        Ok(Podman {
            dir,
            _service: None,
        })
    }

    fn global(&self) -> Vec<String> {
        let p = self.dir.path();
        [
            format!("--root={}", p.join("storage").display()),
            format!("--runroot={}", p.join("run").display()),
            "--storage-driver=vfs".into(),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=file".into(),
            // crun refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported").
            "--runtime=runc".into(),
        ]
        .into()
    }

    async fn run(&self, args: &[&str]) -> CmdOut {
        let global = self.global();
        let mut all: Vec<&str> = global.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        run_cmd(Path::new("podman"), &all, None, &[])
            .await
            .expect("run a command")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.success(), "podman {}: {out:?}", args.join(" "));
        out.stdout.trim().to_string()
    }

    /// Imports a one-binary image (busybox; `/usr` is bind-mounted at run time for dynamically
    /// linked programs). Returns its image ID (64 hex digits), or podman's error.
    async fn import_image(&self, name: &str) -> Result<String, String> {
        let root = self.dir.path().join("rootfs");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("usr")).unwrap();
        fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static's /bin/busybox");
        std::os::unix::fs::symlink("busybox", root.join("bin/sleep")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
        let tar = self.dir.path().join("rootfs.tar");
        let st = std::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar: {st}");
        let out = self
            .run(&["import", "-q", tar.to_str().unwrap(), name])
            .await;
        if !out.success() {
            return Err(format!("podman import failed: {}", out.stderr.trim()));
        }
        Ok(self
            .ok(&["image", "inspect", "--format", "{{.Id}}", name])
            .await)
    }

    /// Serves the Docker Engine API on `socket` until dropped.
    async fn serve(&mut self, socket: &Path) {
        let log = fs::File::create(self.dir.path().join("service.log")).unwrap();
        let child = child_command("podman")
            .args(self.global())
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn podman system service");
        self._service = Some(ChildGuard(child));
        poll(secs(30), "podman system service socket", || async {
            std::os::unix::net::UnixStream::connect(socket)
                .ok()
                .map(|_| ())
        })
        .await;
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(self.global())
            .args(["rm", "--all", "--force", "--time=0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Where Debian's podman cannot run a container on this host (the issue asks for a real
/// container only where it can), the reason is printed and the rest skipped.
fn skip_real_container(why: &str) {
    println!("SKIP podman_container_selectors_and_svid (real container): {why}");
}

fn has(sels: &[String], want: &str) -> bool {
    sels.iter().any(|s| s == want)
}

#[tokio::test]
async fn podman_container_selectors_and_svid() {
    let mut podman = match Podman::new() {
        Ok(p) => p,
        Err(why) => {
            println!("SKIP podman_container_selectors_and_svid: {why}");
            return;
        }
    };
    let api_socket = podman.dir.path().join("docker.sock");
    let mut d = Deployment::new(Opts {
        // Generous: a loaded CI host's podman answers its first request slowly.
        agent_extra: format!(
            "\n[docker_api]\nsocket_path = \"{}\"\ntimeout = \"5s\"\n",
            api_socket.display()
        ),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (self_id, _) = d
        .register_self("containers/setup", &[])
        .await
        .expect("register an entry");
    let run = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .replace('-', "");
    let labelled = format!("spiffe://example.org/containers/labelled-{run}");
    d.create_entry(
        &labelled,
        &[&format!("container:label:tessera.test/run:{run}")],
        &[],
    )
    .await
    .expect("create an entry");
    d.start_agent().await.expect("start the agent");
    wait_x509(
        &mut d.raw().await.expect("connect to the agent"),
        &[&self_id],
    )
    .await;

    let image = match podman.import_image("localhost/tessera-test:1").await {
        Ok(id) => id,
        Err(why) => return skip_real_container(&why),
    };
    let agent_bin = bin("tessera-agent").expect("binary built");
    let agent_dir = d.socket_path().parent().unwrap().to_path_buf();
    let start = |label: Option<String>| {
        let mut args: Vec<String> = ["run", "-d", "--network=none"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // This host's hard limits may be below podman's defaults.
        args.extend(["--ulimit=nofile=1024:1024", "--ulimit=nproc=4096:4096"].map(String::from));
        args.push("--volume=/usr:/usr:ro".into());
        args.push(format!(
            "--volume={}:/tessera-agent:ro",
            agent_bin.display()
        ));
        args.push(format!("--volume={}:/agent", agent_dir.display()));
        if let Some(l) = label {
            args.push(format!("--label={l}"));
        }
        args.extend(["localhost/tessera-test:1", "/bin/sleep", "300"].map(String::from));
        args
    };
    let args = start(Some(format!("tessera.test/run={run}")));
    let out = podman
        .run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    if !out.success() {
        return skip_real_container(&format!("podman run failed: {}", out.stderr.trim()));
    }
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 64, "podman run -d printed {id:?}");
    let pid: u32 = podman
        .ok(&["inspect", "--format", "{{.State.Pid}}", &id])
        .await
        .parse()
        .unwrap();

    // Kernel selectors only: the API socket is configured but nothing serves it yet.
    let (sels, _) = inspect_json(&d, pid).await;
    assert!(has(&sels, &format!("container:id:{id}")), "{sels:?}");
    assert!(has(&sels, "container:runtime:podman"), "{sels:?}");
    assert!(
        !sels.iter().any(|s| s.starts_with("container:image_id:")),
        "no daemon yet: {sels:?}"
    );
    // The binary is on the container's overlay, which root mounted in the container's own
    // mount namespace: the agent vouches for its hash.
    let busybox = std::process::Command::new("sha256sum")
        .arg("/bin/busybox")
        .output()
        .expect("sha256sum");
    let busybox = String::from_utf8_lossy(&busybox.stdout);
    let busybox = busybox.split_whitespace().next().expect("a sha256sum line");
    assert!(has(&sels, &format!("unix:sha256:{busybox}")), "{sels:?}");

    podman.serve(&api_socket).await;
    let (sels, entries) = inspect_json(&d, pid).await;
    assert!(has(&sels, &format!("container:id:{id}")), "{sels:?}");
    assert!(
        has(&sels, &format!("container:image_id:sha256:{image}")),
        "{sels:?}"
    );
    assert!(
        has(&sels, &format!("container:label:tessera.test/run:{run}")),
        "{sels:?}"
    );
    assert!(entries.contains(&labelled), "{entries:?}");

    // A process in the container gets the label's SVID over the bind-mounted agent socket; one
    // in a container without the label does not.
    let fetch = |ctr: String| {
        let podman = &podman;
        async move {
            podman
                .ok(&[
                    "exec",
                    &ctr,
                    "/tessera-agent",
                    "api",
                    "fetch",
                    "x509",
                    "--socket",
                    "unix:///agent/api.sock",
                ])
                .await
        }
    };
    poll(secs(20), "the labelled SVID inside the container", || {
        let f = fetch(id.clone());
        let labelled = labelled.clone();
        async move { f.await.contains(&labelled).then_some(()) }
    })
    .await;
    let args = start(None);
    let other = podman
        .ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let out = fetch(other).await;
    assert!(out.contains(&self_id) && !out.contains(&labelled), "{out}");
}
