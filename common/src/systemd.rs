//! systemd service notifications (sd_notify(3)): readiness, stopping, status
//! and watchdog pings as datagrams to `$NOTIFY_SOCKET`. Every call is a no-op
//! when the daemon is not started by systemd with `Type=notify`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`.
/// `Ok(false)` when the variable is unset, i.e. not under systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket at `socket`: a path, or an
/// abstract name written with a leading `@`.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    // A stuck receiver must not stall a runtime thread for long.
    sock.set_write_timeout(Some(SEND_TIMEOUT))?;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else if bytes.starts_with(b"/") {
        sock.send_to(state.as_bytes(), Path::new(socket))?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither a path nor an abstract socket name",
        ));
    }
    Ok(())
}

/// Logs instead of failing: a lost notification must not stop the daemon.
fn send(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

/// The service is up: `Type=notify` units leave "activating" here.
pub fn ready() {
    send("READY=1");
}

/// The service is shutting down.
pub fn stopping() {
    send("STOPPING=1");
}

/// A one-line status shown by `systemctl status`.
pub fn status(text: &str) {
    send(&format!("STATUS={}", text.replace('\n', " ")));
}

/// Half the watchdog timeout systemd asked for, as sd_watchdog_enabled(3)
/// reads it: `None` when there is none or it is meant for another process.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(usec: Option<&OsStr>, pid: Option<&OsStr>, own: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        if pid.to_str()?.parse::<u32>().ok()? != own {
            return None;
        }
    }
    // Never zero: tokio's interval panics on a zero period.
    Some(Duration::from_micros((usec / 2).max(1)))
}

/// Pings the watchdog at half `WATCHDOG_USEC` from a tokio task, so a wedged
/// runtime gets the service restarted. `None` (no task) without a watchdog
/// or outside a tokio runtime.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let every = watchdog_interval()?;
    let rt = tokio::runtime::Handle::try_current().ok()?;
    tracing::debug!(interval = ?every, "systemd watchdog enabled");
    Some(rt.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send("WATCHDOG=1");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::sync::Mutex;

    /// Tests that set process-wide environment variables run one at a time.
    static ENV: Mutex<()> = Mutex::new(());

    fn env_lock() -> std::sync::MutexGuard<'static, ()> {
        ENV.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A bound notification socket in a temp dir, as systemd would provide.
    fn listener() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, path, sock)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path() {
        let (_dir, path, sock) = listener();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=x").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=x");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("tessera-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn rejects_a_relative_socket() {
        let e = notify_to(OsStr::new("relative.sock"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn watchdog_interval_is_half_and_for_this_process_only() {
        let us = |s: &str| Some(OsString::from(s));
        let f = |u: Option<OsString>, p: Option<OsString>| {
            watchdog_interval_from(u.as_deref(), p.as_deref(), 42)
        };
        assert_eq!(f(us("30000000"), None), Some(Duration::from_secs(15)));
        assert_eq!(f(us("30000000"), us("42")), Some(Duration::from_secs(15)));
        assert_eq!(f(us("30000000"), us("43")), None);
        assert_eq!(f(us("0"), None), None);
        assert_eq!(f(us("1"), None), Some(Duration::from_micros(1)));
        assert_eq!(f(us("soon"), None), None);
        assert_eq!(f(None, us("42")), None);
    }

    struct EnvGuard(&'static [&'static str]);
    impl Drop for EnvGuard {
        fn drop(&mut self) {
            for k in self.0 {
                std::env::remove_var(k);
            }
        }
    }

    #[test]
    fn notifies_through_notify_socket() {
        let _l = env_lock();
        let _g = EnvGuard(&["NOTIFY_SOCKET"]);
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").unwrap(), "no-op outside systemd");
        ready();

        let (_dir, path, sock) = listener();
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready();
        assert_eq!(recv(&sock), "READY=1");
        status("serving\nnow");
        assert_eq!(recv(&sock), "STATUS=serving now");
        stopping();
        assert_eq!(recv(&sock), "STOPPING=1");
    }

    #[test]
    fn watchdog_pings_at_half_the_timeout() {
        let _l = env_lock();
        let _g = EnvGuard(&["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]);
        let (_dir, path, sock) = listener();
        std::env::set_var("NOTIFY_SOCKET", &path);
        std::env::set_var("WATCHDOG_USEC", "200000");
        assert!(spawn_watchdog().is_none(), "no runtime: no task, no panic");

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let _rt = rt.enter();
        std::env::remove_var("WATCHDOG_USEC");
        assert!(spawn_watchdog().is_none(), "no watchdog requested");
        std::env::set_var("WATCHDOG_USEC", "200000");
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        let start = std::time::Instant::now();
        let task = spawn_watchdog().unwrap();
        for _ in 0..3 {
            assert_eq!(recv(&sock), "WATCHDOG=1");
        }
        // Three pings (the first at once) 100 ms apart: at least 200 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(190), "{took:?}");
        task.abort();

        std::env::set_var("WATCHDOG_PID", "1");
        assert!(spawn_watchdog().is_none(), "a watchdog for another pid");
    }
}
