//! The TPM (swtpm) SIGKILLed and started again under an attested agent.

use super::{assert_valid, broken, first_msg, spawn_watch};
use crate::harness::*;
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;

const ALIAS: &str = "spiffe://example.org/nodes/faults-tpm";

/// How many agent SVIDs the authority issued to `agent`, by audit kind.
async fn agent_svids_issued(d: &Deployment, agent: &str) -> usize {
    let audit = d
        .admin_ok(&["audit", "--agent", agent])
        .await
        .expect("admin audit");
    ["node_attestation", "node_reattestation", "agent_renewal"]
        .iter()
        .map(|k| audit.matches(k).count())
        .sum()
}

/// User plus system CPU seconds a process used so far.
fn cpu_secs(pid: u32) -> f64 {
    tessera_tests::cpu_time(pid)
        .expect("cpu time")
        .as_secs_f64()
}

#[tokio::test]
async fn swtpm_killed_and_restarted_no_identity_without_it_and_the_agent_reattests() {
    let log = tessera_tests::rhel8_log();
    let mut tpm = tessera_tests::swtpm_booted(&log).expect("a booted swtpm");
    let opts = Opts {
        agent_ttl: "8s",
        ..Opts::default()
    };
    let mut d = Deployment::with_tpm(&tpm, &log, "", opts)
        .await
        .expect("a TPM deployment");
    let workload = "spiffe://example.org/faults/tpm-web";
    crate::tpm::alias_entry(&d, ALIAS, "tpm:ek_cert_verified:true", workload).await;
    d.start_agent().await.expect("start the agent");
    let agent = crate::tpm::tpm_agent_id(&d).await;
    let mut raw = d.raw().await.expect("raw client");
    let first = wait_x509(&mut raw, &[workload]).await;
    assert_valid(&first);
    let stream = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let (seen, watcher) = spawn_watch(stream, vec![workload.to_string()]);
    // One renewal by attesting again (every ~4s), so the TPM is in use.
    poll(secs(20), "a re-attestation", || async {
        (agent_svids_issued(&d, &agent).await >= 2).then_some(())
    })
    .await;

    tpm.crash().expect("SIGKILL swtpm");
    let crashed = Instant::now();
    // An attestation whose quote was made just before may still complete.
    tokio::time::sleep(secs(2)).await;
    let issued = agent_svids_issued(&d, &agent).await;
    let pid = d.agent_pid().expect("agent pid");
    let cpu_before = cpu_secs(pid);
    // Past the agent SVID's whole life: renewal and then re-attestation need the TPM.
    let down = secs(10);
    let window = Instant::now();
    while window.elapsed() < down {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let resp = within(secs(5), "FetchX509SVID from cache", async {
            first_msg(&mut raw).await
        })
        .await
        .expect("the cached workload SVID while the TPM is gone");
        assert_valid(&resp);
        assert_eq!(ids(&resp), [workload]);
        assert!(
            d.agent_exited().is_none(),
            "the agent exited without its TPM"
        );
    }
    let cpu = cpu_secs(pid) - cpu_before;
    assert!(
        cpu < down.as_secs_f64() * 0.3,
        "the agent used {cpu:.1}s of CPU in {down:?} without its TPM (spinning?)"
    );
    assert_eq!(
        agent_svids_issued(&d, &agent).await,
        issued,
        "an agent SVID was issued while the TPM was gone: not from a fresh quote"
    );
    let agent_log = d.agent_log();
    assert!(
        agent_log.contains("agent SVID renewal failed") && agent_log.contains("node evidence"),
        "the failed attempts are not logged"
    );

    // Back: a TPM Reset (PCRs zero), then the firmware measures the boot again.
    tpm.start_again().expect("start swtpm again");
    tessera_tests::measure_boot(&tpm, &log).expect("measure the boot");
    clock_safe_again(&tpm);
    let back = Instant::now();
    // The identity keeper backs off (at most 30 s) between failed attempts.
    poll(
        secs(35),
        "the agent to attest again with the TPM back",
        || async { (agent_svids_issued(&d, &agent).await > issued).then_some(()) },
    )
    .await;
    eprintln!(
        "re-attested {:?} after swtpm returned ({:?} after it died)",
        back.elapsed(),
        crashed.elapsed()
    );
    // The new agent SVID works: an entry created now is signed and served.
    let later = "spiffe://example.org/faults/tpm-later";
    d.admin_ok(&[
        "entry",
        "create",
        "--parent-id",
        ALIAS,
        "--spiffe-id",
        later,
        "--selector",
        "unix:uid:0",
    ])
    .await
    .expect("create an entry");
    let resp = wait_x509(&mut raw, &[workload, later]).await;
    assert_valid(&resp);
    watcher.abort();
    assert_eq!(broken(&seen), None, "the workload's stream");
}

/// After a kill, the TPM's clock may have run past its last saved copy:
/// quotes carry clockInfo.safe = NO (which the authority refuses: a clock
/// that may have gone back cannot order quotes) until the clock is next saved,
/// up to ~70 min later. The owner can set it forward past that point now.
fn clock_safe_again(tpm: &tessera_attestors::node::tpm::device::swtpm::Swtpm) {
    let out = tpm.tool(&["tpm2_readclock"]).expect("tpm2_readclock");
    let out = String::from_utf8_lossy(&out);
    let clock: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("clock:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no clock in tpm2_readclock's {out}"));
    // Past the next save point (every 2^22 ms).
    let ahead = (clock | ((1 << 22) - 1)) + 1000;
    tpm.tool(&["tpm2_setclock", &ahead.to_string()])
        .expect("tpm2_setclock");
}
