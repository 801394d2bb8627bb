//! `/proc/<pid>` access. The parsers are pure; [`ProcDir`] does the I/O.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode};

use super::cgroupfs::Hierarchy;
use super::hash_cache::FileKey;
use super::UnixError;

/// Cap for /proc files; a real stat or cgroup file is far smaller.
pub(crate) const MAX_PROC_FILE: u64 = 64 * 1024;
/// A first read's buffer: larger than a usual stat, status or cgroup file.
const READ_BUF: usize = 4096;
/// `Groups:` may list NGROUPS_MAX (65536) gids, which does not fit in 64 KiB.
pub(crate) const MAX_STATUS_FILE: u64 = 1024 * 1024;

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 3: R, S, D, Z, X, ...
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

impl Stat {
    /// Zombie or dead: the process has exited, only its pid is still held.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The fields of `/proc/<pid>/status` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    /// Real uid (first field of `Uid:`).
    pub uid: u32,
    /// Effective uid (second field of `Uid:`): the one SO_PEERCRED records at connect(2).
    pub euid: u32,
    /// Real gid (first field of `Gid:`).
    pub gid: u32,
    /// Supplementary gids (`Groups:`).
    pub groups: Vec<u32>,
}

pub(crate) fn parse_stat(s: &str) -> Result<Stat, String> {
    // comm (field 2) may contain spaces and ')', so count fields from the last ')'.
    let close = s.rfind(')').ok_or("no ')' closing the command name")?;
    let mut fields = s[close + 1..].split_ascii_whitespace();
    let state_field = fields.next().ok_or("missing state field")?;
    let mut chars = state_field.chars();
    let state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => return Err(format!("bad state field {state_field:?}")),
    };
    // Field 3 (state) is consumed; field 22 is 18 further on.
    let start = fields.nth(18).ok_or("missing start time field")?;
    let start_time = start
        .parse::<u64>()
        .map_err(|_| format!("bad start time {start:?}"))?;
    Ok(Stat { state, start_time })
}

pub(crate) fn parse_status(s: &str) -> Result<Status, String> {
    let mut uid = None;
    let mut gid = None;
    let mut groups = None;
    for line in s.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "Uid" => &mut uid,
            "Gid" => &mut gid,
            "Groups" => &mut groups,
            _ => continue,
        };
        // The kernel escapes newlines in Name:, so a duplicate means the file is not what we think.
        if slot.is_some() {
            return Err(format!("duplicate {key}: line"));
        }
        let ids = rest
            .split_ascii_whitespace()
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("bad id {v:?} in {key}:"))
            })
            .collect::<Result<Vec<u32>, String>>()?;
        *slot = Some(ids);
    }
    // real, effective, saved, filesystem
    let four = |ids: Option<Vec<u32>>, key: &str| -> Result<[u32; 4], String> {
        match ids.as_deref() {
            Some(&[real, effective, saved, fs]) => Ok([real, effective, saved, fs]),
            Some(_) => Err(format!("{key}: does not have 4 fields")),
            None => Err(format!("no {key}: line")),
        }
    };
    let [uid, euid, ..] = four(uid, "Uid")?;
    Ok(Status {
        uid,
        euid,
        gid: four(gid, "Gid")?[0],
        groups: groups.ok_or("no Groups: line")?,
    })
}

/// A process's cgroup path and the hierarchy it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupPath {
    pub hierarchy: Hierarchy,
    pub path: String,
}

/// The cgroup path for selectors: the v2 path (`0::<path>`), or where that is `/` or absent
/// (hybrid hosts), the `name=systemd` v1 path. `None` if neither is present.
pub(crate) fn parse_cgroup(s: &str) -> Result<Option<CgroupPath>, String> {
    let mut v2: Option<&str> = None;
    let mut systemd: Option<&str> = None;
    for line in s.lines().filter(|l| !l.is_empty()) {
        // The path may itself contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed line {line:?}"));
        };
        let slot = if id == "0" && controllers.is_empty() {
            &mut v2
        } else if controllers.split(',').any(|c| c == "name=systemd") {
            &mut systemd
        } else {
            continue;
        };
        // The kernel refuses '\n' in cgroup names; reject rather than guess if one got through.
        if slot.replace(path).is_some() {
            return Err(format!("duplicate hierarchy line {line:?}"));
        }
    }
    let chosen = match (v2, systemd) {
        (Some(p), _) if p != "/" => Some((Hierarchy::Unified, p)),
        (_, Some(p)) => Some((Hierarchy::NameSystemd, p)),
        (p, None) => p.map(|p| (Hierarchy::Unified, p)),
    };
    Ok(chosen.map(|(hierarchy, p)| CgroupPath {
        hierarchy,
        path: p.to_owned(),
    }))
}

