//! Framing: the first event is always a TCG 1.2 `TCG_PCR_EVENT`; if it is the
//! Spec ID event ("Spec ID Event03"), the rest are `TCG_PCR_EVENT2`.

use super::events::{event_type, SpecId, SPEC_ID_SIGNATURE, STARTUP_LOCALITY_SIGNATURE};
use super::{
    Event, EventLog, EventLogError, Format, HashAlg, MAX_EVENTS, MAX_EVENT_DATA, MAX_LOG_BYTES,
    PCR_COUNT,
};

/// Bounds-checked little-endian reader. Errors carry the offset of the
/// field that did not fit.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], EventLogError> {
        let truncated = EventLogError::Truncated { offset: self.pos };
        let end = self.pos.checked_add(n).ok_or(truncated.clone())?;
        let out = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EventLogError> {
        let offset = self.pos;
        let bytes = self.take(N)?;
        bytes
            .try_into()
            .map_err(|_| EventLogError::Truncated { offset })
    }

    pub(super) fn u8(&mut self) -> Result<u8, EventLogError> {
        let [b] = self.array()?;
        Ok(b)
    }

    pub(super) fn u16(&mut self) -> Result<u16, EventLogError> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn u32(&mut self) -> Result<u32, EventLogError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, EventLogError> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Parses a whole log. Any framing error fails the whole log: a log with a
/// hole cannot be replayed.
pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    if bytes.len() > MAX_LOG_BYTES {
        return Err(EventLogError::TooLarge);
    }
    if bytes.is_empty() {
        return Err(EventLogError::Empty);
    }
    let mut r = Reader::new(bytes);
    let first = legacy_event(&mut r, 0)?;
    // A first EV_NO_ACTION that is not a Spec ID (e.g. StartupLocality)
    // means a TCG 1.2 log (go-attestation short_no_action_eventlog).
    let (format, banks) = if first.event_type == event_type::EV_NO_ACTION
        && first.data.starts_with(SPEC_ID_SIGNATURE)
    {
        let spec = SpecId::decode(&first.data)?;
        if first.pcr != 0 {
            return Err(EventLogError::BadSpecId("not in PCR 0"));
        }
        (Format::CryptoAgile, spec.algorithms)
    } else {
        (Format::Legacy, vec![HashAlg::Sha1])
    };
    let mut events = vec![first];
    while r.remaining() > 0 {
        let index = events.len();
        if index >= MAX_EVENTS {
            return Err(EventLogError::TooManyEvents);
        }
        let event = match format {
            Format::Legacy => legacy_event(&mut r, index)?,
            Format::CryptoAgile => agile_event(&mut r, index, &banks)?,
        };
        events.push(event);
    }
    // A bank some extended event has no digest for cannot be replayed
    // (tpm2-tools' event-uefiaction.bin lists 4 banks, carries 2).
    let mut banks = banks;
    banks.retain(|b| {
        events
            .iter()
            .all(|e| e.event_type == event_type::EV_NO_ACTION || e.digest(*b).is_some())
    });
    let startup_locality = startup_locality(&events)?;
    Ok(EventLog {
        format,
        banks,
        events,
        startup_locality,
    })
}

/// `TCG_PCR_EVENT`: pcr, type, SHA-1 digest, size, data.
fn legacy_event(r: &mut Reader<'_>, index: usize) -> Result<Event, EventLogError> {
    let (pcr, event_type) = header(r, index)?;
    let digest = r.take(HashAlg::Sha1.size())?.to_vec();
    let data = event_data(r, index)?;
    Ok(Event {
        index,
        pcr,
        event_type,
        digests: vec![(HashAlg::Sha1, digest)],
        data,
    })
}

/// `TCG_PCR_EVENT2`: pcr, type, count, {alg, digest}[count], size, data.
fn agile_event(
    r: &mut Reader<'_>,
    index: usize,
    banks: &[HashAlg],
) -> Result<Event, EventLogError> {
    let (pcr, event_type) = header(r, index)?;
    let count = r.u32()?;
    // Bounded by the Spec ID list (at most 8 entries), so the allocation is too.
    if usize::try_from(count).map_or(true, |c| c > banks.len()) {
        return Err(bad(index, "more digests than the Spec ID lists"));
    }
    let mut digests: Vec<(HashAlg, Vec<u8>)> = Vec::with_capacity(banks.len());
    for _ in 0..count {
        let id = r.u16()?;
        let alg = HashAlg::from_id(id)
            .filter(|a| banks.contains(a))
            .ok_or(EventLogError::UnknownAlgorithm(id))?;
        if digests.iter().any(|(a, _)| *a == alg) {
            return Err(bad(index, "two digests of the same algorithm"));
        }
        digests.push((alg, r.take(alg.size())?.to_vec()));
    }
    let data = event_data(r, index)?;
    Ok(Event {
        index,
        pcr,
        event_type,
        digests,
        data,
    })
}

fn header(r: &mut Reader<'_>, index: usize) -> Result<(u32, u32), EventLogError> {
    let pcr = r.u32()?;
    let event_type = r.u32()?;
    // EV_NO_ACTION is never extended, so its PCR field is informational.
    if pcr >= PCR_COUNT && event_type != event_type::EV_NO_ACTION {
        return Err(bad(index, "PCR index out of range"));
    }
    Ok((pcr, event_type))
}

fn event_data(r: &mut Reader<'_>, index: usize) -> Result<Vec<u8>, EventLogError> {
    let size = r.u32()?;
    let n = usize::try_from(size)
        .ok()
        .filter(|n| *n <= MAX_EVENT_DATA)
        .ok_or(EventLogError::EventTooLarge {
            index,
            size: size.into(),
        })?;
    // take() checks n against the bytes left before anything is copied.
    Ok(r.take(n)?.to_vec())
}

/// The locality TPM2_Startup came from, which PCR 0 starts at (PFP 10.4.5.3).
fn startup_locality(events: &[Event]) -> Result<Option<u8>, EventLogError> {
    let mut found = None;
    for e in events.iter().filter(|e| {
        e.event_type == event_type::EV_NO_ACTION && e.data.starts_with(STARTUP_LOCALITY_SIGNATURE)
    }) {
        let Some(&[locality]) = e.data.get(STARTUP_LOCALITY_SIGNATURE.len()..) else {
            return Err(bad(e.index, "StartupLocality event is not 17 bytes"));
        };
        if e.pcr != 0 || locality > 4 {
            return Err(bad(e.index, "invalid StartupLocality event"));
        }
        if found.replace(locality).is_some() {
            return Err(bad(e.index, "second StartupLocality event"));
        }
    }
    Ok(found)
}

fn bad(index: usize, reason: &'static str) -> EventLogError {
    EventLogError::BadEvent { index, reason }
}
