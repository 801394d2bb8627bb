//! Facts about the boot, taken only from replay-verified events, and only
//! where the event's digest also proves its data (the event type and data of
//! a log are attacker-controlled even when the replay succeeds).

use super::eventlog::event_type::*;
use super::eventlog::{digest, Event, EventData, Guid, HashAlg, Ipl};

/// What the verified part of the log says about the boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootFacts {
    /// Secure boot was on: SecureBoot = 1 and a non-empty PK, measured in
    /// PCR 7 before the separator, with digests over their data.
    pub secure_boot: bool,
    /// PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION digests (authenticode hashes
    /// of shim, boot loader, kernel), lowercase hex, in boot order.
    pub boot_applications: Vec<String>,
    /// Kernel command lines whose digest matches their text.
    pub kernel_cmdlines: Vec<String>,
}

fn proves(e: &Event, bank: HashAlg, data: &[u8]) -> bool {
    matches!((e.digest(bank), digest(bank, data)), (Some(a), Some(b)) if a == b.as_slice())
}

/// Derives the facts from `events` (the output of `EventLog::verify`).
pub fn extract(events: &[&Event], bank: HashAlg) -> BootFacts {
    let mut facts = BootFacts::default();
    let (mut sb_var, mut pk_set, mut pcr7_separator, mut pcr7_suspect) =
        (None, false, false, false);
    for e in events {
        let Ok(data) = e.decode() else {
            if e.pcr == 7 {
                pcr7_suspect = true;
            }
            continue;
        };
        match (e.pcr, e.event_type, data) {
            (7, EV_SEPARATOR, EventData::Separator(v)) => {
                pcr7_suspect |= v != 0 || pcr7_separator || !proves(e, bank, &e.data);
                pcr7_separator = true;
            }
            (7, EV_EFI_VARIABLE_DRIVER_CONFIG, EventData::Variable(v)) if !pcr7_separator => {
                if !proves(e, bank, &e.data) {
                    pcr7_suspect = true;
                } else if v.is(Guid::EFI_GLOBAL_VARIABLE, "SecureBoot") {
                    sb_var = Some(v.data == [1]);
                } else if v.is(Guid::EFI_GLOBAL_VARIABLE, "PK") {
                    pk_set = !v.data.is_empty();
                }
            }
            (7, EV_EFI_ACTION, EventData::Action(a))
                if a.contains("Debug") || a.contains("DMA Protection Disabled") =>
            {
                pcr7_suspect = true;
            }
            (
                7,
                EV_EFI_VARIABLE_DRIVER_CONFIG
                | EV_EFI_VARIABLE_AUTHORITY
                | EV_EFI_ACTION
                | EV_SEPARATOR,
                _,
            ) => {}
            (7, _, _) => pcr7_suspect = true,
            (4, EV_EFI_BOOT_SERVICES_APPLICATION, _) => {
                if let Some(d) = e.digest(bank) {
                    facts.boot_applications.push(hex::encode(d));
                }
            }
            (8, EV_IPL, EventData::Ipl(Ipl::GrubKernelCmdline(c))) => {
                let with_nul = [c.as_bytes(), b"\0"].concat();
                if proves(e, bank, c.as_bytes()) || proves(e, bank, &with_nul) {
                    facts.kernel_cmdlines.push(c);
                }
            }
            (8 | 12, EV_IPL, EventData::Ipl(Ipl::SdBootCmdline(c))) if proves(e, bank, &e.data) => {
                facts.kernel_cmdlines.push(c.trim().to_string());
            }
            _ => {}
        }
    }
    facts.secure_boot = sb_var == Some(true) && pk_set && pcr7_separator && !pcr7_suspect;
    facts
}
