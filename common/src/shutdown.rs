//! The stop request of a daemon: SIGTERM (systemd) or SIGINT (a terminal). Caught from the
//! moment [`Shutdown::install`] returns, so a daemon installs it before it tells systemd it
//! is ready: a stop that follows READY at once is a clean stop, never death by signal.

use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    /// Replaces the default action (death) of SIGTERM and SIGINT for the whole process.
    /// Needs a tokio runtime.
    pub fn install() -> std::io::Result<Shutdown> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT, including one that came since `install`.
    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_sigterm_before_anyone_waits_is_a_request_not_a_death() {
        let mut stop = Shutdown::install().unwrap();
        // With the default action this process would end here.
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(10), stop.requested())
            .await
            .expect("the SIGTERM sent before waiting");
    }
}
