//! `container:id:<id>` and `container:runtime:<name>` from a container's own cgroup.
//!
//! Formats, as the runtimes document them:
//! - Docker, systemd driver: `docker-<id>.scope`; cgroupfs driver: `/docker/<id>`
//!   (<https://docs.docker.com/engine/containers/runmetrics/#find-the-cgroup-for-a-given-container>).
//! - containerd's CRI plugin, systemd driver: `cri-containerd-<id>.scope`; with cgroupfs the
//!   bare id under the pod's cgroup (containerd `internal/cri/server/container_create_linux.go`).
//! - Podman: `libpod-<id>.scope` (conmon is `libpod-conmon-<id>.scope`, not the container;
//!   pods add a `machine-libpod_pod_<pod>.slice` parent); cgroupfs manager
//!   `/libpod_parent/libpod-<id>` (podman(1) `--cgroup-manager`, `--cgroup-parent`).
//! - CRI-O: `crio-<id>.scope`, cgroupfs `crio-<id>` under the pod (conmon is
//!   `crio-conmon-<id>.scope`) (crio.conf(5) `cgroup_manager`, `conmon_cgroup`).
//!
//! - Rootless docker: the systemd driver gives `docker-<id>.scope` in the user manager's
//!   tree; with any other driver (cgroupfs, or cgroup v1) dockerd uses its internal `none`
//!   driver (moby `daemon/daemon_unix.go` `cgroupDriver`: rootless and not systemd is
//!   `none`; docs "Rootless mode", Limiting resources), so the container stays in the
//!   daemon's own cgroup (its user unit, e.g. `app.slice/docker.service`): no container id.
//!
//! Every id is 64 lowercase hex digits. Read from the system part of the path a name is
//! proof (only root creates cgroups there); from a user manager's subtree it is only what
//! that user chose to call a cgroup, so the values are prefixed `user@<uid>.service/` and
//! can never equal a system one.

use super::cgroup_layout::{unescape, Layout};
use super::k8s;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    Docker,
    Containerd,
    Podman,
    Crio,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Podman => "podman",
            Runtime::Crio => "crio",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Container<'a> {
    pub id: &'a str,
    /// `None` where the layout does not say (a bare id under a kubepods pod).
    pub runtime: Option<Runtime>,
}

const SCOPE_PREFIXES: [(&str, Runtime); 4] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("libpod-", Runtime::Podman),
    ("crio-", Runtime::Crio),
];

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A container's systemd scope unit.
fn from_scope(c: &str) -> Option<Container<'_>> {
    let stem = unescape(c).strip_suffix(".scope")?;
    SCOPE_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = stem.strip_prefix(prefix).filter(|id| is_id(id))?;
        Some(Container {
            id,
            runtime: Some(*runtime),
        })
    })
}

/// The container whose cgroupfs-driver cgroup is the last of `comps` (the path so far).
pub(crate) fn cgroupfs<'a>(comps: &[&'a str]) -> Option<Container<'a>> {
    let (last, parents) = comps.split_last()?;
    match parents {
        ["docker"] if is_id(last) => Some(Container {
            id: last,
            runtime: Some(Runtime::Docker),
        }),
        ["libpod_parent"] => last
            .strip_prefix("libpod-")
            .filter(|id| is_id(id))
            .map(|id| Container {
                id,
                runtime: Some(Runtime::Podman),
            }),
        _ if k8s::cgroupfs_pod_dir(parents) => match last.strip_prefix("crio-") {
            Some(id) => is_id(id).then_some(Container {
                id,
                runtime: Some(Runtime::Crio),
            }),
            None => is_id(last).then_some(Container {
                id: last,
                runtime: None,
            }),
        },
        _ => None,
    }
}