/// (device, inode) of a stat(2) result, as `MetadataExt` gives them.
#[allow(clippy::unnecessary_cast)] // dev_t and ino_t are narrower on some targets
pub(crate) fn file_id(st: &FileStat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// True for errors meaning "this process no longer exists" (ENOENT on lookup, ESRCH on read).
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH)
}

/// An open `/proc/<pid>` directory. Everything read through it belongs to the one process that
/// had the pid when it was opened: after that process exits, reads fail instead of silently
/// following a reused pid.
#[derive(Debug)]
pub(crate) struct ProcDir {
    dir: File,
    path: PathBuf,
}

impl ProcDir {
    /// Opens `<root>/<pid>`; a missing directory is `ProcessGone`.
    pub fn open(root: &Path, pid: i32) -> Result<Self, UnixError> {
        let path = root.join(pid.to_string());
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_DIRECTORY.bits())
            .open(&path)
            .map_err(|e| {
                if is_gone(&e) {
                    UnixError::ProcessGone
                } else {
                    UnixError::Io {
                        path: path.clone(),
                        source: e,
                    }
                }
            })?;
        Ok(ProcDir { dir, path })
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn io_err(&self, name: &str, source: io::Error) -> UnixError {
        UnixError::Io {
            path: self.path_of(name),
            source,
        }
    }

