//! `tessera-agent eventlog [PATH] [--json]`: the measured-boot event log as
//! the authority will parse it, and the PCR values it replays to. Run it on
//! a host to see why its boot policy fails before enrolling it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::{json, Map, Value};
use tessera_attestors::node::tpm::eventlog::{
    self, event_type, Event, EventData, EventLog, Format, Guid, HashAlg, Ipl, MAX_LOG_BYTES,
};

pub const DEFAULT_EVENTLOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

type Error = Box<dyn std::error::Error + Send + Sync>;
type Pcrs = BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>;

pub fn eventlog(path: Option<&Path>, json: bool) -> Result<(), Error> {
    let path = path.unwrap_or(Path::new(DEFAULT_EVENTLOG));
    let bytes = read_capped(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let log = eventlog::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let pcrs = log
        .replay()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let out = if json {
        serde_json::to_string_pretty(&report(&log, &pcrs))? + "\n"
    } else {
        render(&log, &pcrs)
    };
    // `| head` closes the pipe early; that is not an error.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// securityfs reports size 0, so read to EOF, but never more than the
/// parser accepts.
fn read_capped(path: &Path) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_LOG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_LOG_BYTES {
        return Err(format!("larger than {MAX_LOG_BYTES} bytes").into());
    }
    Ok(bytes)
}

fn report(log: &EventLog, pcrs: &Pcrs) -> Value {
    let events: Vec<Value> = log
        .events
        .iter()
        .map(|e| {
            let digests: Map<String, Value> = e
                .digests
                .iter()
                .map(|(alg, d)| (alg.name().to_string(), hex::encode(d).into()))
                .collect();
            json!({
                "index": e.index,
                "pcr": e.pcr,
                "type": e.event_type,
                "type_name": type_name(e),
                "digests": digests,
                "data_size": e.data.len(),
                "description": describe(e),
            })
        })
        .collect();
    let banks: Map<String, Value> = pcrs
        .iter()
        .map(|(bank, values)| {
            let values: Map<String, Value> = values
                .iter()
                .map(|(pcr, v)| (pcr.to_string(), hex::encode(v).into()))
                .collect();
            (bank.name().to_string(), values.into())
        })
        .collect();
    json!({
        "format": format_name(log.format),
        "banks": log.banks.iter().map(|b| b.name()).collect::<Vec<_>>(),
        "not_replayed": unreplayed(log, pcrs),
        "startup_locality": log.startup_locality,
        "events": events,
        "pcrs": banks,
    })
}

fn render(log: &EventLog, pcrs: &Pcrs) -> String {
    let banks: Vec<&str> = log.banks.iter().map(|b| b.name()).collect();
    let mut out = format!(
        "{} event log, banks {}, {} events{}\n",
        format_name(log.format),
        banks.join(" "),
        log.events.len(),
        log.startup_locality
            .map(|l| format!(", StartupLocality {l}"))
            .unwrap_or_default()
    );
    for e in &log.events {
        let digests: Vec<String> = e
            .digests
            .iter()
            .map(|(alg, d)| format!("{alg}:{}", hex::encode(d.get(..4).unwrap_or(d))))
            .collect();
        out += &format!(
            "{:>4} PCR{:<2} {:<33} {} {}\n",
            e.index,
            e.pcr,
            type_name(e),
            digests.join(" "),
            truncate(&describe(e), 100)
        );
    }
    out += "\nReplayed PCRs:\n";
    for (bank, values) in pcrs {
        out += &format!("{bank}:\n");
        for (pcr, v) in values {
            out += &format!("  {pcr:>2}: {}\n", hex::encode(v));
        }
    }
    for bank in unreplayed(log, pcrs) {
        out += &format!("{bank}: not replayed (algorithm not implemented)\n");
    }
    out
}

fn unreplayed(log: &EventLog, pcrs: &Pcrs) -> Vec<&'static str> {
    let missing = log.banks.iter().filter(|b| !pcrs.contains_key(b));
    missing.map(|b| b.name()).collect()
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Legacy => "legacy (TCG 1.2, SHA-1)",
        Format::CryptoAgile => "crypto-agile",
    }
}

fn type_name(e: &Event) -> String {
    e.type_name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("0x{:08x}", e.event_type))
}