/// `id:<id>` and `runtime:<name>` values, qualified when read from a user's subtree.
pub(crate) fn selector_values(layout: &Layout<'_>) -> Vec<String> {
    let (qualifier, found) = match &layout.user {
        Some((uid, user)) => (
            format!("user@{uid}.service/"),
            user.last().and_then(|c| from_scope(c)),
        ),
        None => (
            String::new(),
            layout
                .system
                .last()
                .and_then(|c| from_scope(c))
                .or_else(|| cgroupfs(&layout.system)),
        ),
    };
    let Some(c) = found else {
        return Vec::new();
    };
    let mut out = vec![format!("id:{qualifier}{}", c.id)];
    if let Some(r) = c.runtime {
        out.push(format!("runtime:{qualifier}{}", r.name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1b5c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    fn values(path: &str) -> Vec<String> {
        selector_values(&Layout::parse(path).unwrap())
    }

    fn expect(path: &str, runtime: &str) {
        assert_eq!(
            values(path),
            [format!("id:{ID}"), format!("runtime:{runtime}")],
            "{path}"
        );
    }

    #[test]
    fn rootful_layouts() {
        expect(&format!("/system.slice/docker-{ID}.scope"), "docker");
        expect(&format!("/docker/{ID}"), "docker");
        expect(&format!("/machine.slice/libpod-{ID}.scope"), "podman");
        expect(
            &format!("/machine.slice/libpod-{ID}.scope/container"),
            "podman",
        );
        expect(
            &format!("/machine.slice/machine-libpod_pod_{ID}.slice/libpod-{ID}.scope"),
            "podman",
        );
        expect(&format!("/libpod_parent/libpod-{ID}"), "podman");
        expect(
            &format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_1111_2222_3333_444455556666.slice/cri-containerd-{ID}.scope"),
            "containerd",
        );
        expect(
            &format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_1111_2222_3333_444455556666.slice/crio-{ID}.scope"),
            "crio",
        );
        expect(
            &format!("/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/crio-{ID}"),
            "crio",
        );
    }

    #[test]
    fn bare_id_under_a_pod_has_no_runtime() {
        assert_eq!(
            values(&format!(
                "/kubepods/burstable/pod0a1b2c3d-1111-2222-3333-444455556666/{ID}"
            )),
            [format!("id:{ID}")]
        );
        // A bare id anywhere else is not a container.
        assert!(values(&format!("/system.slice/{ID}")).is_empty());
        assert!(values(&format!("/other/{ID}")).is_empty());
    }

    #[test]
    fn conmon_and_near_misses_are_not_containers() {
        for p in [
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/system.slice/crio-conmon-{ID}.scope"),
            format!("/system.slice/docker-{}.scope", &ID[..63]),
            format!("/system.slice/docker-{ID}0.scope"),
            format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            format!("/system.slice/docker-{ID}.service"),
            format!("/system.slice/docker.service/docker/{ID}"),
            format!("/a/docker/{ID}"),
            "/system.slice/docker.service".to_string(),
        ] {
            assert!(values(&p).is_empty(), "{p}");
        }
    }

    #[test]
    fn rootless_is_qualified_by_the_user() {
        // Rootless docker and podman, systemd driver: a scope in the user manager's tree.
        let p =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope");
        assert_eq!(
            values(&p),
            [
                format!("id:user@1000.service/{ID}"),
                "runtime:user@1000.service/docker".to_string()
            ]
        );
        let p = format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        );
        assert_eq!(values(&p)[1], "runtime:user@1000.service/podman");
    }

    #[test]
    fn rootless_docker_without_the_systemd_driver_names_no_container() {
        // The `none` driver: the container's processes stay in the rootless dockerd's unit.
        for p in [
            "/user.slice/user-1000.slice/user@1000.service/app.slice/docker.service",
            "/user.slice/user-1000.slice/user@1000.service/docker.service",
        ] {
            assert!(values(p).is_empty(), "{p}");
        }
        let p = "/user.slice/user-1000.slice/user@1000.service/app.slice/docker.service";
        let (sels, _) = crate::workload::derived::from_cgroup(p);
        assert!(sels.contains(&("systemd", "unit:user@1000.service/docker.service".into())));
        // With the systemd driver (cgroup v2): a scope beside it, qualified by the user.
        let p =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope");
        assert_eq!(values(&p)[1], "runtime:user@1000.service/docker");
    }

    #[test]
    fn forged_names_in_a_delegated_subtree_prove_nothing() {
        // A service with Delegate=yes (or a container) may create any cgroup below itself.
        for p in [
            format!("/system.slice/app.service/docker-{ID}.scope"),
            format!(
                "/system.slice/docker-{ID}.scope/system.slice/docker-{}.scope",
                "0".repeat(64)
            ),
            format!("/docker/{ID}/docker/{}", "0".repeat(64)),
        ] {
            let v = values(&p);
            assert!(v.iter().all(|v| !v.contains(&"0".repeat(64))), "{p}: {v:?}");
        }
        // A user naming a cgroup like a rootful container gets only the qualified form.
        let p =
            format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope");
        assert!(values(&p).iter().all(|v| v.contains("user@1000.service/")));
        // ...and a container cgroupfs-style path under the user's tree is nothing at all.
        let p = format!("/user.slice/user-1000.slice/user@1000.service/docker/{ID}");
        assert!(values(&p).is_empty());
    }
}
