//! The expiry timer on an injected clock: a fixed Unix base plus the time
//! elapsed since the test started, on tokio's paused clock (a busy machine
//! cannot make a timer look late) except where the SVID's own monotonic
//! deadline, on the real clock, is the subject.

use super::*;
use crate::cache::entry::Entry;
use crate::cache::{CachedSvid, State};
use tokio::time::Instant;

/// 300 ms into a second: notAfter, in whole seconds, then falls 700 ms after a
/// whole second from the start, where a timer stepping by `MAX_WAIT` would miss it.
const BASE_MS: i64 = 1_800_000_000_300;
/// From the start to the first whole second.
const TO_SECOND: i64 = 700;

struct TestClock(Instant);

impl TestClock {
    fn elapsed_ms(&self) -> i64 {
        self.0.elapsed().as_millis() as i64
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.now_millis() / 1000
    }
    fn now_millis(&self) -> i64 {
        BASE_MS + self.elapsed_ms()
    }
}

/// An SVID that expires `secs` whole seconds after the test's start's second.
fn svid(name: &str, secs: i64) -> Arc<CachedSvid> {
    Arc::new(CachedSvid {
        entry: Entry::test(name, &format!("spiffe://td/{name}"), Vec::new(), ""),
        spiffe_id: format!("spiffe://td/{name}").parse().unwrap(),
        template: None,
        chain: Vec::new(),
        key: Vec::new().into(),
        not_before: BASE_MS / 1000 - 60,
        not_after: BASE_MS / 1000 + secs,
        rotate_at: BASE_MS / 1000,
        monotonic: None,
    })
}

fn snapshot(svids: Vec<Arc<CachedSvid>>) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        state: State::Ready,
        svids,
        templates: Vec::new(),
        bundle: None,
        index: Default::default(),
    })
}

fn names(s: &Snapshot) -> Vec<String> {
    s.svids.iter().map(|s| s.entry.id.clone()).collect()
}

/// Waits for the next snapshot; returns it and when (ms since start) it came.
async fn next(rx: &mut watch::Receiver<Arc<Snapshot>>, clock: &TestClock) -> (Arc<Snapshot>, i64) {
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("a snapshot within 5s")
        .unwrap();
    (rx.borrow_and_update().clone(), clock.elapsed_ms())
}

#[tokio::test(start_paused = true)]
async fn each_svid_leaves_the_snapshot_at_its_not_after() {
    let clock = Arc::new(TestClock(Instant::now()));
    let (tx, mut rx) = watch::channel(snapshot(vec![svid("a", 1), svid("b", 2)]));
    rx.mark_unchanged();
    let task = tokio::spawn(drop_expired(tx.clone(), clock.clone()));
    let (snap, at) = next(&mut rx, &clock).await;
    assert_eq!(names(&snap), ["b"]);
    let due = TO_SECOND;
    assert!(
        (due..due + 300).contains(&at),
        "dropped at {at} ms, notAfter {due} ms"
    );
    assert_eq!(snap.state, State::Ready, "only the SVID goes");
    let (snap, at) = next(&mut rx, &clock).await;
    assert!(snap.svids.is_empty());
    let due = TO_SECOND + 1000;
    assert!(
        (due..due + 300).contains(&at),
        "dropped at {at} ms, notAfter {due} ms"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_new_snapshot_is_watched_and_an_expired_one_cleaned_at_once() {
    let clock = Arc::new(TestClock(Instant::now()));
    let (tx, mut rx) = watch::channel(snapshot(Vec::new()));
    let task = tokio::spawn(drop_expired(tx.clone(), clock.clone()));
    rx.mark_unchanged();
    // Published already past its notAfter (e.g. the manager was slow).
    tx.send_replace(snapshot(vec![svid("old", -1), svid("new", 1)]));
    let (snap, _) = next(&mut rx, &clock).await;
    assert_eq!(names(&snap), ["old", "new"], "what was published");
    let (snap, at) = next(&mut rx, &clock).await;
    assert_eq!(names(&snap), ["new"]);
    assert!(at < 300, "the expired one went at once, not at {at} ms");
    let (snap, at) = next(&mut rx, &clock).await;
    assert!(snap.svids.is_empty());
    let due = TO_SECOND;
    assert!(
        (due..due + 300).contains(&at),
        "dropped at {at} ms, notAfter {due} ms"
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn nothing_is_republished_while_every_svid_is_valid() {
    let clock = Arc::new(TestClock(Instant::now()));
    let (tx, mut rx) = watch::channel(snapshot(vec![svid("a", 60)]));
    rx.mark_unchanged();
    let task = tokio::spawn(drop_expired(tx.clone(), clock.clone()));
    // Past MAX_WAIT: a re-check that finds nothing expired publishes nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!rx.has_changed().unwrap());
    task.abort();
}

#[tokio::test]
async fn a_wall_clock_step_back_does_not_extend_an_svid() {
    let clock = Arc::new(TestClock(Instant::now()));
    // Arrived with 1s left; the wall clock then went back by a minute, so
    // notAfter now looks 61s away.
    let mut stepped = Arc::into_inner(svid("stepped", 61)).expect("one owner");
    stepped.monotonic = Some(crate::cache::Monotonic::from_wall(0, 0, 1));
    assert!(
        stepped.rotation_due(BASE_MS / 1000 - 60),
        "due by elapsed time"
    );
    let (tx, mut rx) = watch::channel(snapshot(vec![Arc::new(stepped)]));
    rx.mark_unchanged();
    let task = tokio::spawn(drop_expired(tx.clone(), clock.clone()));
    let (snap, at) = next(&mut rx, &clock).await;
    assert!(snap.svids.is_empty());
    // On the real clock: room for a busy machine, far from the 61 s notAfter shows.
    assert!(
        (1000..2500).contains(&at),
        "dropped at {at} ms, 1s after it arrived"
    );
    task.abort();
}