/// One line about what the event says. Log content is attacker-controlled:
/// control characters are escaped so it cannot drive the terminal.
fn describe(e: &Event) -> String {
    let text = match e.decode() {
        Err(err) => format!("malformed: {err}"),
        Ok(EventData::SpecId(s)) => {
            let algs: Vec<&str> = s.algorithms.iter().map(|a| a.name()).collect();
            format!("Spec ID: {} (uintnSize {})", algs.join(" "), s.uintn_size)
        }
        Ok(EventData::StartupLocality(l)) => format!("StartupLocality {l}"),
        Ok(EventData::Separator(0)) => "separator".into(),
        Ok(EventData::Separator(1 | 0xffff_ffff)) => "separator (firmware error)".into(),
        Ok(EventData::Separator(v)) => format!("separator 0x{v:08x}"),
        Ok(EventData::Action(a)) => a,
        Ok(EventData::Variable(v)) => {
            let known = [Guid::EFI_GLOBAL_VARIABLE, Guid::IMAGE_SECURITY_DATABASE];
            let guid = match v.guid {
                g if known.contains(&g) => String::new(),
                Guid::SHIM_LOCK => "shim:".into(),
                g => format!("{g}:"),
            };
            let data = match v.data.len() {
                0 => "= (empty)".into(),
                1..=8 => format!("= {}", hex::encode(v.data)),
                n => format!("({n} bytes)"),
            };
            format!("{guid}{} {data}", v.name)
        }
        Ok(EventData::ImageLoad(i)) => i
            .file_path()
            .unwrap_or_else(|| format!("image at 0x{:x}, {} bytes", i.location, i.length)),
        Ok(EventData::Ipl(Ipl::GrubCommand(c))) => format!("grub: {c}"),
        Ok(EventData::Ipl(Ipl::GrubKernelCmdline(c))) => format!("kernel cmdline: {c}"),
        Ok(EventData::Ipl(Ipl::SdBootCmdline(c))) => format!("kernel cmdline: {c:?}"),
        Ok(EventData::Ipl(Ipl::Text(t))) => t,
        Ok(EventData::HCrtm) => "H-CRTM".into(),
        Ok(_) if e.event_type == event_type::EV_NO_ACTION => text(e.data.get(..16).unwrap_or(&[])),
        Ok(_) => text(&e.data),
    };
    let mut clean = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            clean.extend(c.escape_default());
        } else {
            clean.push(c);
        }
    }
    clean
}

/// Printable ASCII or ASCII-range UTF-16LE (S-CRTM versions), else a short
/// hex dump or the size.
fn text(d: &[u8]) -> String {
    let printable = |c: u32| (0x20..0x7f).contains(&c);
    let trimmed = d.strip_suffix(&[0]).unwrap_or(d);
    if !trimmed.is_empty() && trimmed.iter().all(|b| printable(u32::from(*b))) {
        return String::from_utf8_lossy(trimmed).into_owned();
    }
    let pairs = d.chunks_exact(2);
    let even = pairs.remainder().is_empty();
    let units: Vec<u16> = pairs
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(u16::from_le_bytes)
        .collect();
    let units = units.strip_suffix(&[0]).unwrap_or(&units);
    if even && !units.is_empty() && units.iter().all(|u| printable(u32::from(*u))) {
        return String::from_utf16_lossy(units);
    }
    match d.len() {
        0 => String::new(),
        1..=16 => hex::encode(d),
        n => format!("({n} bytes)"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", s.get(..at).unwrap_or(s)),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's real logs (tests/data, see its MANIFEST.md).
    const LOGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/eventlogs");

    fn load(file: &str) -> (EventLog, Pcrs) {
        let log = eventlog::parse(&std::fs::read(format!("{LOGS}/{file}")).unwrap()).unwrap();
        let pcrs = log.replay().unwrap();
        (log, pcrs)
    }

    #[test]
    fn json_maps_banks_to_decimal_pcr_indexes_and_hex() {
        let (log, pcrs) = load("tpm2-tss/binary_measurements_hcrtm.bin");
        let v = report(&log, &pcrs);
        let sha1 = v["pcrs"]["sha1"].as_object().unwrap();
        assert_eq!(sha1["0"], "15f4e6ca457d1af6bc49511a93ba3500ad69acc5");
        assert_eq!(v["pcrs"]["sha256"]["9"].as_str().unwrap().len(), 64);
        assert!(v["pcrs"].get("sm3_256").is_none());
        assert_eq!(v["not_replayed"], json!(["sm3_256"]));
        assert_eq!(v["events"].as_array().unwrap().len(), log.events.len());
        assert_eq!(v["events"][0]["type_name"], "EV_NO_ACTION");
    }

    #[test]
    fn human_output_has_a_line_per_event_then_the_pcrs() {
        let (log, pcrs) = load("tpm2-tools/event-sd-boot-fedora37.bin");
        let out = render(&log, &pcrs);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("crypto-agile event log, banks sha256, 28 events"));
        assert!(lines[1].contains("EV_NO_ACTION") && lines[1].contains("Spec ID: sha256"));
        assert!(out.contains("kernel cmdline: \" console=ttyS0 console=tty0 efi=debug \""));
        assert!(out.contains("SecureBoot = "));
        assert!(out.contains("Replayed PCRs:\nsha256:\n   0: "));
        assert_eq!(lines.len(), 1 + 28 + 3 + pcrs[&HashAlg::Sha256].len());
    }

    #[test]
    fn descriptions_cannot_carry_terminal_escapes() {
        let e = Event {
            index: 1,
            pcr: 4,
            event_type: event_type::EV_EFI_ACTION,
            digests: vec![],
            data: b"ok\x1b[2J\n".to_vec(),
        };
        assert_eq!(describe(&e), "ok\\u{1b}[2J\\n");
        assert_eq!(truncate("ééé", 2), "éé…");
    }
}
