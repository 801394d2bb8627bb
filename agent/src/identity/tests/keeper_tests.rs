//! When the keeper renews, retries and attests again.

use super::*;

async fn sleep(s: u64) {
    tokio::time::sleep(Duration::from_secs(s)).await;
}

/// Lets (virtual) time pass until the fake has seen `n` calls.
async fn until_calls(a: &Agent, n: usize) -> Vec<(Call, Duration)> {
    for _ in 0..10_000 {
        if a.fake.calls().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.fake.calls()
}

#[tokio::test(start_paused = true)]
async fn renews_at_half_life_and_stores_each_new_credential() {
    let a = agent(false, |_| {}).await;
    let first = a.current();
    let stored = AgentSvid::load(a.dir.path(), &td()).unwrap().unwrap();
    assert_eq!(
        stored.chain, first.svid.chain,
        "the attested SVID is stored"
    );
    for round in 1..=3 {
        // The next renewal is due 40 to 60s after the previous SVID was issued.
        let calls = until_calls(&a, 1 + round).await;
        assert_eq!(calls.len(), 1 + round, "{calls:?}");
        let (call, at) = calls[round];
        let (_, prev) = calls[round - 1];
        assert_eq!(call, Call::Renew);
        let into = secs(at - prev);
        assert!(
            (40.0..=60.0).contains(&into),
            "renewed {into}s into its life"
        );
        let current = a.current();
        assert_eq!(current.svid.chain, a.fake.last_issued().chain);
        let stored = AgentSvid::load(a.dir.path(), &td()).unwrap().unwrap();
        assert_eq!(stored.chain, current.svid.chain, "each new SVID is stored");
    }
}

#[tokio::test(start_paused = true)]
async fn a_busy_authority_is_retried_with_backoff_and_its_hint() {
    let a = agent(false, |f| {
        let busy = || AuthorityError::RetryLater("ResourceExhausted: busy".into());
        f.fail_renew
            .lock()
            .unwrap()
            .extend([busy(), busy(), busy()]);
    })
    .await;
    let renewals: Vec<Duration> = until_calls(&a, 5)
        .await
        .into_iter()
        .filter(|(c, _)| *c == Call::Renew)
        .map(|(_, at)| at)
        .collect();
    assert_eq!(
        renewals.len(),
        4,
        "three failures, then success: {renewals:?}"
    );
    // Exponential from 1s, drawn from the upper half: [0.5, 1], [1, 2], [2, 4].
    for (i, (lo, hi)) in [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0)].into_iter().enumerate() {
        let gap = secs(renewals[i + 1] - renewals[i]);
        assert!((lo..=hi).contains(&gap), "retry {i} after {gap}s");
    }
    assert_eq!(a.current().svid.chain, a.fake.last_issued().chain);

    // The authority sheds load and asks for 20s: the next try waits that long.
    *a.fake.hint.lock().unwrap() = Some(Duration::from_secs(20));
    a.fake
        .fail_renew
        .lock()
        .unwrap()
        .push_back(AuthorityError::RetryLater("busy".into()));
    let calls = until_calls(&a, 7).await;
    // calls[5] is the refused renewal, calls[6] its retry.
    let (c1, t1) = calls[5];
    let (c2, t2) = calls[6];
    assert_eq!((c1, c2), (Call::Renew, Call::Renew));
    assert!(
        t2 - t1 >= Duration::from_secs(20),
        "retried {:?} later",
        t2 - t1
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_agent_svid_leads_to_attestation_at_once() {
    let a = agent(false, |f| {
        let refused = AuthorityError::AgentRefused("agent SVID superseded".into());
        f.fail_renew.lock().unwrap().push_back(refused);
    })
    .await;
    let calls = until_calls(&a, 3).await;
    let kinds: Vec<Call> = calls.iter().map(|(c, _)| *c).collect();
    assert_eq!(kinds, [Call::Attest, Call::Renew, Call::Attest]);
    assert_eq!(
        calls[1].1, calls[2].1,
        "no wait between refusal and attestation"
    );
    let current = a.current();
    assert_eq!(current.svid.chain, a.fake.last_issued().chain);
    let stored = AgentSvid::load(a.dir.path(), &td()).unwrap().unwrap();
    assert_eq!(stored.chain, current.svid.chain);
    // Renewal resumes with the new credential.
    assert_eq!(until_calls(&a, 4).await[3].0, Call::Renew);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_in_another_call_leads_to_attestation_at_once() {
    let a = agent(false, |_| {}).await;
    let first = a.current();
    sleep(10).await;
    // The entry sync was refused as this agent's (its SVID superseded, say).
    a.refuse.send_replace(Some(first.clone()));
    let calls = until_calls(&a, 2).await;
    assert_eq!(
        calls[1],
        (Call::Attest, Duration::from_secs(10)),
        "{calls:?}"
    );
    assert_eq!(a.current().svid.chain, a.fake.last_issued().chain);
    // A late refusal of the credential already replaced changes nothing.
    a.refuse.send_replace(Some(first));
    sleep(35).await;
    assert_eq!(a.fake.calls().len(), 2, "{:?}", a.fake.calls());
}

#[tokio::test(start_paused = true)]
async fn a_refused_attestation_is_retried_with_backoff_for_good() {
    let a = agent(false, |f| {
        let refused = || AuthorityError::AgentRefused("evicted".into());
        f.fail_renew.lock().unwrap().push_back(refused());
    })
    .await;
    a.fake
        .fail_attest
        .lock()
        .unwrap()
        .extend((0..5).map(|_| AuthorityError::AgentRefused("join token already used".into())));
    let calls = until_calls(&a, 8).await;
    let kinds: Vec<Call> = calls.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        kinds[..8],
        [
            Call::Attest,
            Call::Renew,
            Call::Attest,
            Call::Attest,
            Call::Attest,
            Call::Attest,
            Call::Attest,
            Call::Attest
        ]
    );
    // Backing off: the attempts spread out rather than hammering.
    let gaps: Vec<f64> = calls[2..8]
        .windows(2)
        .map(|w| secs(w[1].1 - w[0].1))
        .collect();
    assert!(gaps.iter().all(|g| *g >= 0.5), "{gaps:?}");
    assert!(gaps[4] >= 8.0, "the wait grows: {gaps:?}");
    assert_eq!(a.current().svid.chain, calls_issued_last(&a));
}

fn calls_issued_last(a: &Agent) -> Vec<CertificateDer<'static>> {
    a.fake.last_issued().chain
}

#[tokio::test(start_paused = true)]
async fn an_expired_agent_svid_is_replaced_by_attestation() {
    let a = agent(false, |f| *f.renew_down.lock().unwrap() = true).await;
    let first = a.current();
    sleep(TTL as u64 + 5).await;
    let calls = a.fake.calls();
    let attests: Vec<Duration> = calls
        .iter()
        .skip(1)
        .filter(|(c, _)| *c == Call::Attest)
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(attests.len(), 1, "{calls:?}");
    let expiry = (first.svid.not_after - a.fake.clock.base) as f64;
    assert!(secs(attests[0]) >= expiry, "attested at {:?}", attests[0]);
    // Retries stay frequent near expiry: attested within 2s of it.
    assert!(
        secs(attests[0]) <= expiry + 2.0,
        "attested at {:?}",
        attests[0]
    );
    assert!(calls
        .iter()
        .skip(1)
        .all(|(c, at)| (*c == Call::Renew) == (secs(*at) < expiry)));
    assert_eq!(a.current().svid.chain, a.fake.last_issued().chain);
}

#[tokio::test(start_paused = true)]
async fn a_tpm_node_proves_itself_again_at_renewal() {
    let a = agent(true, |_| {}).await;
    let kinds: Vec<Call> = until_calls(&a, 2).await.iter().map(|(c, _)| *c).collect();
    assert_eq!(kinds, [Call::Attest, Call::Reattest]);
}
