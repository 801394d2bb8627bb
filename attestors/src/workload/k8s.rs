//! `k8s:pod_uid:<uid>` and `k8s:qos:guaranteed|burstable|besteffort` from the kubelet's pod
//! cgroups, which it names (Kubernetes "Node resource managers" / kubelet `cgroup_manager_linux.go`):
//! - cgroupfs driver: `/kubepods/pod<uid>` (Guaranteed), `/kubepods/burstable/pod<uid>`,
//!   `/kubepods/besteffort/pod<uid>`;
//! - systemd driver: `kubepods.slice/kubepods-pod<uid>.slice`,
//!   `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`, with the
//!   uid's `-` written `_` (a `-` in a slice name means nesting), and `kubepods` itself
//!   possibly under a prefix (`kubelet.slice/kubelet-kubepods.slice/...`).
//!
//! Read only from the system part of the path: the kubelet runs as root. A user manager's
//! subtree never yields these (so a rootless kubelet's pods get none).

use super::cgroup_layout::{unescape, Layout};

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pod {
    pub uid: String,
    pub qos: &'static str,
}

const QOS: [&str; 2] = ["burstable", "besteffort"];

/// A pod UID: a UUID, or for a static pod the 32 hex digits of its config hash.
fn valid_uid(u: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let groups: Vec<&str> = u.split('-').collect();
    match groups.as_slice() {
        [one] => one.len() == 32 && hex(one),
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12]
                && groups.iter().all(|g| hex(g))
        }
        _ => false,
    }
}

/// The pod a cgroupfs path's components place the process in, and where it was found.
fn cgroupfs_pod(comps: &[&str]) -> Option<(usize, Pod)> {
    let start = comps.iter().position(|c| *c == "kubepods")?;
    let mut i = start + 1;
    let qos = match comps.get(i) {
        Some(q) if QOS.contains(q) => {
            i += 1;
            QOS.iter().find(|x| *x == q).copied()?
        }
        _ => "guaranteed",
    };
    let uid = comps.get(i)?.strip_prefix("pod").filter(|u| valid_uid(u))?;
    Some((
        i,
        Pod {
            uid: uid.to_string(),
            qos,
        },
    ))
}

/// True when `comps` ends at a cgroupfs pod directory, whose children are containers.
pub(crate) fn cgroupfs_pod_dir(comps: &[&str]) -> bool {
    matches!(cgroupfs_pod(comps), Some((i, _)) if i + 1 == comps.len())
}

fn systemd_pod(comps: &[&str]) -> Option<Pod> {
    let stems: Vec<&str> = comps
        .iter()
        .map(|c| unescape(c).strip_suffix(".slice").unwrap_or(""))
        .collect();
    let start = stems
        .iter()
        .position(|s| *s == "kubepods" || s.ends_with("-kubepods"))?;
    let base = stems[start];
    let mut i = start + 1;
    let (prefix, qos) = match QOS
        .iter()
        .find(|q| stems.get(i) == Some(&&*format!("{base}-{q}")))
    {
        Some(q) => {
            i += 1;
            (format!("{base}-{q}"), *q)
        }
        None => (base.to_string(), "guaranteed"),
    };
    let raw = stems.get(i)?.strip_prefix(&prefix)?.strip_prefix("-pod")?;
    if raw.contains('-') {
        return None;
    }
    let uid = raw.replace('_', "-");
    valid_uid(&uid).then_some(Pod { uid, qos })
}

/// `pod_uid:<uid>` and `qos:<class>` values.
pub(crate) fn selector_values(layout: &Layout<'_>) -> Vec<String> {
    let pod = cgroupfs_pod(&layout.system)
        .map(|(_, p)| p)
        .or_else(|| systemd_pod(&layout.system));
    match pod {
        Some(p) => vec![format!("pod_uid:{}", p.uid), format!("qos:{}", p.qos)],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0a1b2c3d-1111-2222-3333-444455556666";
    const UID_: &str = "0a1b2c3d_1111_2222_3333_444455556666";
    const CID: &str = "3f1b5c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    fn values(path: &str) -> Vec<String> {
        selector_values(&Layout::parse(path).unwrap())
    }

    fn expect(path: &str, qos: &str) {
        assert_eq!(
            values(path),
            [format!("pod_uid:{UID}"), format!("qos:{qos}")],
            "{path}"
        );
    }

    #[test]
    fn cgroupfs_driver() {
        expect(&format!("/kubepods/pod{UID}/{CID}"), "guaranteed");
        expect(&format!("/kubepods/burstable/pod{UID}/{CID}"), "burstable");
        expect(
            &format!("/kubepods/besteffort/pod{UID}/crio-{CID}"),
            "besteffort",
        );
        expect(&format!("/kubepods/besteffort/pod{UID}"), "besteffort");
        expect(
            &format!("/kubelet/kubepods/burstable/pod{UID}/{CID}"),
            "burstable",
        );
    }

    #[test]
    fn systemd_driver() {
        expect(
            &format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"),
            "guaranteed",
        );
        expect(
            &format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope"),
            "burstable",
        );
        expect(
            &format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{CID}.scope"),
            "besteffort",
        );
        expect(
            &format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice"),
            "burstable",
        );
        // Static pods: the uid is a 32-hex config hash.
        let h = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            values(&format!("/kubepods.slice/kubepods-pod{h}.slice")),
            [format!("pod_uid:{h}"), "qos:guaranteed".to_string()]
        );
    }

    #[test]
    fn malformed_pods() {
        for p in [
            format!("/kubepods.slice/kubepods-pod{UID}.slice"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{UID_}.slice"),
            format!("/kubepods/pod{}", &UID[..35]),
            format!("/kubepods/pod{}", UID.to_uppercase()),
            format!("/kubepods/other/pod{UID}"),
            format!("/podsomething/pod{UID}"),
        ] {
            assert!(values(&p).is_empty(), "{p}");
        }
    }

    #[test]
    fn forged_pods_in_delegated_subtrees() {
        for p in [
            format!("/user.slice/user-1000.slice/user@1000.service/kubepods.slice/kubepods-pod{UID_}.slice/x.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/kubepods/pod{UID}/{CID}"),
            format!("/system.slice/app.service/kubepods/pod{UID}/{CID}"),
            format!("/system.slice/docker-{CID}.scope/kubepods/burstable/pod{UID}/{CID}"),
            format!("/docker/{CID}/kubepods/pod{UID}/{CID}"),
        ] {
            assert!(values(&p).is_empty(), "{p}");
        }
    }
}
