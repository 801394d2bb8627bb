//! The quote's TPMT_SIGNATURE: parse, marshal back, and verify it with the
//! fixture's AK over the fixture's quote (the authority's order of work).

use crate::data;
use std::sync::OnceLock;
use tessera_attestors::node::tpm::public::{AkPublic, TpmtPublic};
use tessera_attestors::node::tpm::signature::{self, TpmtSignature};

struct Fixture {
    ak: AkPublic,
    quote: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = data::SWTPM_FIXTURES[0];
        let ak = TpmtPublic::parse(&data::read(&format!("{dir}/ak_pub.tpmt_public")))
            .and_then(AkPublic::new)
            .unwrap_or_else(|e| panic!("{dir}: ak: {e}"));
        Fixture {
            ak,
            quote: data::read(&format!("{dir}/quote.tpms_attest")),
        }
    })
}

pub fn fuzz_one(data: &[u8]) {
    let Ok(sig) = TpmtSignature::parse(data) else {
        return;
    };
    let _ = sig.marshal();
    let _ = sig.scheme();
    let f = fixture();
    let _ = signature::verify(&f.ak, &f.quote, &sig);
}

pub fn seeds() -> Vec<Vec<u8>> {
    super::fixture_files("quote.tpmt_signature")
}
