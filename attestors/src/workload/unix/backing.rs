//! What a block device's contents come from, as far as it decides whose they are. A file
//! system on a disk image its user may write (udisks sets up loop devices for desktop users)
//! changes under a live mount when the image file is written and its pages dropped: no
//! attribute changes, and what runs need not be what the agent read.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::libc;

/// dm over dm over loop is as deep as real stacks go; deeper is refused.
const MAX_DEPTH: usize = 8;

/// Ok when nobody but root can rewrite the device behind `dev` (a file's `st_dev`): a disk,
/// or a loop device whose backing file is root's and writable by no one else. Devices with
/// no `/sys/dev/block` entry (tmpfs, btrfs's and overlay's anonymous numbers) are not
/// block devices of their own and pass.
pub(crate) fn check(sys: &Path, dev: u64) -> Result<(), String> {
    let node = sys.join(format!(
        "dev/block/{}:{}",
        libc::major(dev),
        libc::minor(dev)
    ));
    match fs::canonicalize(&node) {
        Ok(dir) => check_dir(&dir, 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", node.display())),
    }
}

/// `dir`: the device's directory under `/sys/devices`.
fn check_dir(dir: &Path, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{}: devices stacked too deep", dir.display()));
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: no device name", dir.display()))?;
    if name.starts_with("nbd") || name.starts_with("ublkb") {
        return Err(format!("{name}: served by a user-space daemon"));
    }
    // A partition's loop attributes are its disk's.
    let disk = match dir.join("partition").exists() {
        true => dir.parent().unwrap_or(dir),
        false => dir,
    };
    let backing = disk.join("loop/backing_file");
    if backing.exists() {
        check_backing_file(&backing)?;
    }
    let slaves = match fs::read_dir(disk.join("slaves")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}/slaves: {e}", disk.display())),
    };
    for slave in slaves {
        let slave = slave.map_err(|e| format!("{}/slaves: {e}", disk.display()))?;
        let under = fs::canonicalize(slave.path())
            .map_err(|e| format!("{}: {e}", slave.path().display()))?;
        check_dir(&under, depth + 1)?;
    }
    Ok(())
}

/// The kernel names the backing file as the reader sees it; one that cannot be found here
/// (another mount namespace, a hidden `/home`) cannot be vouched for.
fn check_backing_file(attr: &Path) -> Result<(), String> {
    let text = fs::read_to_string(attr).map_err(|e| format!("{}: {e}", attr.display()))?;
    let path = PathBuf::from(text.trim_end_matches('\n'));
    let meta = fs::metadata(&path).map_err(|e| format!("loop backing file {path:?}: {e}"))?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "loop backing file {path:?} is writable by others than root (uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}
