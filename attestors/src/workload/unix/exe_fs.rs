//! Whether the kernel vouches for an executable's bytes, by the file system they come from.
//!
//! A `sha256` selector says "this process runs exactly these bytes". That holds only where
//! the agent's read and the kernel's exec see the same content: a FUSE daemon answers each
//! read itself (it can tell the agent's reads from the exec's, and report any attributes),
//! and an unprivileged user can mount one, or an overlay over one inside a user namespace.
//! An unchanged file key stands for unchanged content only where the kernel itself keeps the
//! attributes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::libc;
use nix::sys::stat::fstat;
use nix::sys::statfs::fstatfs;

use super::hash_cache::statx;
use super::proc::{file_id, ProcDir};

/// `/proc/<pid>/mountinfo` above this is not searched (a node with 10,000 mounts has about
/// 2 MiB). Only namespaces that a fully privileged root owns get this far.
const MAX_MOUNTINFO: u64 = 4 * 1024 * 1024;
/// Few, large reads: before Linux 5.8 each read of `mountinfo` walked the mount list from
/// its start.
const MOUNTINFO_BUF: usize = 256 * 1024;

/// `linux/magic.h`: file systems whose content and attributes the kernel keeps.
const LOCAL: &[(u32, &str)] = &[
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0xF2F5_2010, "f2fs"),
    (0xCA45_1A4E, "bcachefs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58F6, "ramfs"),
    (0x7371_7368, "squashfs"),
    (0xE0F5_E1E2, "erofs"),
    (0x2FC1_2FC1, "zfs"),
];
const OVERLAYFS: u32 = 0x794C_7630;
/// `_IO(0xb7, 0x1)`, `linux/nsfs.h`.
const NS_GET_USERNS: libc::c_ulong = 0xB701;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Hashed once per file key.
    Local,
    /// No `sha256` selector; the reason is logged.
    Unproven(&'static str),
}

/// How far the open executable `exe` of the process behind `dir` can be vouched for.
pub(crate) fn trust(exe: &File, dir: &ProcDir) -> Trust {
    let Ok(fs) = fstatfs(exe.as_fd()) else {
        return Trust::Unproven("statfs of the executable failed");
    };
    // `f_type` is signed on some targets; the magic is its low 32 bits.
    let magic = fs.filesystem_type().0 as u32;
    if LOCAL.iter().any(|(m, _)| *m == magic) {
        return Trust::Local;
    }
    if magic == OVERLAYFS {
        return overlay_trust(exe, dir);
    }
    // FUSE and network file systems among them: another party answers the reads, and on a
    // network file system another client can rewrite the file while it runs here.
    Trust::Unproven("not on a local file system whose content the kernel keeps")
}

/// An overlay's layers are whatever its mounter chose. Trusted when a root as privileged as
/// the agent's mounted it: the mount is in the process's own mount namespace (not one an
/// executable descriptor was passed in from), and that namespace is owned by the agent's
/// user namespace (an unprivileged user's overlay lives in a namespace their own user
/// namespace owns, and mounts never propagate into a more privileged one).
fn overlay_trust(exe: &File, dir: &ProcDir) -> Trust {
    // Ownership first: it is cheap, and a user can fill a namespace of their own with mounts
    // to make the scan costly.
    match namespace_owned_by_agent_userns(dir) {
        Ok(true) => {}
        Ok(false) => return Trust::Unproven("overlay: mounted in a user namespace"),
        Err(why) => return Trust::Unproven(why),
    }
    let Some(mnt_id) = mount_id(exe) else {
        return Trust::Unproven("overlay: the kernel does not report the mount ID");
    };
    match in_mountinfo(dir, mnt_id) {
        Ok(true) => Trust::Local,
        Ok(false) => Trust::Unproven("overlay: not mounted in the process's namespace"),
        Err(why) => Trust::Unproven(why),
    }
}

/// The mount `exe` is on (Linux >= 5.8). The open file holds the mount, so its ID cannot be
/// freed and reused while the caller holds `exe`.
fn mount_id(exe: &File) -> Option<u64> {
    // The old IDs, which `mountinfo` lists, not the unique ones.
    let stx = statx(exe.as_fd(), c"", libc::AT_EMPTY_PATH, libc::STATX_MNT_ID).ok()?;
    (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

/// Whether mount `mnt_id` is in the mount namespace of the process behind `dir`.
fn in_mountinfo(dir: &ProcDir, mnt_id: u64) -> Result<bool, &'static str> {
    let file = dir
        .open_file("mountinfo")
        .map_err(|_| "overlay: cannot open the process's mountinfo")?;
    let want = mnt_id.to_string();
    let mut lines = BufReader::with_capacity(MOUNTINFO_BUF, file.take(MAX_MOUNTINFO + 1));
    let mut line = Vec::new();
    let mut total = 0u64;
    loop {
        line.clear();
        let n = lines
            .read_until(b'\n', &mut line)
            .map_err(|_| "overlay: cannot read the process's mountinfo")?;
        if n == 0 {
            return Ok(false);
        }
        total += n as u64;
        if total > MAX_MOUNTINFO {
            return Err("overlay: the process's mountinfo is too large to search");
        }
        // "<mount ID> <parent ID> ..."
        if line.split(|b| *b == b' ').next() == Some(want.as_bytes()) {
            return Ok(true);
        }
    }
}

fn namespace_owned_by_agent_userns(dir: &ProcDir) -> Result<bool, &'static str> {
    let ns = dir
        .open_file("ns/mnt")
        .map_err(|_| "overlay: cannot open the process's mount namespace")?;
    // SAFETY: `ns` is an open nsfs descriptor; NS_GET_USERNS takes no argument.
    let owner = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS as _) };
    if owner < 0 {
        return Err("overlay: cannot read the owner of the process's mount namespace");
    }
    // SAFETY: a successful NS_GET_USERNS returns a new descriptor that nothing else owns.
    let owner = unsafe { OwnedFd::from_raw_fd(owner) };
    let owner = fstat(owner.as_raw_fd()).map_err(|_| "overlay: cannot stat a user namespace")?;
    let ours = agent_userns().ok_or("overlay: cannot read the agent's own user namespace")?;
    Ok(file_id(&owner) == ours)
}

/// The agent's own user namespace, as (device, inode) of its nsfs file.
fn agent_userns() -> Option<(u64, u64)> {
    static OURS: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *OURS.get_or_init(|| {
        nix::sys::stat::stat("/proc/self/ns/user")
            .ok()
            .map(|s| file_id(&s))
    })
}

#[cfg(test)]
mod tests;