    /// Opens `name` relative to the directory, following the `exe` magic link.
    pub fn open_file(&self, name: &str) -> Result<File, UnixError> {
        let fd = openat(
            Some(self.dir.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| self.io_err(name, e.into()))?;
        // SAFETY: `fd` was just returned by a successful openat and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Reads at most `limit` bytes of `name`; a longer file is an error, not a truncation.
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, UnixError> {
        let file = self.open_file(name)?;
        // Room for a whole stat, status or cgroup file: one read(2) and the one that sees its
        // end, where an empty buffer started with a small probe and grew read by read.
        let mut buf = Vec::with_capacity(READ_BUF.min(limit as usize + 1));
        file.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| self.io_err(name, e))?;
        if buf.len() as u64 > limit {
            return Err(UnixError::TooLarge {
                path: self.path_of(name),
                limit,
            });
        }
        Ok(buf)
    }

    /// The file key of the executable (`statx` with `flags` through the `exe` magic link: no
    /// path walk from `/`); `ProcessGone` once the process has exited.
    pub fn exe_key(&self, flags: nix::libc::c_int) -> Result<FileKey, UnixError> {
        FileKey::at(std::os::fd::AsFd::as_fd(&self.dir), c"exe", flags)
            .map_err(|e| super::gone_as_process_gone(self.io_err("exe", e)))
    }

    /// stat(2) of the directory itself. Its owner is the process's effective uid and gid
    /// (dumpable or not, unlike the files in it); once the process has exited it reads as root's,
    /// so only a check that the process still lives makes it mean anything.
    pub fn stat_self(&self) -> Result<FileStat, UnixError> {
        fstat(self.dir.as_raw_fd()).map_err(|e| UnixError::Io {
            path: self.path.clone(),
            source: e.into(),
        })
    }

    pub fn readlink(&self, name: &str) -> Result<OsString, UnixError> {
        readlinkat(Some(self.dir.as_raw_fd()), name).map_err(|e| self.io_err(name, e.into()))
    }

    pub fn stat(&self) -> Result<Stat, UnixError> {
        let raw = self.read("stat", MAX_PROC_FILE)?;
        // Only comm can be non-UTF-8, and a replacement character is never ')'.
        parse_stat(&String::from_utf8_lossy(&raw)).map_err(|reason| self.parse_err("stat", reason))
    }

    pub fn status(&self) -> Result<Status, UnixError> {
        let raw = self.read("status", MAX_STATUS_FILE)?;
        // Only Name: can be non-UTF-8, and it is not used.
        parse_status(&String::from_utf8_lossy(&raw))
            .map_err(|reason| self.parse_err("status", reason))
    }

    /// `Ok(None)` when there is no usable path, including a non-UTF-8 one: converting lossily
    /// could make it equal to a different cgroup's path.
    pub fn cgroup(&self) -> Result<Option<CgroupPath>, UnixError> {
        let raw = self.read("cgroup", MAX_PROC_FILE)?;
        let Ok(text) = String::from_utf8(raw) else {
            tracing::warn!(path = %self.path_of("cgroup").display(), "cgroup file is not UTF-8; no cgroup selector");
            return Ok(None);
        };
        parse_cgroup(&text).map_err(|reason| self.parse_err("cgroup", reason))
    }

    fn parse_err(&self, name: &str, reason: String) -> UnixError {
        UnixError::Parse {
            path: self.path_of(name),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line with a hostile comm: spaces, ')' and a fake field list inside.
    const STAT: &str = "4242 (evil) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99) R 1 4242 4242 0 -1 4194560 \
        100 0 0 0 1 2 0 0 20 0 1 0 777123 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n";

    #[test]
    fn stat_parses_from_last_paren() {
        let st = parse_stat(STAT).unwrap();
        assert_eq!(
            st,
            Stat {
                state: 'R',
                start_time: 777123
            }
        );
        assert!(!st.exited());
    }

    #[test]
    fn stat_plain_and_zombie() {
        let s = "17 (sleep) Z 1 17 17 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0 5555 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let st = parse_stat(s).unwrap();
        assert_eq!(
            st,
            Stat {
                state: 'Z',
                start_time: 5555
            }
        );
        assert!(st.exited());
    }

    #[test]
    fn stat_rejects_garbage() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("1 (no close paren S 1 2").is_err());
        assert!(parse_stat("1 (short) S 1 2 3").is_err());
        assert!(parse_stat("1 (x) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20").is_err());
        assert!(parse_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5 20").is_err());
    }

    const STATUS: &str = "Name:\tmy prog\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        Uid:\t1000\t0\t0\t0\nGid:\t100\t5\t5\t5\nFDSize:\t64\nGroups:\t4 24 27 \nNStgid:\t4242\n";

    #[test]
    fn status_uses_real_ids() {
        let st = parse_status(STATUS).unwrap();
        assert_eq!(
            st,
            Status {
                uid: 1000,
                euid: 0,
                gid: 100,
                groups: vec![4, 24, 27]
            }
        );
    }

    #[test]
    fn status_empty_groups() {
        let s = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(parse_status(s).unwrap().groups, Vec::<u32>::new());
    }

    #[test]
    fn status_rejects_bad() {
        let no_uid = "Gid:\t0\t0\t0\t0\nGroups:\t\n";
        assert!(parse_status(no_uid).is_err());
        let dup = "Uid:\t0\t0\t0\t0\nUid:\t5\t5\t5\t5\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert!(parse_status(dup).is_err());
        let short = "Uid:\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert!(parse_status(short).is_err());
        let bad = "Uid:\tx\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert!(parse_status(bad).is_err());
        let bad_group = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t1 -2\n";
        assert!(parse_status(bad_group).is_err());
    }

    fn path(s: &str) -> Option<String> {
        parse_cgroup(s).unwrap().map(|c| c.path)
    }

    #[test]
    fn cgroup_hierarchy() {
        let h = |s| parse_cgroup(s).unwrap().map(|c| c.hierarchy);
        assert_eq!(h("0::/a.service\n"), Some(Hierarchy::Unified));
        assert_eq!(
            h("1:name=systemd:/a.service\n0::/\n"),
            Some(Hierarchy::NameSystemd)
        );
        assert_eq!(h("0::/\n"), Some(Hierarchy::Unified));
    }

    #[test]
    fn cgroup_v2() {
        let s = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            path(s),
            Some("/user.slice/user-1000.slice/session-2.scope".to_string())
        );
    }

    #[test]
    fn cgroup_hybrid_prefers_systemd_when_v2_is_root() {
        let s = "12:pids:/user.slice\n1:name=systemd:/system.slice/foo:bar.service\n0::/\n";
        assert_eq!(path(s), Some("/system.slice/foo:bar.service".to_string()));
    }

    #[test]
    fn cgroup_hybrid_uses_v2_when_not_root() {
        let s = "1:name=systemd:/system.slice/a.service\n0::/system.slice/a.service/sub\n";
        assert_eq!(path(s), Some("/system.slice/a.service/sub".to_string()));
    }

    #[test]
    fn cgroup_v1_systemd_only_and_root() {
        assert_eq!(
            path("3:cpu,cpuacct:/x\n1:name=systemd:/init.scope\n"),
            Some("/init.scope".to_string())
        );
        assert_eq!(path("0::/\n"), Some("/".to_string()));
        assert_eq!(parse_cgroup("3:cpu:/x\n").unwrap(), None);
        assert_eq!(parse_cgroup("").unwrap(), None);
    }

    #[test]
    fn cgroup_rejects_duplicates_and_malformed() {
        assert!(parse_cgroup("0::/a\n0::/b\n").is_err());
        assert!(parse_cgroup("1:name=systemd:/a\n2:name=systemd:/b\n").is_err());
        assert!(parse_cgroup("garbage\n").is_err());
    }
}
