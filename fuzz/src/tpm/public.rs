//! TPMT_PUBLIC / TPM2B_PUBLIC (`ek_public`, `ak_public`): parse, then
//! everything the authority derives from a key: name, SPKI, EK template, AK checks.

use tessera_attestors::node::tpm::public::{AkPublic, TpmtPublic};

pub fn fuzz_one(data: &[u8]) {
    let _ = TpmtPublic::parse_tpm2b(data);
    let Ok(p) = TpmtPublic::parse(data) else {
        return;
    };
    let _ = p.name();
    let _ = p.spki_der();
    let _ = p.area().marshal();
    if let Ok(t) = p.ek_template() {
        let _ = t.to_string();
    }
    let _ = AkPublic::new(p);
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut s = super::fixture_files("ek_pub.tpmt_public");
    s.extend(super::fixture_files("ak_pub.tpmt_public"));
    s
}
