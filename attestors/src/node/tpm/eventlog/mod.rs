//! The TCG PC Client measured-boot event log
//! (`/sys/kernel/security/tpm0/binary_bios_measurements`): framing (legacy
//! TCG 1.2 SHA-1 and crypto-agile), typed decoding of the events boot policy
//! reads, and replay against quoted PCR values.
//!
//! The log is untrusted: every length is checked against the bytes left
//! before anything is allocated, and the limits below cap the work. Event
//! types and data are attacker-controlled unless covered by a replay that
//! matched a quote, so policy must only read what [`EventLog::verify`] returns.

mod events;
mod parse;
mod replay;
#[cfg(test)]
mod tests;

pub use events::{event_type, event_type_name, EfiVariable, EventData, ImageLoad, Ipl, SpecId};
pub use parse::parse;
pub use replay::digest;

/// Largest log accepted (real logs are 10–100 KiB).
pub const MAX_LOG_BYTES: usize = 16 << 20;
/// Most events accepted, the Spec ID event included.
pub const MAX_EVENTS: usize = 1 << 16;
/// Largest event data accepted.
pub const MAX_EVENT_DATA: usize = 1 << 20;
/// PCRs a PC Client TPM has.
pub const PCR_COUNT: u32 = 24;

/// A digest algorithm a log can carry (TPM_ALG_ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    /// Parsed but never replayed (no implementation here).
    Sm3_256,
    Sha3_256,
    Sha3_384,
    Sha3_512,
}

impl HashAlg {
    const ALL: [(HashAlg, u16, usize, &'static str); 8] = [
        (HashAlg::Sha1, 0x0004, 20, "sha1"),
        (HashAlg::Sha256, 0x000b, 32, "sha256"),
        (HashAlg::Sha384, 0x000c, 48, "sha384"),
        (HashAlg::Sha512, 0x000d, 64, "sha512"),
        (HashAlg::Sm3_256, 0x0012, 32, "sm3_256"),
        (HashAlg::Sha3_256, 0x0027, 32, "sha3_256"),
        (HashAlg::Sha3_384, 0x0028, 48, "sha3_384"),
        (HashAlg::Sha3_512, 0x0029, 64, "sha3_512"),
    ];

    fn row(self) -> (HashAlg, u16, usize, &'static str) {
        Self::ALL
            .into_iter()
            .find(|r| r.0 == self)
            .unwrap_or((self, 0, 0, "?"))
    }

    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.1 == id).map(|r| r.0)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.3 == name).map(|r| r.0)
    }

    pub fn id(self) -> u16 {
        self.row().1
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        self.row().2
    }

    /// The tpm2-tools spelling: `sha1`, `sha256`, ...
    pub fn name(self) -> &'static str {
        self.row().3
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An EFI GUID, stored as on the wire (first three fields little endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const fn new(a: u32, b: u16, c: u16, d: [u8; 8]) -> Self {
        let ([a0, a1, a2, a3], [b0, b1], [c0, c1]) =
            (a.to_le_bytes(), b.to_le_bytes(), c.to_le_bytes());
        let [d0, d1, d2, d3, d4, d5, d6, d7] = d;
        Guid([
            a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, d2, d3, d4, d5, d6, d7,
        ])
    }
    /// SecureBoot, PK, KEK, Boot####, BootOrder.
    pub const EFI_GLOBAL_VARIABLE: Guid = Guid::new(
        0x8be4df61,
        0x93ca,
        0x11d2,
        [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
    );
    /// db, dbx, dbt, dbr.
    pub const IMAGE_SECURITY_DATABASE: Guid = Guid::new(
        0xd719b2cb,
        0x3d3a,
        0x4596,
        [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
    );
    /// shim: MokList*, SbatLevel.
    pub const SHIM_LOCK: Guid = Guid::new(
        0x605dab50,
        0xe046,
        0x4300,
        [0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23],
    );
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, e @ ..] = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{}-{}",
            u32::from_le_bytes([a0, a1, a2, a3]),
            u16::from_le_bytes([b0, b1]),
            u16::from_le_bytes([c0, c1]),
            hex::encode([d0, d1]),
            hex::encode(e)
        )
    }
}

/// How the events after the first are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TCG 1.2 `TCG_PCR_EVENT`, SHA-1 only (also seen on TPM 2.0 machines).
    Legacy,
    /// `TCG_PCR_EVENT2` with the banks the Spec ID event lists.
    CryptoAgile,
}

/// One log entry, as framed; [`Event::decode`] interprets `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the log, 0 = first (the Spec ID event in crypto-agile logs).
    pub index: usize,
    pub pcr: u32,
    pub event_type: u32,
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Event {
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }

    pub fn type_name(&self) -> Option<&'static str> {
        event_type_name(self.event_type)
    }
}

/// A parsed log. Construct with [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    pub format: Format,
    /// Banks the log replays in: those the Spec ID event lists (SHA-1 for a
    /// legacy log) that every extended event has a digest for.
    pub banks: Vec<HashAlg>,
    pub events: Vec<Event>,
    /// From an EV_NO_ACTION "StartupLocality" event in PCR 0, if any.
    pub startup_locality: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    #[error("the event log is empty")]
    Empty,
    #[error("the event log is truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error("the event log is larger than {MAX_LOG_BYTES} bytes")]
    TooLarge,
    #[error("the event log has more than {MAX_EVENTS} events")]
    TooManyEvents,
    #[error("event {index}: {size} bytes of data (limit {MAX_EVENT_DATA})")]
    EventTooLarge { index: usize, size: u64 },
    #[error("unknown hash algorithm 0x{0:04x}")]
    UnknownAlgorithm(u16),
    #[error("malformed Spec ID event: {0}")]
    BadSpecId(&'static str),
    #[error("event {index}: {reason}")]
    BadEvent { index: usize, reason: &'static str },
    #[error("event {index}: malformed data: {reason}")]
    BadEventData { index: usize, reason: &'static str },
    #[error("event {index} has no {bank} digest")]
    MissingDigest { index: usize, bank: HashAlg },
    #[error("the {0} bank cannot be replayed here")]
    UnsupportedAlgorithm(HashAlg),
    #[error("the event log has no {0} bank")]
    NoSuchBank(HashAlg),
    #[error("PCR {0} does not exist")]
    PcrOutOfRange(u32),
    #[error("PCR {pcr} ({bank}) does not match the event log")]
    PcrMismatch { bank: HashAlg, pcr: u32 },
}
