//! Reading the cgroup filesystem: where each hierarchy is mounted in the agent's view, and a
//! unit cgroup's `trusted.invocation_id` (only root can set `trusted.` xattrs).

use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::workload::systemd::{invocation_id, MAX_INVOCATION_ID};

/// Cap for the agent's own mountinfo (hosts with many containers have long ones).
const MAX_MOUNTINFO: u64 = 4 << 20;

/// Which hierarchy a process's cgroup path was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// cgroup v2 (`0::`).
    Unified,
    /// The v1 `name=systemd` hierarchy of a hybrid or legacy host.
    NameSystemd,
}

/// Where the whole of each hierarchy (mount root `/`) is mounted, in the agent's view.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Mounts {
    unified: Option<PathBuf>,
    name_systemd: Option<PathBuf>,
}

impl Mounts {
    /// From `<proc_root>/self/mountinfo`; a failure only means no invocation IDs.
    pub fn discover(proc_root: &Path) -> Mounts {
        let path = proc_root.join("self/mountinfo");
        let mut text = String::new();
        let read = std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_MOUNTINFO).read_to_string(&mut text));
        match read {
            Ok(_) => parse_mountinfo(&text),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot find the cgroup mounts; no systemd:invocation_id selectors");
                Mounts::default()
            }
        }
    }

    /// The invocation ID on the cgroup at `cgroup` (a path within `h`), if it has one.
    pub fn invocation_id(&self, h: Hierarchy, cgroup: &str) -> Option<String> {
        let root = match h {
            Hierarchy::Unified => self.unified.as_ref(),
            Hierarchy::NameSystemd => self.name_systemd.as_ref(),
        }?;
        let path = root.join(cgroup.trim_start_matches('/'));
        let raw = match read_xattr(&path, c"trusted.invocation_id") {
            Ok(raw) => raw?,
            Err(e) => {
                // ENOENT: the unit stopped meanwhile; the re-check sees to the process.
                tracing::debug!(path = %path.display(), error = %e, "no invocation ID");
                return None;
            }
        };
        let id = invocation_id(&raw);
        if id.is_none() {
            tracing::warn!(path = %path.display(), "trusted.invocation_id is not an invocation ID; left out");
        }
        id
    }
}

/// At most [`MAX_INVOCATION_ID`] bytes of xattr `name`; `Ok(None)` when absent.
fn read_xattr(path: &Path, name: &std::ffi::CStr) -> io::Result<Option<Vec<u8>>> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut buf = [0u8; MAX_INVOCATION_ID];
    // SAFETY: both names are NUL-terminated and `buf` is writable for `buf.len()` bytes.
    let n = unsafe {
        nix::libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    match usize::try_from(n) {
        Ok(n) => Ok(buf.get(..n).map(<[u8]>::to_vec)),
        Err(_) => {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(nix::libc::ENODATA) => Ok(None),
                _ => Err(e),
            }
        }
    }
}

/// `mountinfo` lines: `id parent maj:min root mountpoint opts [tags] - fstype source superopts`.
pub(crate) fn parse_mountinfo(s: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in s.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype), Some(superopts)) =
            (left.get(3), left.get(4), right.first(), right.get(2))
        else {
            continue;
        };
        if *root != "/" {
            continue;
        }
        let slot = match *fstype {
            "cgroup2" => &mut m.unified,
            "cgroup" if superopts.split(',').any(|o| o == "name=systemd") => &mut m.name_systemd,
            _ => continue,
        };
        if slot.is_none() {
            *slot = unescape_octal(point).map(PathBuf::from);
        }
    }
    m
}

/// mountinfo writes space, tab, newline and `\` as `\ooo`.
fn unescape_octal(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let oct = s.get(i + 1..i + 4)?;
            out.push(u8::from_str_radix(oct, 8).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_host() {
        let s = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(s),
            Mounts {
                unified: Some("/sys/fs/cgroup/unified".into()),
                name_systemd: Some("/sys/fs/cgroup/systemd".into()),
            }
        );
    }

    #[test]
    fn pure_v2_and_odd_lines() {
        let s = "garbage\n\
            50 1 0:40 /sub /mnt/ns rw - cgroup2 cgroup2 rw\n\
            51 1 0:40 / /sys/fs/my\\040cg rw - cgroup2 cgroup2 rw\n\
            52 1 0:40 / /second rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(s),
            Mounts {
                unified: Some("/sys/fs/my cg".into()),
                name_systemd: None,
            }
        );
        assert_eq!(unescape_octal("a\\04"), None);
        assert_eq!(unescape_octal("a\\999"), None);
    }

    #[test]
    fn missing_mount_or_cgroup_is_no_id() {
        assert_eq!(
            Mounts::default().invocation_id(Hierarchy::Unified, "/system.slice/a.service"),
            None
        );
        let m = Mounts {
            unified: Some("/nonexistent-cgroupfs".into()),
            name_systemd: None,
        };
        assert_eq!(m.invocation_id(Hierarchy::Unified, "/a.service"), None);
    }
}
