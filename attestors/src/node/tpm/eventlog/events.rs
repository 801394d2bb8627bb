//! Typed decoding of the event data boot policy reads. Decoding never fails
//! the log: a malformed payload is an error for that event only.

use super::parse::Reader;
use super::{Event, EventLogError, Guid, HashAlg};

/// Defines `event_type::NAME` constants and their names in one list.
macro_rules! event_types {
    ($($name:ident = $value:literal,)*) => {
        /// Event type values (TCG PC Client PFP, section 10.4.1).
        pub mod event_type {
            $(pub const $name: u32 = $value;)*
        }
        const NAMES: &[(u32, &str)] = &[$(($value, stringify!($name)),)*];
    };
}

event_types! {
    EV_PREBOOT_CERT = 0x0,
    EV_POST_CODE = 0x1,
    EV_UNUSED = 0x2,
    EV_NO_ACTION = 0x3,
    EV_SEPARATOR = 0x4,
    EV_ACTION = 0x5,
    EV_EVENT_TAG = 0x6,
    EV_S_CRTM_CONTENTS = 0x7,
    EV_S_CRTM_VERSION = 0x8,
    EV_CPU_MICROCODE = 0x9,
    EV_PLATFORM_CONFIG_FLAGS = 0xa,
    EV_TABLE_OF_DEVICES = 0xb,
    EV_COMPACT_HASH = 0xc,
    EV_IPL = 0xd,
    EV_IPL_PARTITION_DATA = 0xe,
    EV_NONHOST_CODE = 0xf,
    EV_NONHOST_CONFIG = 0x10,
    EV_NONHOST_INFO = 0x11,
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x12,
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x8000_0001,
    EV_EFI_VARIABLE_BOOT = 0x8000_0002,
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x8000_0003,
    EV_EFI_BOOT_SERVICES_DRIVER = 0x8000_0004,
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x8000_0005,
    EV_EFI_GPT_EVENT = 0x8000_0006,
    EV_EFI_ACTION = 0x8000_0007,
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x8000_0008,
    EV_EFI_HANDOFF_TABLES = 0x8000_0009,
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000_000a,
    EV_EFI_HANDOFF_TABLES2 = 0x8000_000b,
    EV_EFI_VARIABLE_BOOT2 = 0x8000_000c,
    EV_EFI_HCRTM_EVENT = 0x8000_0010,
    EV_EFI_VARIABLE_AUTHORITY = 0x8000_00e0,
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x8000_00e1,
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x8000_00e2,
}
use event_type::*;

pub fn event_type_name(t: u32) -> Option<&'static str> {
    NAMES.iter().find(|(v, _)| *v == t).map(|(_, n)| *n)
}

pub(super) const SPEC_ID_SIGNATURE: &[u8] = b"Spec ID Event03\0";
pub(super) const STARTUP_LOCALITY_SIGNATURE: &[u8] = b"StartupLocality\0";

/// `TCG_EfiSpecIDEvent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub spec_version: (u8, u8),
    pub spec_errata: u8,
    /// Declared UINTN size (1 = 32-bit, 2 = 64-bit); firmware gets it wrong,
    /// so image-load events are parsed by length instead.
    pub uintn_size: u8,
    pub algorithms: Vec<HashAlg>,
    pub vendor_info: Vec<u8>,
}

impl SpecId {
    pub(super) fn decode(data: &[u8]) -> Result<SpecId, EventLogError> {
        let trunc = |_| EventLogError::BadSpecId("truncated");
        let mut r = Reader::new(data);
        if r.take(SPEC_ID_SIGNATURE.len()).map_err(trunc)? != SPEC_ID_SIGNATURE {
            return Err(EventLogError::BadSpecId("bad signature"));
        }
        let platform_class = r.u32().map_err(trunc)?;
        let minor = r.u8().map_err(trunc)?;
        let major = r.u8().map_err(trunc)?;
        let spec_errata = r.u8().map_err(trunc)?;
        let uintn_size = r.u8().map_err(trunc)?;
        let n = r.u32().map_err(trunc)?;
        if n == 0 || n as usize > HashAlg::ALL.len() {
            return Err(EventLogError::BadSpecId("bad number of algorithms"));
        }
        let mut algorithms = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = r.u16().map_err(trunc)?;
            let size = r.u16().map_err(trunc)?;
            let alg = HashAlg::from_id(id).ok_or(EventLogError::UnknownAlgorithm(id))?;
            if usize::from(size) != alg.size() {
                return Err(EventLogError::BadSpecId("wrong digest size"));
            }
            if algorithms.contains(&alg) {
                return Err(EventLogError::BadSpecId("algorithm listed twice"));
            }
            algorithms.push(alg);
        }
        let vendor_size = r.u8().map_err(trunc)?;
        let vendor_info = r.take(vendor_size.into()).map_err(trunc)?.to_vec();
        if r.remaining() != 0 {
            return Err(EventLogError::BadSpecId("trailing bytes"));
        }
        Ok(SpecId {
            platform_class,
            spec_version: (major, minor),
            spec_errata,
            uintn_size,
            algorithms,
            vendor_info,
        })
    }
}

