//! With more due than one batch, what expires first is signed first, and
//! once serving, each batch reaches workloads as soon as it is stored.

use super::*;

#[tokio::test]
async fn missing_then_earliest_expiry_is_signed_first() {
    let (mut m, _rx, fake, clock) = setup(vec![entry("1", "spiffe://td/a", 1)]);
    m.step().await.unwrap();
    clock.0.fetch_add(300, Ordering::SeqCst);
    fake.entries
        .lock()
        .unwrap()
        .push(entry("2", "spiffe://td/b", 1));
    m.step().await.unwrap();
    // "1" expires at t0+1000 and "2" at t0+1300; both are due now, "3" has none.
    clock.0.fetch_add(650, Ordering::SeqCst);
    fake.entries
        .lock()
        .unwrap()
        .push(entry("3", "spiffe://td/c", 1));
    let synced = fake.entries.lock().unwrap().clone();
    m.set_entries(resync(m.entries.iter(), &synced).unwrap());
    let order: Vec<String> = m
        .due(clock.now())
        .iter()
        .map(|j| j.entry.id.clone())
        .collect();
    assert_eq!(order, ["3", "1", "2"]);
}

#[tokio::test]
async fn once_serving_each_batch_is_published_before_the_next_is_signed() {
    let entries: Vec<_> = (0..150)
        .map(|i| entry(&i.to_string(), &format!("spiffe://td/{i}"), 1))
        .collect();
    let (mut m, rx, fake, clock) = setup(entries);
    let t0 = clock.now();
    *fake.watch.lock().unwrap() = Some((rx.clone(), t0 + 1000));
    m.step().await.unwrap();
    // The first round publishes once, at its end: workloads wait for all of it.
    assert_eq!(*fake.seen.lock().unwrap(), [0, 0]);
    assert_eq!(rx.borrow().svids.len(), 150);
    fake.seen.lock().unwrap().clear();
    clock.0.fetch_add(600, Ordering::SeqCst); // every SVID is due
    m.step().await.unwrap();
    // The second batch is signed while the first 100 renewed SVIDs are served.
    assert_eq!(*fake.seen.lock().unwrap(), [0, 100]);
    assert!(rx.borrow().svids.iter().all(|s| s.not_after > t0 + 1000));
}
