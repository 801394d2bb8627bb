//! Files the daemons write, and the directories they keep them in, such that
//! nobody else can redirect a write (a planted symlink, a swapped temp file)
//! or leave a half-written or over-readable file behind.

use std::io::{Error, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` atomically: a new temp file in the same directory
/// (random name, created exclusively, never through a symlink, `mode` before
/// any byte is written), fsync, then rename over `path` (which replaces a
/// symlink there rather than following it).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = parent_of(path);
    let (tmp, mut f) = create_temp(dir, path, mode)?;
    let written = f.write_all(data).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes what an interrupted [`write_atomic`] of one of `names` left in
/// `dir`: regular files named like its temp files (`.<name>.<hex>.tmp`, and
/// `.<name>.tmp<pid>` / `.<name>.<pid>.tmp` of older releases). Anything else,
/// and symlinks or directories with such names, are left alone (never
/// followed). Returns what was removed.
pub fn remove_stale_temps(dir: &Path, names: &[&str]) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| names.iter().any(|target| is_temp_of(n, target)));
        // DirEntry::file_type does not follow a symlink.
        if is_temp && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    if !removed.is_empty() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}

fn is_temp_of(file: &str, target: &str) -> bool {
    let tag = |t: &str| (1..=16).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_hexdigit());
    let Some(rest) = file.strip_prefix('.').and_then(|f| f.strip_prefix(target)) else {
        return false;
    };
    match (rest.strip_prefix('.'), rest.strip_prefix(".tmp")) {
        (_, Some(pid)) if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => true,
        (Some(r), _) => r.strip_suffix(".tmp").is_some_and(tag),
        _ => false,
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A fresh file next to `target`: O_CREAT|O_EXCL|O_NOFOLLOW under a random
/// name, so an existing file or symlink at that name is an error, not a target.
fn create_temp(dir: &Path, target: &Path, mode: u32) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", random_suffix()));
    let f = open_new(&tmp, mode)?;
    Ok((tmp, f))
}

/// Opens a file that did not exist: an existing file or symlink (even a
/// dangling one) at `path` is an error, never written through.
pub fn open_new(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(mode)
        .open(path)?;
    // The umask may have taken bits away; set exactly `mode` on the open file.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

pub(crate) fn random_suffix() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// Creates `path` (and parents) with `mode` if missing, then checks it is
/// private to this process's user: owned by it and writable by nobody else.
/// Used for state directories (`data_dir`), whose files must not be replaced
/// or planted by another user.
pub fn ensure_private_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    create_dir(path, mode)?;
    check_dir(path, false)
}

/// Creates `path` with `mode` if missing, then checks that only this user (or
/// root) can create or rename entries in it, unless the sticky bit stops
/// others from touching our entries. Used for socket directories.
pub fn ensure_socket_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    create_dir(path, mode)?;
    check_dir(path, true)
}

fn create_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path),
        Err(e) => Err(e),
    }
}

/// The rules above for an existing directory. A symlink to a directory is
/// judged by the directory it points to (whoever controls the link's own
/// parent is trusted with the path, as for any parent).
fn check_dir(path: &Path, shared: bool) -> std::io::Result<()> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a symlink to nothing, not a directory",
            ))
        }
        m => m?,
    };
    if !meta.is_dir() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a directory"));
    }
    let me = nix::unistd::geteuid().as_raw();
    let owner_ok = meta.uid() == me || (shared && meta.uid() == 0);
    if !owner_ok {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "owned by uid {}, not by this process's uid {me}{}",
                meta.uid(),
                if shared { " or root" } else { "" }
            ),
        ));
    }
    let mode = meta.mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(shared && sticky) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "mode {:o} lets other users replace files in it (chmod go-w)",
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let p = dir.path().join("agent_key.pem");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&p).unwrap().is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
    }

    #[test]
    fn temp_file_is_created_exclusively_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.path().join(".key.pem.guessed.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let dangling = dir.path().join(".key.pem.dangling.tmp");
        let new_victim = dir.path().join("would-be-created");
        std::os::unix::fs::symlink(&new_victim, &dangling).unwrap();
        // Opening a temp name an attacker guessed must fail, not write through.
        for p in [&planted, &dangling] {
            let err = open_new(p, 0o600).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{}", p.display());
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!new_victim.exists());
        // And the names write_atomic uses are not guessable: two differ.
        assert_ne!(random_suffix(), random_suffix());
    }

    #[test]
    fn stale_temps_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // What interrupted writes leave: current and older temp names, one truncated.
        let stale = [
            ".entries.json.0123456789abcdef.tmp",
            ".entries.json.tmp4242",
            ".tpm-ak.blob.777.tmp",
            ".agent_key.pem.fedcba9876543210.tmp",
        ];
        for n in stale {
            std::fs::write(d.join(n), b"{\"half").unwrap();
        }
        let keep = [
            "entries.json",
            ".entries.json",
            ".entries.json.tmp",
            ".entries.json.tmpx1",
            ".entries.json.xyz.tmp",
            ".other.0123456789abcdef.tmp",
            ".entries.json.0123456789abcdef0.tmp",
            "entries.json.0123456789abcdef.tmp",
        ];
        for n in keep {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        // A symlink or directory with a temp name is neither followed nor removed.
        let link = d.join(".agent_key.pem.0000000000000000.tmp");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::fs::create_dir(d.join(".entries.json.1.tmp")).unwrap();
        let names = ["entries.json", "tpm-ak.blob", "agent_key.pem"];
        let mut removed = remove_stale_temps(d, &names).unwrap();
        removed.sort();
        let mut want: Vec<PathBuf> = stale.iter().map(|n| d.join(n)).collect();
        want.sort();
        assert_eq!(removed, want);
        for n in keep {
            assert!(d.join(n).exists(), "{n} kept");
        }
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(d.join(".entries.json.1.tmp").is_dir());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // And a write_atomic killed before its rename leaves exactly such a name.
        let (tmp, _) = create_temp(d, &d.join("entries.json"), 0o600).unwrap();
        assert_eq!(remove_stale_temps(d, &names).unwrap(), vec![tmp]);
    }

    #[test]
    fn private_dir_is_created_with_mode_and_checked() {
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join("a/b");
        ensure_private_dir(&d, 0o700).unwrap();
        assert_eq!(mode_of(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&d, 0o700).unwrap_err().to_string();
        assert!(e.contains("mode 777"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            ensure_private_dir(&d, 0o700).is_err(),
            "sticky is not enough"
        );
        assert!(ensure_socket_dir(&d, 0o755).is_ok(), "sticky socket dir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(ensure_socket_dir(&d, 0o755).is_err());
    }

    #[test]
    fn output_dir_is_created_private_and_never_a_file_or_dangling_link() {
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join("out/svids");
        ensure_private_dir(&d, 0o700).unwrap();
        assert_eq!(mode_of(&d), 0o700);
        ensure_private_dir(&d, 0o700).unwrap();
        let to_dir = base.path().join("link");
        std::os::unix::fs::symlink(&d, &to_dir).unwrap();
        ensure_private_dir(&to_dir, 0o700).unwrap();
        let file = base.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let dangling = base.path().join("dangling");
        std::os::unix::fs::symlink(base.path().join("nowhere"), &dangling).unwrap();
        for bad in [&file, &dangling] {
            let e = ensure_private_dir(bad, 0o700).unwrap_err().to_string();
            assert!(e.contains("not a directory"), "{}: {e}", bad.display());
        }
        assert!(!base.path().join("nowhere").exists());
    }

    #[test]
    fn dir_owned_by_another_uid_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join("state");
        ensure_private_dir(&d, 0o700).unwrap();
        nix::unistd::chown(&d, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = ensure_private_dir(&d, 0o700).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }
}