/// `UEFI_VARIABLE_DATA`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfiVariable<'a> {
    pub guid: Guid,
    pub name: String,
    pub data: &'a [u8],
}

impl EfiVariable<'_> {
    pub fn is(&self, guid: Guid, name: &str) -> bool {
        self.guid == guid && self.name == name
    }
}

/// `UEFI_IMAGE_LOAD_EVENT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLoad<'a> {
    pub location: u64,
    pub length: u64,
    pub link_time_address: u64,
    pub device_path: &'a [u8],
}

impl ImageLoad<'_> {
    /// The last file-path node of the device path (`\EFI\BOOT\BOOTX64.EFI`).
    pub fn file_path(&self) -> Option<String> {
        let mut rest = self.device_path;
        let mut path = None;
        while let [kind, sub, l0, l1, ..] = *rest {
            let len = usize::from(u16::from_le_bytes([l0, l1]));
            let node = rest.get(4..len.max(4))?;
            if kind == 0x7f || len < 4 {
                break; // end of device path, or a malformed node
            }
            if (kind, sub) == (0x04, 0x04) {
                path = Some(utf16z(node)?);
            }
            rest = rest.get(len..)?;
        }
        path
    }
}

/// EV_IPL payloads, by who wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ipl {
    /// grub, PCR 8: `grub_cmd: ...` (grub < 2.06: `grub_cmd ...`).
    GrubCommand(String),
    /// grub, PCR 8: `kernel_cmdline: ...` (older: `grub_kernel_cmdline ...`).
    GrubKernelCmdline(String),
    /// systemd-boot/stub UTF-16LE text: the kernel command line in PCR 12
    /// (PCR 8 before systemd 251), verbatim including whitespace.
    SdBootCmdline(String),
    /// Other text: grub file names (PCR 9), shim variable names (PCR 14).
    Text(String),
    /// Not text, e.g. a legacy-BIOS MBR.
    Binary,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventData<'a> {
    SpecId(SpecId),
    StartupLocality(u8),
    /// Any other EV_NO_ACTION (SP800-155 reference manifests, ...).
    NoAction,
    /// 0 normally, 1 or 0xffffffff on a firmware error ("WBCL" from Windows).
    Separator(u32),
    /// EV_EFI_ACTION / EV_ACTION string.
    Action(String),
    /// EV_EFI_VARIABLE_DRIVER_CONFIG, _BOOT, _BOOT2, _AUTHORITY.
    Variable(EfiVariable<'a>),
    /// EV_EFI_BOOT_SERVICES_APPLICATION / _DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER.
    ImageLoad(ImageLoad<'a>),
    Ipl(Ipl),
    /// EV_EFI_HCRTM_EVENT: PCR 0 starts at 4.
    HCrtm,
    /// Types without a decoder here.
    Other,
}

impl Event {
    pub fn decode(&self) -> Result<EventData<'_>, EventLogError> {
        let bad = |reason| EventLogError::BadEventData {
            index: self.index,
            reason,
        };
        let d = self.data.as_slice();
        Ok(match self.event_type {
            EV_NO_ACTION if d.starts_with(SPEC_ID_SIGNATURE) => {
                EventData::SpecId(SpecId::decode(d).map_err(|_| bad("malformed Spec ID event"))?)
            }
            EV_NO_ACTION if d.starts_with(STARTUP_LOCALITY_SIGNATURE) => match d.get(16..) {
                Some([l]) => EventData::StartupLocality(*l),
                _ => return Err(bad("StartupLocality event is not 17 bytes")),
            },
            EV_NO_ACTION => EventData::NoAction,
            EV_SEPARATOR => match *d {
                [a, b, c, e] => EventData::Separator(u32::from_le_bytes([a, b, c, e])),
                _ => return Err(bad("separator is not 4 bytes")),
            },
            EV_EFI_ACTION | EV_ACTION => EventData::Action(
                String::from_utf8(d.to_vec()).map_err(|_| bad("action is not text"))?,
            ),
            EV_EFI_VARIABLE_DRIVER_CONFIG
            | EV_EFI_VARIABLE_BOOT
            | EV_EFI_VARIABLE_BOOT2
            | EV_EFI_VARIABLE_AUTHORITY => {
                EventData::Variable(variable(d).ok_or(bad("malformed UEFI_VARIABLE_DATA"))?)
            }
            EV_EFI_BOOT_SERVICES_APPLICATION
            | EV_EFI_BOOT_SERVICES_DRIVER
            | EV_EFI_RUNTIME_SERVICES_DRIVER => {
                EventData::ImageLoad(image_load(d).ok_or(bad("malformed UEFI_IMAGE_LOAD_EVENT"))?)
            }
            EV_IPL => EventData::Ipl(ipl(self.pcr, d)),
            EV_EFI_HCRTM_EVENT => EventData::HCrtm,
            _ => EventData::Other,
        })
    }
}

