//! Which event types the TCG PC Client Platform Firmware Profile lets into
//! which PCR, and whether an event's digest proves its data (TPM.md §2.2).
//!
//! The replay proves only the digests: event type and data are the
//! attacker's to choose. An event is worth something to policy only when
//! its type is one the PCR may hold and its digest covers what policy reads.

use super::super::eventlog::event_type::*;
use super::super::eventlog::{digest, Event, EventData, HashAlg, Ipl};

/// What an event's digest proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The digest is a hash of the event data (in a form real firmware
    /// uses): the data is as good as the replay.
    Data,
    /// EV_EFI_BOOT_SERVICES_APPLICATION and drivers: the digest is the
    /// Authenticode hash of the image, which is not in the log. The digest
    /// is the only fact; the data (device path) proves nothing.
    ImageDigest,
    /// Nothing in the log proves the data.
    Unproven,
}

/// Whether the PFP allows events of `event_type` in `pcr`. PCRs 8–15 belong
/// to the OS loader and the OS (grub, systemd-boot, shim, Windows), which
/// measure EV_IPL and tagged events there.
pub fn allowed(pcr: u32, event_type: u32) -> bool {
    let types: &[u32] = match pcr {
        0 => &[
            EV_POST_CODE,
            EV_S_CRTM_CONTENTS,
            EV_S_CRTM_VERSION,
            EV_EFI_PLATFORM_FIRMWARE_BLOB,
            EV_EFI_PLATFORM_FIRMWARE_BLOB2,
            EV_EFI_HCRTM_EVENT,
            EV_NONHOST_CODE,
            EV_NONHOST_CONFIG,
            EV_NONHOST_INFO,
            EV_EFI_SPDM_FIRMWARE_BLOB,
            EV_EVENT_TAG,
            EV_SEPARATOR,
        ],
        1 => &[
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            EV_EFI_VARIABLE_BOOT,
            EV_EFI_VARIABLE_BOOT2,
            EV_EFI_HANDOFF_TABLES,
            EV_EFI_HANDOFF_TABLES2,
            EV_CPU_MICROCODE,
            EV_PLATFORM_CONFIG_FLAGS,
            EV_TABLE_OF_DEVICES,
            EV_NONHOST_CONFIG,
            EV_NONHOST_INFO,
            EV_EFI_ACTION,
            EV_EVENT_TAG,
            EV_SEPARATOR,
        ],
        2 => &[
            EV_EFI_BOOT_SERVICES_DRIVER,
            EV_EFI_RUNTIME_SERVICES_DRIVER,
            EV_EFI_PLATFORM_FIRMWARE_BLOB,
            EV_EFI_PLATFORM_FIRMWARE_BLOB2,
            EV_EFI_SPDM_FIRMWARE_BLOB,
            EV_NONHOST_CODE,
            EV_NONHOST_INFO,
            EV_POST_CODE,
            EV_EVENT_TAG,
            EV_SEPARATOR,
        ],
        3 => &[
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            EV_EFI_SPDM_FIRMWARE_CONFIG,
            EV_NONHOST_CONFIG,
            EV_NONHOST_INFO,
            EV_EVENT_TAG,
            EV_SEPARATOR,
        ],
        // Boot applications, the boot-attempt actions, legacy IPL code.
        4 => &[
            EV_EFI_BOOT_SERVICES_APPLICATION,
            EV_EFI_ACTION,
            EV_ACTION,
            EV_IPL,
            EV_OMIT_BOOT_DEVICE_EVENTS,
            EV_SEPARATOR,
        ],
        5 => &[
            EV_EFI_GPT_EVENT,
            EV_EFI_ACTION,
            EV_ACTION,
            EV_IPL_PARTITION_DATA,
            EV_EFI_VARIABLE_BOOT,
            EV_EVENT_TAG,
            EV_SEPARATOR,
        ],
        6 => &[EV_COMPACT_HASH, EV_EFI_ACTION, EV_EVENT_TAG, EV_SEPARATOR],
        // Secure boot policy and the authorities that verified images.
        7 => &[
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            EV_EFI_VARIABLE_AUTHORITY,
            EV_EFI_ACTION,
            EV_SEPARATOR,
        ],
        8..=15 => &[EV_IPL, EV_EVENT_TAG, EV_COMPACT_HASH, EV_SEPARATOR],
        _ => &[],
    };
    types.contains(&event_type)
}

/// What `e`'s digest in `bank` proves about it.
pub fn proof(e: &Event, bank: HashAlg) -> Proof {
    if matches!(
        e.event_type,
        EV_EFI_BOOT_SERVICES_APPLICATION
            | EV_EFI_BOOT_SERVICES_DRIVER
            | EV_EFI_RUNTIME_SERVICES_DRIVER
    ) {
        return Proof::ImageDigest;
    }
    let Some(want) = e.digest(bank) else {
        return Proof::Unproven;
    };
    let hashes = |data: &[u8]| digest(bank, data).is_some_and(|d| d == want);
    if hashes(&e.data) {
        return Proof::Data;
    }
    let proven = match (e.event_type, e.decode()) {
        // shim (go-attestation #157) and GCE firmware hash all but the last
        // byte; the variable itself must lie inside what is hashed.
        (EV_EFI_VARIABLE_AUTHORITY, Ok(EventData::Variable(v))) => {
            let len = 32 + 2 * v.name.encode_utf16().count() + v.data.len();
            let head = e.data.len().checked_sub(1);
            head.is_some_and(|h| len <= h && hashes(e.data.get(..h).unwrap_or_default()))
        }
        // grub hashes the text after its "grub_cmd: "/"kernel_cmdline: "
        // label, with or without its NUL (old grub).
        (EV_IPL, Ok(EventData::Ipl(Ipl::GrubCommand(t) | Ipl::GrubKernelCmdline(t)))) => {
            hashes(t.as_bytes()) || hashes(&[t.as_bytes(), b"\0"].concat())
        }
        // systemd-boot < 251 hashed the UTF-16 NUL it logged one byte of.
        (EV_IPL, Ok(EventData::Ipl(Ipl::SdBootCmdline(_)))) if e.data.len() % 2 == 1 => {
            hashes(&[e.data.as_slice(), b"\0"].concat())
        }
        _ => false,
    };
    match proven {
        true => Proof::Data,
        false => Proof::Unproven,
    }
}
