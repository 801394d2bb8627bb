//! More faults: the authority killed again and again while the agent syncs and
//! signs, the TPM (swtpm) gone and back, and the agent's wall clock stepped
//! (libfaketime in the agent process only). Each test plays the fault against
//! the real binaries and checks what workloads get.

use crate::faults::{assert_state_whole, edit_agent_config, now_ms, temp_files};
use crate::harness::*;
use crate::pki;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;

/// What a watcher saw on one FetchX509SVID stream.
#[derive(Default)]
struct Seen {
    messages: usize,
    /// Leaf serials, in the order they first appeared, per SPIFFE ID.
    serials: std::collections::HashMap<String, Vec<String>>,
    /// The first broken promise: the stream ended, or a message lacked an ID
    /// or carried a certificate past its notAfter.
    broken: Option<String>,
}

/// Follows `stream` until it ends; every message must hold every ID in
/// `want` (all of them, when `all`) with a certificate still valid now.
async fn watch(
    mut stream: tonic::Streaming<pb::X509svidResponse>,
    want: Vec<String>,
    seen: Arc<Mutex<Seen>>,
) {
    loop {
        let msg = stream.message().await;
        let now = now_ms();
        let mut s = seen.lock().expect("seen");
        let m = match msg {
            Ok(Some(m)) => m,
            Ok(None) => {
                s.broken.get_or_insert_with(|| "the stream ended".into());
                return;
            }
            Err(st) => {
                s.broken
                    .get_or_insert_with(|| format!("the stream failed: {st:?}"));
                return;
            }
        };
        s.messages += 1;
        for id in &want {
            let Some(svid) = m.svids.iter().find(|x| &x.spiffe_id == id) else {
                let n = s.messages;
                s.broken
                    .get_or_insert_with(|| format!("message {n} lacks {id}"));
                continue;
            };
            let na = pki::not_after(&svid.x509_svid) * 1000;
            if na <= now {
                s.broken
                    .get_or_insert_with(|| format!("{id}: served at {now} past its notAfter {na}"));
            }
            let serial = pki::serial(&pki::split_der(&svid.x509_svid)[0]);
            let list = s.serials.entry(id.clone()).or_default();
            if list.last() != Some(&serial) {
                list.push(serial);
            }
        }
    }
}

fn spawn_watch(
    stream: tonic::Streaming<pb::X509svidResponse>,
    want: Vec<String>,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let task = tokio::spawn(watch(stream, want, seen.clone()));
    (seen, task)
}

fn broken(seen: &Mutex<Seen>) -> Option<String> {
    seen.lock().expect("seen").broken.clone()
}

/// Each SVID in `resp` is valid now, chains to its bundle and matches its key.
fn assert_valid(resp: &pb::X509svidResponse) {
    for s in &resp.svids {
        let chain = pki::split_der(&s.x509_svid);
        let roots = pki::split_der(&s.bundle);
        pki::verify_chain(&chain, &roots);
        pki::assert_key_matches(&s.x509_svid_key, &chain[0]);
        let na = pki::not_after(&chain[0]) * 1000;
        assert!(na > now_ms(), "{}: an expired SVID", s.spiffe_id);
    }
}