fn variable(d: &[u8]) -> Option<EfiVariable<'_>> {
    let mut r = Reader::new(d);
    let guid = Guid(r.take(16).ok()?.try_into().ok()?);
    let name_chars = r.u64().ok()?;
    let data_len = r.u64().ok()?;
    // take() checks each length against what is left before slicing.
    let name = r
        .take(usize::try_from(name_chars.checked_mul(2)?).ok()?)
        .ok()?;
    // Bytes after VariableData are ignored: shim's authority events carry
    // six (struct padding); digests, where checked, cover the whole data.
    let data = r.take(usize::try_from(data_len).ok()?).ok()?;
    Some(EfiVariable {
        guid,
        name: String::from_utf16(&utf16_units(name)).ok()?,
        data,
    })
}

/// UINTN fields are 8 bytes on x64 whatever the Spec ID says (Dell
/// uintnSize=1 logs), so the width is chosen by length: an exact fit first,
/// then one leaving trailing bytes (shim and grub pad with zeros).
fn image_load(d: &[u8]) -> Option<ImageLoad<'_>> {
    let exact = |trailing: usize| trailing == 0;
    let padded = |_: usize| true;
    for fits in [&exact as &dyn Fn(usize) -> bool, &padded] {
        for uintn in [8, 4] {
            if let Some(image) = image_load_with(d, uintn, fits) {
                return Some(image);
            }
        }
    }
    None
}

fn image_load_with<'a>(
    d: &'a [u8],
    uintn: usize,
    fits: &dyn Fn(usize) -> bool,
) -> Option<ImageLoad<'a>> {
    let mut r = Reader::new(d);
    let location = r.u64().ok()?;
    let mut uint = || match uintn {
        8 => r.u64().ok(),
        _ => r.u32().ok().map(u64::from),
    };
    let (length, link_time_address, dp_len) = (uint()?, uint()?, uint()?);
    let dp_len = usize::try_from(dp_len).ok()?;
    let device_path = r.take(dp_len).ok()?;
    fits(r.remaining()).then_some(ImageLoad {
        location,
        length,
        link_time_address,
        device_path,
    })
}

fn ipl(pcr: u32, d: &[u8]) -> Ipl {
    // UTF-16LE if the second byte is 0: ASCII text never has a NUL there.
    if d.len() >= 2 && d.get(1) == Some(&0) {
        if let Some(s) = utf16z(d) {
            return match pcr {
                8 | 12 => Ipl::SdBootCmdline(s),
                _ => Ipl::Text(s),
            };
        }
    }
    let Ok(s) = std::str::from_utf8(d) else {
        return Ipl::Binary;
    };
    let s = s.trim_end_matches('\0');
    let prefixed = |prefixes: &[&str]| prefixes.iter().find_map(|p| s.strip_prefix(p));
    if pcr == 8 {
        if let Some(c) = prefixed(&["grub_cmd: ", "grub_cmd "]) {
            return Ipl::GrubCommand(c.to_string());
        }
        if let Some(c) = prefixed(&["kernel_cmdline: ", "grub_kernel_cmdline "]) {
            return Ipl::GrubKernelCmdline(c.to_string());
        }
    }
    if s.contains('\0') {
        return Ipl::Binary;
    }
    Ipl::Text(s.to_string())
}

/// UTF-16LE without its trailing NULs. An odd final NUL byte is dropped:
/// systemd-boot before 251 measured one (Arch log, PCR 8).
fn utf16z(d: &[u8]) -> Option<String> {
    let d = match d {
        [rest @ .., 0] if d.len() % 2 == 1 => rest,
        _ if d.len() % 2 == 1 => return None,
        _ => d,
    };
    let s = String::from_utf16(&utf16_units(d)).ok()?;
    Some(s.trim_end_matches('\0').to_string())
}

fn utf16_units(d: &[u8]) -> Vec<u16> {
    d.chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(u16::from_le_bytes)
        .collect()
}
