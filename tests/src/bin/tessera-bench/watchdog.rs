//! Ends the whole run when a scenario outlives its budget. The daemons it
//! started die with it (their parent-death signal).

use std::sync::mpsc;
use std::time::Duration;

/// Disarmed when dropped.
pub struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    pub fn start(scenario: &'static str, budget: Duration) -> Self {
        let (disarm, armed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(budget) {
                eprintln!(
                    "error: scenario {scenario} ran past its {} s budget: a call hung",
                    budget.as_secs()
                );
                std::process::exit(1);
            }
        });
        Watchdog { _disarm: disarm }
    }
}
