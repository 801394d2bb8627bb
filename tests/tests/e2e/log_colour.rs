//! Logs read by a journal, a file or a pipe carry no ANSI colour codes.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The agent's stderr, a pipe: plain text even with NO_COLOR unset and
/// outside systemd (the cases where tracing would colour by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    let d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let mut child = child_command(bin("tessera-agent").expect("binary built"))
        .args(["run", "--config"])
        .arg(d.agent_config())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env("TESSERA_LOG", "info,tessera_agent=debug")
        .spawn()
        .expect("start tessera-agent");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Until the agent has attested and logged it (or 30s).
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let done = String::from_utf8_lossy(&line).contains("INFO") && out.len() >= 3;
                out.extend(line);
                out.push(b'\n');
                if done {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("INFO"),
        "the agent logged no INFO line within 30s:\n{text}"
    );
    assert!(
        !out.windows(2).any(|w| w == b"\x1b["),
        "ANSI escape codes in logs written to a pipe:\n{text:?}"
    );
}
