//! `entry create --data FILE`: a JSON document `{"entries": [...]}` of entries
//! in the shape `entry list --output json` prints (README: Scripting the admin CLI).

use super::records::{Entries, EntryRecord};
use super::times::parse_rfc3339;
use crate::server::BoxError;
use std::io::Read;
use std::path::Path;
use tessera_proto::authority as pb;

/// The admin API takes at most this much in one request.
const MAX_DATA_BYTES: u64 = 4 << 20;

/// Reads FILE (`-`: standard input) into admin API entries; an error names the
/// entry (`entries[2]`) and what is wrong with it.
pub fn read(path: &Path) -> Result<Vec<pb::Entry>, BoxError> {
    let mut text = Vec::new();
    let src: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(open_regular(path).map_err(|e| format!("--data: {}: {e}", path.display()))?)
    };
    src.take(MAX_DATA_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("--data: {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_DATA_BYTES {
        return Err(format!(
            "--data: {} is larger than {} MiB; split it",
            path.display(),
            MAX_DATA_BYTES >> 20
        )
        .into());
    }
    parse(&text).map_err(|e| format!("--data: {}: {e}", path.display()).into())
}

/// Opens `path` without blocking (opening a FIFO for reading would wait for a
/// writer forever) and only if it is a regular file.
fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file; give a file, or - for standard input".into());
    }
    // Regular files ignore O_NONBLOCK: reads below block as usual.
    Ok(f)
}

fn parse(text: &[u8]) -> Result<Vec<pb::Entry>, String> {
    // Each entry is kept as its text so that it is deserialized straight into
    // `EntryRecord`, which refuses a key given twice (a `serde_json::Value`
    // would silently keep the last), with the entry's index in the error.
    let doc: Entries<&serde_json::value::RawValue> = serde_json::from_slice(text)
        .map_err(|e| format!("not a JSON object {{\"entries\": [...]}}: {e}"))?;
    if doc.entries.is_empty() {
        return Err("\"entries\" is empty".into());
    }
    doc.entries
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let r: EntryRecord =
                serde_json::from_str(v.get()).map_err(|e| format!("entries[{i}]: {e}"))?;
            to_pb(r).map_err(|e| format!("entries[{i}]: {e}"))
        })
        .collect()
}

fn to_pb(r: EntryRecord) -> Result<pb::Entry, String> {
    let expires_at = match r.expires_at.as_deref() {
        Some(t) => parse_rfc3339(t).map_err(|e| format!("expires_at: {e}"))?,
        None => 0,
    };
    Ok(pb::Entry {
        spiffe_id: r.spiffe_id,
        parent_id: r.parent_id,
        selectors: r
            .selectors
            .into_iter()
            .map(|s| pb::Selector {
                r#type: s.kind,
                value: s.value,
            })
            .collect(),
        x509_ttl: r.x509_svid_ttl.unwrap_or(0),
        jwt_ttl: r.jwt_svid_ttl.unwrap_or(0),
        dns_names: r.dns_names,
        hint: r.hint,
        admin: r.admin,
        expires_at,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn entries_parse_with_defaults() {
        let got = parse(
            br#"{"entries": [
                {"spiffe_id": "spiffe://td/a", "parent_id": "spiffe://td/p",
                 "selectors": [{"type": "unix", "value": "uid:1"}]},
                {"spiffe_id": "spiffe://td/b", "parent_id": "spiffe://td/p",
                 "selectors": [{"type": "unix", "value": "uid:2"}], "x509_svid_ttl": 600,
                 "dns_names": ["b.example"], "hint": "b", "admin": true,
                 "expires_at": "2030-01-01T00:00:00Z", "id": "ignored", "revision": 7}
            ]}"#,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].x509_ttl, got[0].expires_at), (0, 0));
        assert_eq!(got[1].x509_ttl, 600);
        assert_eq!(got[1].expires_at, 1_893_456_000);
        assert_eq!((got[1].id.as_str(), got[1].revision), ("", 0));
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        for (doc, want) in [
            (r#"[]"#, "not a JSON object"),
            (r#"{"entries": []}"#, "is empty"),
            (
                r#"{"entries": [{"spiffe_id": "spiffe://td/a", "parent_id": "spiffe://td/p",
                   "selectors": []}, {"spiffe_id": "spiffe://td/a", "parent_id": "x",
                   "selectors": [], "colour": 1}]}"#,
                "entries[1]: unknown field `colour`",
            ),
            (
                r#"{"entries": [{"spiffe_id": "spiffe://td/a", "parent_id": "spiffe://td/p",
                   "selectors": [], "expires_at": "soon"}]}"#,
                "entries[0]: expires_at:",
            ),
            (
                r#"{"entries": [{"parent_id": "spiffe://td/p", "selectors": []}]}"#,
                "entries[0]: missing field `spiffe_id`",
            ),
            (
                r#"{"entries": [{"spiffe_id": "spiffe://td/a", "parent_id": "spiffe://td/p",
                   "selectors": []}, {"spiffe_id": "spiffe://td/b", "parent_id": "spiffe://td/p",
                   "selectors": [{"type": "unix", "value": "uid:0"}],
                   "selectors": [{"type": "unix", "value": "uid:1"}]}]}"#,
                "entries[1]: duplicate field `selectors`",
            ),
            (
                r#"{"entries": [{"spiffe_id": "spiffe://td/a", "parent_id": "spiffe://td/p",
                   "selectors": [{"type": "unix", "value": "uid:0", "value": "uid:1"}]}]}"#,
                "entries[0]: duplicate field `value`",
            ),
        ] {
            let e = parse(doc.as_bytes()).unwrap_err();
            assert!(e.contains(want) && !e.contains('\n'), "{doc}: {e}");
        }
    }

    #[test]
    fn only_regular_files_are_read_and_a_fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("entries.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (f, d) = (fifo.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let _ = tx.send((super::read(&f).map(|_| ()), super::read(&d).map(|_| ())));
        });
        let (from_fifo, from_dir) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading --data from a FIFO blocked");
        for e in [from_fifo.unwrap_err(), from_dir.unwrap_err()] {
            let e = e.to_string();
            assert!(
                e.contains("not a regular file") && e.starts_with("--data: "),
                "{e}"
            );
        }
        let file = dir.path().join("entries.json");
        std::fs::write(
            &file,
            br#"{"entries": [{"spiffe_id": "spiffe://td/a", "parent_id": "spiffe://td/p",
                "selectors": [{"type": "unix", "value": "uid:1"}]}]}"#,
        )
        .unwrap();
        assert_eq!(super::read(&file).unwrap().len(), 1);
    }
}
