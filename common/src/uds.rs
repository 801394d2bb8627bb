//! Unix sockets: binding the daemons' listening sockets safely, and gRPC
//! clients over them (the admin socket, the Workload API socket).

use crate::fsutil;
use hyper_util::rt::TokioIo;
use std::io::{Error, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};

/// Connects lazily-free: fails now if nothing listens at `path`.
pub async fn connect(path: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    let path = path.into();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// Binds a listening socket at `path` with permissions `mode`, set before
/// anyone can connect and never through a path someone else could swap: the
/// socket is bound inside a fresh 0700 directory of ours, chmod-ed there,
/// then renamed into place (replacing a stale socket, or a symlink, rather
/// than following it). The directory holding `path` is created 0755 if
/// missing and must be ours or root's and not writable by others (unless
/// sticky). A socket a live process is serving on is never replaced.
pub fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fsutil::ensure_socket_dir(dir, 0o755)?;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() && UnixStream::connect(path).is_ok() {
            return Err(Error::new(
                ErrorKind::AddrInUse,
                "another process is serving on it",
            ));
        }
    }
    let private = dir.join(format!(".{}.d", fsutil::random_suffix()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("s");
    let bound = bind_at(&tmp, mode).and_then(|l| std::fs::rename(&tmp, path).map(|()| l));
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    bound
}

fn bind_at(tmp: &Path, mode: u32) -> std::io::Result<UnixListener> {
    let listener = UnixListener::bind(tmp)?;
    // Nobody else can enter the 0700 directory: this path is ours alone.
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn socket_gets_its_mode_and_accepts() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in [("api.sock", 0o666), ("admin.sock", 0o600)] {
            let p = dir.path().join(name);
            let l = bind(&p, mode).unwrap();
            assert_eq!(mode_of(&p), mode);
            assert!(std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_socket());
            UnixStream::connect(&p).unwrap();
            l.set_nonblocking(false).unwrap();
            l.accept().unwrap();
        }
        // No temp directories left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_symlink_at_the_socket_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = dir.path().join("api.sock");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let _l = bind(&p, 0o666).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode_of(&victim), 0o600, "chmod went through the symlink");
        assert!(std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_socket());
    }

    #[test]
    fn a_stale_socket_is_replaced_but_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api.sock");
        let live = bind(&p, 0o600).unwrap();
        let e = bind(&p, 0o600).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
        drop(live);
        bind(&p, 0o600).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join("run");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind(&d.join("api.sock"), 0o666).unwrap_err().to_string();
        assert!(e.contains("mode 777"), "{e}");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            nix::unistd::chown(&d, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let e = bind(&d.join("api.sock"), 0o666).unwrap_err().to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
    }
}
