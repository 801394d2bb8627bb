//! The agent SVID's files in `data_dir` under a kill at every step of a save.

use super::*;
use rcgen::{BasicConstraints, IsCa, Issuer, SanType};

const TD: &str = "example.org";

/// A CA and an agent SVID it signed, as the authority would.
fn agent_svid(issuer: &Issuer<'static, KeyPair>, roots: &[CertificateDer<'static>]) -> AgentSvid {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    let id = format!("spiffe://{TD}/tessera/agent/join_token/t");
    p.subject_alt_names = vec![SanType::URI(id.clone().try_into().unwrap())];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let cert = p.signed_by(&key, issuer).unwrap();
    AgentSvid {
        id: id.parse().unwrap(),
        chain: vec![cert.der().clone()],
        key_pkcs8: key.serialize_der().into(),
        issued_at: unix_now(),
        not_after: unix_now() + 3600,
        bundle_roots: roots.to_vec(),
    }
}

fn ca() -> (Issuer<'static, KeyPair>, Vec<CertificateDer<'static>>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    (Issuer::new(p, key), vec![cert.der().clone()])
}

fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

/// Replays `new.save` over a saved set, stopping after `steps` of its file
/// operations (pending, key, svid, bundle, removal), as a kill would.
fn interrupted_save(dir: &Path, new: &AgentSvid, steps: usize) {
    let full = tempfile::tempdir().unwrap();
    new.save(full.path()).unwrap();
    let names = [PENDING_FILE, KEY_FILE, SVID_FILE, BUNDLE_FILE];
    for (i, name) in names.iter().enumerate().take(steps) {
        let data = match i {
            0 => new.pending_pem().expose().as_bytes().to_vec(),
            _ => std::fs::read(full.path().join(name)).unwrap(),
        };
        fsutil::write_atomic(&dir.join(name), &data, 0o600).unwrap();
    }
    if steps > names.len() {
        std::fs::remove_file(dir.join(PENDING_FILE)).unwrap();
    }
}

#[test]
fn a_save_killed_at_any_step_loads_the_old_or_the_new_svid() {
    let (issuer, roots) = ca();
    let old = agent_svid(&issuer, &roots);
    let new = agent_svid(&issuer, &roots);
    for steps in 0..=5 {
        let dir = tempfile::tempdir().unwrap();
        old.save(dir.path()).unwrap();
        interrupted_save(dir.path(), &new, steps);
        let got = AgentSvid::load(dir.path(), &td())
            .unwrap()
            .unwrap_or_else(|| panic!("nothing loadable after {steps} steps"));
        let want = if steps == 0 { &old } else { &new };
        assert_eq!(got.chain, want.chain, "after {steps} steps");
        assert_eq!(got.key_pkcs8, want.key_pkcs8, "after {steps} steps");
        // Loading completed the save: the three files agree, no pending file.
        assert!(!dir.path().join(PENDING_FILE).exists());
        let again = AgentSvid::load(dir.path(), &td()).unwrap().unwrap();
        assert_eq!(again.chain, want.chain);
    }
}

#[test]
fn save_leaves_the_three_files_and_no_pending_one() {
    let (issuer, roots) = ca();
    let svid = agent_svid(&issuer, &roots);
    let dir = tempfile::tempdir().unwrap();
    svid.save(dir.path()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [KEY_FILE, SVID_FILE, BUNDLE_FILE]);
}

#[test]
fn an_unusable_pending_file_is_removed_and_the_old_set_loaded() {
    let (issuer, roots) = ca();
    let old = agent_svid(&issuer, &roots);
    let dir = tempfile::tempdir().unwrap();
    old.save(dir.path()).unwrap();
    std::fs::write(
        dir.path().join(PENDING_FILE),
        b"-----BEGIN PRIVATE KEY-----\nAAAA",
    )
    .unwrap();
    let got = AgentSvid::load(dir.path(), &td()).unwrap().unwrap();
    assert_eq!(got.chain, old.chain);
    assert!(!dir.path().join(PENDING_FILE).exists());
}

#[test]
fn a_save_stopped_before_any_of_its_writes_leaves_a_loadable_set() {
    let (issuer, roots) = ca();
    let old = agent_svid(&issuer, &roots);
    let new = agent_svid(&issuer, &roots);
    for blocked in [PENDING_FILE, KEY_FILE, SVID_FILE, BUNDLE_FILE] {
        let dir = tempfile::tempdir().unwrap();
        old.save(dir.path()).unwrap();
        let target = dir.path().join(blocked);
        let before = std::fs::read(&target).ok();
        let _ = std::fs::remove_file(&target);
        // A non-empty directory there: the rename onto it fails, so the save
        // stops at that write as a kill would.
        std::fs::create_dir_all(target.join("x")).unwrap();
        let _ = new.save(dir.path());
        std::fs::remove_dir_all(&target).unwrap();
        if let Some(b) = before {
            std::fs::write(&target, b).unwrap();
        }
        let got = AgentSvid::load(dir.path(), &td())
            .unwrap()
            .unwrap_or_else(|| panic!("nothing loadable when a save stopped at {blocked}"));
        let is = |s: &AgentSvid| got.chain == s.chain && got.key_pkcs8 == s.key_pkcs8;
        assert!(
            is(&old) || is(&new),
            "a mixed set when a save stopped at {blocked}"
        );
    }
}
