//! The agent's wall clock stepped (libfaketime in the agent process only; its
//! monotonic clock stays real, as after a clock step on a real host).

use super::{assert_valid, broken, first_msg, spawn_watch};
use crate::faults::{edit_agent_config, now_ms};
use crate::harness::*;
use crate::pki;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;

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

/// An SVID with a TTL of `ttl` seconds; sync rounds every 30s, so that only the
/// agent's own clock checks can act on a step in time.
async fn clock_deployment(path: &str, ttl: u32) -> (Deployment, String, PathBuf) {
    let mut d = Deployment::new(Opts::default()).await.expect("deployment");
    let (id, _) = d
        .register_self(path, &["--x509-ttl", &format!("{ttl}s")])
        .await
        .expect("entry with a short X.509 TTL");
    edit_agent_config(&d, "sync_interval = \"500ms\"", "sync_interval = \"30s\"");
    let offset = d.dir.join("faketime");
    start_faked_agent(&mut d, &offset).await;
    (d, id, offset)
}

#[tokio::test]
async fn clock_stepped_forward_past_not_after_the_agent_renews_at_once() {
    let (d, id, offset) = clock_deployment("faults/clock-forward", 60).await;
    let mut raw = d.raw().await.expect("raw client");
    let first = wait_x509(&mut raw, &[id.as_str()]).await;
    let leaf = pki::split_der(&svid(&first, &id).x509_svid)[0].clone();
    let (nb, na) = (pki::not_before(&leaf), pki::not_after(&leaf));
    // The authority back-dates notBefore by 30s; it signed at nb + 30.
    let signed = nb + 30;
    // 10s after signing (before the rotation point, 24s at the earliest), the
    // host's clock jumps 55s: to 5s past notAfter. The new SVID then has 5s
    // left on the agent's clock. Without the agent's clock checks it would
    // renew at the rotation point, 14s after the step at the earliest.
    let at = (signed + 10) * 1000;
    tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64)).await;
    let step = 55;
    set_offset(&offset, step);
    let stepped = Instant::now();
    let old_serial = pki::serial(&leaf);
    let renewed = poll(secs(20), "a new SVID after the step", || {
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
    // A clock check every second, then a round: 1-2s, with room for a busy machine.
    assert!(
        took <= Duration::from_secs(8),
        "the agent renewed {took:?} after its clock passed the SVID's notAfter"
    );
}

#[tokio::test]
async fn clock_stepped_backward_nothing_is_served_past_its_real_not_after() {
    let (d, id, offset) = clock_deployment("faults/clock-backward", 30).await;
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
