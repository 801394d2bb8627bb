//! Facts about the boot, taken only from replay-verified events whose digest
//! proves what the fact reads: the event type and data of a log are
//! attacker-controlled even when the replay succeeds (TPM.md §2.4).

mod integrity;
#[cfg(test)]
mod mutation_tests;
#[cfg(test)]
mod tests;

pub use integrity::{allowed, proof, Proof};

use super::eventlog::event_type::*;
use super::eventlog::{Event, EventData, Guid, HashAlg, Ipl};
use std::collections::BTreeMap;

/// What the verified part of the log says about the boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootFacts {
    /// Secure boot was on: SecureBoot = 1 and a non-empty PK, measured in
    /// PCR 7 before the separator, every PCR 7 event allowed and proven.
    pub secure_boot: bool,
    /// PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION digests (authenticode hashes
    /// of shim, boot loader, kernel), lowercase hex, in boot order.
    pub boot_applications: Vec<String>,
    /// Every kernel command line PCRs 8 and 12 prove: grub's
    /// `kernel_cmdline` events and the arguments of its `linux` commands
    /// (grub's labels are not covered by the digest, so both count), and
    /// systemd-boot's UTF-16 command lines.
    pub kernel_cmdlines: Vec<String>,
    /// The quoted PCRs a replay-verified log covers: Ok when every event in
    /// the PCR is of a type the PCR may hold and proven by its digest, else
    /// why not. Empty without an event log.
    pub covered: BTreeMap<u32, Result<(), String>>,
}

/// Derives the facts from `events` (the output of `EventLog::verify` for the
/// `quoted` PCRs in `bank`).
pub fn extract(
    events: &[&Event],
    bank: HashAlg,
    quoted: impl IntoIterator<Item = u32>,
) -> BootFacts {
    let mut facts = BootFacts {
        covered: quoted.into_iter().map(|p| (p, Ok(()))).collect(),
        ..Default::default()
    };
    for e in events {
        let problem = match (allowed(e.pcr, e.event_type), proof(e, bank)) {
            (false, _) => Some("is of a type the PCR may not hold"),
            (true, Proof::Unproven) => Some("has a digest that does not prove its data"),
            (true, _) => None,
        };
        if let (Some(why), Some(slot @ Ok(()))) = (problem, facts.covered.get_mut(&e.pcr)) {
            let ty = e
                .type_name()
                .map_or(format!("{:#x}", e.event_type), str::to_string);
            *slot = Err(format!("PCR {}: event {} ({ty}) {why}", e.pcr, e.index));
        }
    }
    facts.secure_boot = secure_boot(events, bank) && facts.covered.get(&7) == Some(&Ok(()));
    for e in events {
        match (e.pcr, e.event_type) {
            (4, EV_EFI_BOOT_SERVICES_APPLICATION) => {
                if let Some(d) = e.digest(bank) {
                    facts.boot_applications.push(hex::encode(d));
                }
            }
            (8 | 12, EV_IPL) if proof(e, bank) == Proof::Data => {
                if let Ok(EventData::Ipl(ipl)) = e.decode() {
                    facts.kernel_cmdlines.extend(cmdline(e.pcr, ipl));
                }
            }
            _ => {}
        }
    }
    facts
}

/// The kernel command line a proven EV_IPL in PCR 8 or 12 carries, if any.
fn cmdline(pcr: u32, ipl: Ipl) -> Option<String> {
    match (pcr, ipl) {
        (8, Ipl::GrubKernelCmdline(c)) => Some(c),
        // `linux PATH ARGS` is the command line too, whatever label it has.
        (8, Ipl::GrubCommand(c)) => {
            let (cmd, rest) = c.split_once(' ')?;
            matches!(cmd, "linux" | "linuxefi" | "linux16").then(|| rest.trim_start().to_string())
        }
        // Not unlabelled text: the event type is not measured, so any text event in these
        // PCRs could be relabelled EV_IPL.
        (8 | 12, Ipl::SdBootCmdline(c)) => Some(c.trim().to_string()),
        _ => None,
    }
}

/// SecureBoot = 1 and a non-empty PK before the one PCR 7 separator, from
/// proven events only, and neither debug mode nor DMA protection off.
fn secure_boot(events: &[&Event], bank: HashAlg) -> bool {
    let (mut sb_var, mut pk_set, mut separator, mut suspect) = (None, false, false, false);
    for e in events.iter().filter(|e| e.pcr == 7) {
        let data = match (proof(e, bank), e.decode()) {
            (Proof::Data, Ok(data)) => data,
            _ => {
                suspect = true;
                continue;
            }
        };
        match (e.event_type, data) {
            (EV_SEPARATOR, EventData::Separator(v)) => {
                suspect |= v != 0 || separator;
                separator = true;
            }
            (EV_EFI_VARIABLE_DRIVER_CONFIG, EventData::Variable(v)) if !separator => {
                if v.is(Guid::EFI_GLOBAL_VARIABLE, "SecureBoot") {
                    sb_var = Some(v.data == [1]);
                } else if v.is(Guid::EFI_GLOBAL_VARIABLE, "PK") {
                    pk_set = !v.data.is_empty();
                }
            }
            (EV_EFI_ACTION, EventData::Action(a))
                if a.contains("Debug") || a.contains("DMA Protection Disabled") =>
            {
                suspect = true;
            }
            (EV_EFI_VARIABLE_DRIVER_CONFIG | EV_EFI_VARIABLE_AUTHORITY | EV_EFI_ACTION, _) => {}
            _ => suspect = true,
        }
    }
    sb_var == Some(true) && pk_set && separator && !suspect
}
