//! A TCG event log as the agent sends it in its evidence: parse, replay
//! every bank, check the replay against itself and derive the boot facts,
//! as the authority does after a quote.

use crate::data;
use tessera_attestors::node::tpm::{eventlog, facts};

pub fn fuzz_one(data: &[u8]) {
    let Ok(log) = eventlog::parse(data) else {
        return;
    };
    let Ok(banks) = log.replay() else {
        return;
    };
    for (bank, pcrs) in &banks {
        if let Ok(events) = log.verify(*bank, pcrs) {
            let _ = facts::extract(&events, *bank, pcrs.keys().copied());
        }
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let mut s = data::read_all("tests/data/eventlogs", ".bin");
    s.push(data::read(
        "tests/data/fixtures/swtpm-replayed-rhel8/eventlog.bin",
    ));
    s
}
