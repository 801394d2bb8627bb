//! Child processes that inherit nothing but their standard streams.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Marks every descriptor >= 3 close-on-exec in the child, whatever opened
/// it without O_CLOEXEC (libtss2's TCTIs do).
pub fn stdio_only(cmd: &mut Command) -> &mut Command {
    // SAFETY: runs between fork and exec and only makes one async-signal-safe
    // syscall; CLOEXEC (not close) keeps std's exec-error pipe working.
    unsafe {
        cmd.pre_exec(|| {
            let cloexec = nix::libc::CLOSE_RANGE_CLOEXEC as nix::libc::c_int;
            // Best effort: kernels before 5.11 lack the flag.
            let _ = nix::libc::close_range(3, u32::MAX, cloexec);
            Ok(())
        })
    }
}