/// The agent's metric `tessera_agent_authority_rpc_errors_total` for `method`.
fn rpc_errors(metrics: &str, method: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("tessera_agent_authority_rpc_errors_total{")
                && l.contains(&format!("method=\"{method}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const LOAD: usize = 300;

/// A varying number of milliseconds below `span` (kill times need only differ).
fn some_ms(span: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos.wrapping_mul(2_654_435_761)) % span
}

#[tokio::test]
async fn authority_killed_mid_sync_again_and_again_the_agent_converges() {
    let agent_telemetry = crate::telemetry::free_listen();
    let mut d = Deployment::new(Opts {
        agent_extra: format!("\n[telemetry]\nlisten = \"{agent_telemetry}\"\n"),
        ..Opts::default()
    })
    .await
    .expect("deployment");
    // Short-lived, so that the agent signs a few batches every second: a kill
    // at any moment is likely to land between a sync and its signing, or in a
    // BatchSignX509 (the agent's own metrics tell which happened).
    let load: Vec<String> = (0..LOAD)
        .map(|i| format!("spiffe://example.org/faults/load-{i}"))
        .collect();
    let entries: Vec<_> = load
        .iter()
        .map(|id| {
            serde_json::json!({
                "spiffe_id": id,
                "parent_id": d.agent_id,
                "selectors": [{"type": "unix", "value": "uid:0"}],
                "x509_svid_ttl": 12,
            })
        })
        .collect();
    let file = d.dir.join("load.json");
    fs::write(&file, serde_json::json!({ "entries": entries }).to_string()).unwrap();
    d.admin_ok(&["entry", "create", "--data", file.to_str().unwrap()])
        .await
        .expect("create the load entries");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("raw client");
    let want: Vec<&str> = load.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let first = wait_x509(&mut raw, &want).await;
    eprintln!(
        "{LOAD} SVIDs served {:?} after the agent's start",
        t0.elapsed()
    );
    assert_valid(&first);
    let stream = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let (seen, watcher) = spawn_watch(stream, load.clone());

    let started = Instant::now();
    let (mut kills, mut sign_hits) = (0, 0);
    // Until two kills interrupted a signing round (at least 6 kills, at most 16).
    while kills < 6 || (sign_hits < 2 && kills < 16) {
        let wait = 150 + some_ms(700);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        d.kill_authority().await.expect("SIGKILL the authority");
        kills += 1;
        tokio::time::sleep(Duration::from_millis(100 + some_ms(400))).await;
        d.start_authority().await.expect("restart the authority");
        let metrics = crate::telemetry::scrape(&agent_telemetry, "agent").await;
        sign_hits = rpc_errors(&metrics, "BatchSignX509");
        if let Some(why) = broken(&seen) {
            panic!("after {kills} kills: {why}");
        }
    }
    eprintln!(
        "{kills} kills in {:?}; {sign_hits} BatchSignX509 calls cut off",
        started.elapsed()
    );
    assert!(
        sign_hits >= 1,
        "no kill landed in a signing round in {kills} kills"
    );
    // Converged: a full rotation of every SVID after the last restart, all valid.
    let before: Vec<String> = {
        let s = seen.lock().unwrap();
        load.iter()
            .map(|id| s.serials[id].last().cloned().unwrap_or_default())
            .collect()
    };
    poll(
        secs(20),
        "every SVID rotated after the last restart",
        || {
            let s = seen.lock().unwrap();
            let done = load
                .iter()
                .zip(&before)
                .all(|(id, b)| s.serials[id].last() != Some(b));
            std::future::ready((done || s.broken.is_some()).then_some(()))
        },
    )
    .await;
    watcher.abort();
    let s = seen.lock().unwrap();
    assert_eq!(s.broken, None, "the stream after {kills} kills");
    let last = wait_x509(&mut raw, &want).await;
    assert_valid(&last);
    assert!(d.agent_exited().is_none(), "the agent exited");
    let log = d.agent_log();
    assert!(
        !log.contains("refused this agent"),
        "the agent took a kill for a refusal"
    );
    // data_dir: whole files, no temp file left behind.
    let data = d.dir.join("agent-data");
    assert_state_whole(&data, kills);
    let listed: serde_json::Value =
        serde_json::from_slice(&fs::read(data.join("entries.json")).unwrap()).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(LOAD));
    assert_eq!(temp_files(&data), Vec::<String>::new());
}

// ---- the TPM gone and back

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
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/pid/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    ticks as f64 / hz as f64
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
        let resp = within(secs(2), "FetchX509SVID from cache", async {
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
    let back = Instant::now();
    poll(
        secs(20),
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

/// The first message of a fresh FetchX509SVID stream.
async fn first_msg(raw: &mut Raw) -> Result<pb::X509svidResponse, tonic::Status> {
    first(raw.fetch_x509svid(req(pb::X509svidRequest {}))).await
}

// ---- the wall clock stepped

/// libfaketime, as Debian installs it (package libfaketime); the MT build is
/// the one for multi-threaded programs.
fn libfaketime() -> PathBuf {
    let found = glob_one("/usr/lib", "faketime/libfaketimeMT.so.1");
    found.unwrap_or_else(|| panic!("libfaketime is not installed (scripts/install-deps.sh)"))
}

fn glob_one(root: &str, rel: &str) -> Option<PathBuf> {
    fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(rel))
        .find(|p| p.is_file())
}

/// The agent's clock offset (libfaketime's `+N`/`-N` seconds), replaced atomically.
fn set_offset(file: &Path, secs: i64) {
    let tmp = file.with_extension("tmp");
    fs::write(&tmp, format!("{secs:+}\n")).unwrap();
    fs::rename(&tmp, file).unwrap();
}

/// Starts the deployment's agent with its wall clock (only: the monotonic
/// clock stays real, as after a clock step) read from `offset_file`.
async fn start_faked_agent(d: &mut Deployment, offset_file: &Path) {
    set_offset(offset_file, 0);
    let lib = libfaketime();
    let env = [
        ("TESSERA_LOG", "info,tessera_agent=debug"),
        ("LD_PRELOAD", lib.to_str().unwrap()),
        ("FAKETIME_TIMESTAMP_FILE", offset_file.to_str().unwrap()),
        // Read the file at every call: the step takes effect at once.
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let cfg = d.agent_config();
    let mut agent = Daemon::spawn(
        "agent",
        &bin("tessera-agent").expect("the agent binary"),
        &[
            std::ffi::OsStr::new("run"),
            std::ffi::OsStr::new("--config"),
            cfg.as_os_str(),
        ],
        &d.dir.join("agent.log"),
        &env,
    )
    .expect("start the agent under libfaketime");
    agent
        .wait_ready(STARTUP)
        .await
        .expect("the agent's READY=1");
    d.extra.push(agent);
}

/// An SVID with a 30s TTL; sync rounds every 30s, so that only the agent's
/// own clock checks can act on a step in time.
async fn clock_deployment(path: &str) -> (Deployment, String, PathBuf) {
    let mut d = Deployment::new(Opts::default()).await.expect("deployment");
    let (id, _) = d
        .register_self(path, &["--x509-ttl", "30s"])
        .await
        .expect("entry with a 30s X.509 TTL");
    edit_agent_config(&d, "sync_interval = \"500ms\"", "sync_interval = \"30s\"");
    let offset = d.dir.join("faketime");
    start_faked_agent(&mut d, &offset).await;
    (d, id, offset)
}

#[tokio::test]
async fn clock_stepped_forward_past_not_after_the_agent_renews_at_once() {
    let (d, id, offset) = clock_deployment("faults/clock-forward").await;
    let mut raw = d.raw().await.expect("raw client");
    let first = wait_x509(&mut raw, &[id.as_str()]).await;
    let leaf = pki::split_der(&svid(&first, &id).x509_svid)[0].clone();
    let (nb, na) = (pki::not_before(&leaf), pki::not_after(&leaf));
    // The authority back-dates notBefore by 30s; it signed at nb + 30.
    let signed = nb + 30;
    // 7s after signing (before the rotation point, 12s at the earliest), the
    // host's clock jumps 25s: to 2s past notAfter. The new SVID then has 5s
    // left on the agent's clock.
    let at = (signed + 7) * 1000;
    tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64)).await;
    let step = 25;
    set_offset(&offset, step);
    let stepped = Instant::now();
    let old_serial = pki::serial(&leaf);
    let renewed = poll(secs(10), "a new SVID after the step", || {
        let (mut raw, id, old_serial) = (raw.clone(), id.clone(), old_serial.clone());
        async move {
            let r = first_msg(&mut raw).await.ok()?;
            let s = svid(&r, &id);
            let serial = pki::serial(&pki::split_der(&s.x509_svid)[0]);
            (serial != old_serial).then(|| r.clone())
        }
    })
    .await;
    let took = stepped.elapsed();
    assert_valid(&renewed);
    eprintln!("renewed {took:?} after the clock step (notAfter was {na})");
    assert!(
        took <= Duration::from_millis(2500),
        "the agent renewed {took:?} after its clock passed the SVID's notAfter"
    );
}

#[tokio::test]
async fn clock_stepped_backward_nothing_is_served_past_its_real_not_after() {
    let (d, id, offset) = clock_deployment("faults/clock-backward").await;
    let mut raw = d.raw().await.expect("raw client");
    let first = wait_x509(&mut raw, &[id.as_str()]).await;
    let leaf = pki::split_der(&svid(&first, &id).x509_svid)[0].clone();
    let na = pki::not_after(&leaf);
    let stream = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let (seen, watcher) = spawn_watch(stream, vec![id.clone()]);
    // 25s back: on the agent's clock the SVID it holds has 25s more to live,
    // and its rotation point (12-18s after it arrived) comes after its real
    // notAfter. (Less than the authority's 30s back-dating of notBefore, so
    // the authority's certificates stay valid on the agent's clock.)
    set_offset(&offset, -25);
    // Until past the first SVID's real notAfter: every answer holds only
    // SVIDs that are valid now, and the stream never ends.
    let until = (na + 3) * 1000;
    while now_ms() < until {
        let resp = first_msg(&mut raw).await.unwrap_or_else(|st| {
            panic!(
                "no SVID {} ms before the first one's notAfter: {st:?}",
                na * 1000 - now_ms()
            )
        });
        assert_valid(&resp);
        if let Some(why) = broken(&seen) {
            panic!("after the step back: {why}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    watcher.abort();
    let s = seen.lock().unwrap();
    assert_eq!(s.broken, None);
    assert!(
        s.serials[&id].len() >= 2,
        "the SVID was not renewed: {:?}",
        s.serials[&id]
    );
}
