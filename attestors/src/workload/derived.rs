//! Selectors derived from a process's cgroup path: what systemd, a container runtime or the
//! kubelet named the cgroup, read only where root named it (see [`cgroup_layout`]).
//!
//! [`cgroup_layout`]: super::cgroup_layout

use super::cgroup_layout::Layout;
use super::{container, k8s, systemd};

/// The derived selectors as (type, value), and the cgroup of the system unit the process is
/// in (for its invocation ID, which needs I/O).
pub(crate) fn from_cgroup(path: &str) -> (Vec<(&'static str, String)>, Option<String>) {
    let Some(layout) = Layout::parse(path) else {
        tracing::debug!(path, "cgroup path not understood; no derived selectors");
        return (Vec::new(), None);
    };
    let mut out: Vec<(&'static str, String)> = Vec::new();
    out.extend(
        systemd::selector_values(&layout)
            .into_iter()
            .map(|v| ("systemd", v)),
    );
    out.extend(
        container::selector_values(&layout)
            .into_iter()
            .map(|v| ("container", v)),
    );
    out.extend(
        k8s::selector_values(&layout)
            .into_iter()
            .map(|v| ("k8s", v)),
    );
    (out, systemd::system_unit_cgroup(&layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_pod_on_systemd() {
        let cid = "3f1b5c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_1111_2222_3333_444455556666.slice/cri-containerd-{cid}.scope"
        );
        let (sels, unit) = from_cgroup(&path);
        let got: Vec<String> = sels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        assert_eq!(
            got,
            [
                format!("systemd:unit:cri-containerd-{cid}.scope"),
                "systemd:slice:kubepods-burstable-pod0a1b2c3d_1111_2222_3333_444455556666.slice"
                    .to_string(),
                format!("systemd:scope:cri-containerd-{cid}.scope"),
                format!("container:id:{cid}"),
                "container:runtime:containerd".to_string(),
                "k8s:pod_uid:0a1b2c3d-1111-2222-3333-444455556666".to_string(),
                "k8s:qos:burstable".to_string(),
            ]
        );
        assert!(unit.is_some_and(|u| u.ends_with(".scope")));
    }

    #[test]
    fn not_understood_is_nothing() {
        assert_eq!(
            from_cgroup("/../system.slice/a.service"),
            (Vec::new(), None)
        );
        assert_eq!(from_cgroup("relative.service"), (Vec::new(), None));
    }
}
