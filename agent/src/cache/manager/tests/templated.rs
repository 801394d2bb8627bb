//! Templated entries: signed per expansion on demand, once per expansion,
//! bounded per entry, rotated while cached, evicted when idle.

use super::*;
use tessera_common::Selector;

fn templated(id: &str, template: &str) -> pb::Entry {
    entry(id, template, 1)
}

fn caller(unit: &str) -> Vec<Selector> {
    ["unix:uid:0".to_string(), format!("systemd:unit:{unit}")]
        .iter()
        .map(|s| Selector::parse(s).unwrap())
        .collect()
}

/// `ensure` for each caller at once, while the manager serves their demands.
async fn ensure_all(
    m: &mut Manager,
    rx: &watch::Receiver<Arc<Snapshot>>,
    callers: &[Vec<Selector>],
) -> Vec<Result<Leases, String>> {
    let demands = m.demands();
    let snap = rx.borrow().clone();
    let asks = futures::future::join_all(callers.iter().map(|c| demands.ensure(&snap, c)));
    let serve = async {
        let d = m.templates.recv().await;
        m.serve(d).await;
    };
    let (got, ()) = tokio::join!(asks, serve);
    got
}

fn ids(rx: &watch::Receiver<Arc<Snapshot>>, who: &[Selector]) -> Vec<String> {
    rx.borrow()
        .matching(who)
        .iter()
        .map(|s| s.spiffe_id.to_string())
        .collect()
}

#[tokio::test]
async fn expansions_are_signed_on_demand_once_and_served_only_to_their_workload() {
    let (mut m, rx, fake, _) = setup(vec![templated("t", "spiffe://td/svc/{systemd:unit}")]);
    m.step().await.unwrap();
    assert_eq!(fake.signed.load(Ordering::SeqCst), 0, "not pre-signed");
    // A workload without the selector, or whose value is not one path segment, gets nothing.
    let bare = vec![Selector::parse("unix:uid:0").unwrap()];
    let slashed = caller("app.slice/x.service");
    let got = ensure_all_nowait(&m, &rx, &[bare.clone(), slashed.clone()]).await;
    assert!(
        got.iter().all(|r| r.as_ref().is_ok_and(Leases::is_empty)),
        "{got:?}"
    );
    assert!(ids(&rx, &bare).is_empty() && ids(&rx, &slashed).is_empty());
    let (a, b) = (caller("a.service"), caller("b.service"));
    // Three callers, two of them the same expansion: two signatures.
    let got = ensure_all(&mut m, &rx, &[a.clone(), a.clone(), b.clone()]).await;
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert_eq!(fake.signed.load(Ordering::SeqCst), 2);
    assert_eq!(ids(&rx, &a), ["spiffe://td/svc/a.service"]);
    assert_eq!(ids(&rx, &b), ["spiffe://td/svc/b.service"]);
}

/// `ensure` when nothing needs signing: it must not wait for the manager.
async fn ensure_all_nowait(
    m: &Manager,
    rx: &watch::Receiver<Arc<Snapshot>>,
    callers: &[Vec<Selector>],
) -> Vec<Result<Leases, String>> {
    let demands = m.demands();
    let snap = rx.borrow().clone();
    futures::future::join_all(callers.iter().map(|c| demands.ensure(&snap, c))).await
}

#[tokio::test]
async fn expansions_per_entry_are_bounded() {
    let (mut m, rx, fake, _) = setup(vec![templated("t", "spiffe://td/svc/{systemd:unit}")]);
    m.step().await.unwrap();
    let callers: Vec<_> = ["a.service", "b.service"].map(caller).into();
    ensure_all(&mut m, &rx, &callers).await;
    let third = caller("c.service");
    let got = ensure_all_nowait(&m, &rx, std::slice::from_ref(&third)).await;
    assert!(got[0].as_ref().is_ok_and(Leases::is_empty), "{got:?}");
    assert!(ids(&rx, &third).is_empty());
    assert_eq!(fake.signed.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_expansions_are_evicted_unless_held_and_held_ones_rotate() {
    let (mut m, rx, fake, clock) = setup(vec![templated("t", "spiffe://td/svc/{systemd:unit}")]);
    m.step().await.unwrap();
    let (a, b) = (caller("a.service"), caller("b.service"));
    let mut got = ensure_all(&mut m, &rx, &[a.clone(), b.clone()]).await;
    let held = got.remove(0).unwrap(); // a's stream stays open
    drop(got);
    let first = rx.borrow().matching(&a)[0].chain.clone();
    clock.0.fetch_add(99, Ordering::SeqCst);
    m.step().await.unwrap();
    assert_eq!(ids(&rx, &b).len(), 1, "not idle yet");
    clock.0.fetch_add(1, Ordering::SeqCst);
    m.step().await.unwrap();
    assert!(ids(&rx, &b).is_empty(), "idle: evicted");
    assert_eq!(ids(&rx, &a).len(), 1, "held by a stream: kept");
    // Kept ones rotate like any SVID (rotation is 40-60% of the 1000 s life).
    clock.0.fetch_add(500, Ordering::SeqCst);
    m.step().await.unwrap();
    assert_eq!(fake.signed.load(Ordering::SeqCst), 3);
    assert_ne!(rx.borrow().matching(&a)[0].chain, first);
    drop(held);
    clock.0.fetch_add(100, Ordering::SeqCst);
    m.step().await.unwrap();
    assert!(ids(&rx, &a).is_empty(), "released and idle: evicted");
}

#[tokio::test]
async fn failed_signing_answers_the_caller() {
    let (mut m, rx, fake, _) = setup(vec![templated("t", "spiffe://td/svc/{systemd:unit}")]);
    m.step().await.unwrap();
    *fake.fail_sign.lock().unwrap() = Some(tonic::Code::Unavailable);
    let got = ensure_all(&mut m, &rx, &[caller("a.service")]).await;
    assert!(got[0].is_err(), "{got:?}");
    assert!(ids(&rx, &caller("a.service")).is_empty());
}

/// A snapshot can still hold an expansion past its notAfter (the expiry task has not run
/// yet): that is no identity, and the caller waits for a new one.
#[tokio::test]
async fn an_expired_expansion_in_the_snapshot_is_signed_anew() {
    let (mut m, rx, fake, clock) = setup(vec![templated("t", "spiffe://td/svc/{systemd:unit}")]);
    m.step().await.unwrap();
    let a = caller("a.service");
    ensure_all(&mut m, &rx, std::slice::from_ref(&a)).await;
    let first = rx.borrow().matching(&a)[0].chain.clone();
    clock.0.fetch_add(1001, Ordering::SeqCst);
    let ask = ensure_all(&mut m, &rx, std::slice::from_ref(&a));
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), ask)
        .await
        .expect("the caller asks the manager for the expired expansion");
    assert!(got[0].is_ok(), "{got:?}");
    assert_eq!(fake.signed.load(Ordering::SeqCst), 2);
    assert_ne!(rx.borrow().matching(&a)[0].chain, first);
}
