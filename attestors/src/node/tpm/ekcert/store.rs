//! Manufacturer CA certificates (roots and intermediates) used to build EK
//! certification paths.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

use super::verify::parse_cert;
use super::EkCertError;

/// Most certificate files read from one directory.
pub const MAX_STORE_FILES: usize = 1024;
/// Most directory entries looked at (of any kind) in one directory.
pub const MAX_DIR_ENTRIES: usize = 16 * 1024;
/// Largest single certificate file (the tpm-ca-certificates intermediate
/// bundle is ~310 KiB).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes read from one directory in total.
pub const MAX_STORE_BYTES: u64 = 64 * 1024 * 1024;
/// Most distinct certificates in one store.
pub const MAX_STORE_CERTS: usize = 8 * 1024;

/// File extensions (lower case) that are read by [`EkCaStore::load_dir`].
const CERT_EXTENSIONS: [&str; 4] = ["pem", "crt", "cer", "der"];

/// One CA certificate of the store.
pub(super) struct StoredCa {
    pub(super) der: Vec<u8>,
    pub(super) ski: Option<Vec<u8>>,
    /// A path may end at this certificate.
    pub(super) anchor: bool,
}

/// Manufacturer roots and intermediates.
///
/// Certificates are matched as issuers by subject DN (canonicalised: string
/// type, case and whitespace do not matter) and, when both sides carry one,
/// AKI == SKI. A certification path ends at the first *trust anchor* it
/// reaches; non-anchor certificates may only extend a path.
pub struct EkCaStore {
    certs: Vec<StoredCa>,
    by_subject: HashMap<Vec<u8>, Vec<usize>>,
    by_hash: HashMap<[u8; 32], usize>,
}

impl std::fmt::Debug for EkCaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EkCaStore")
            .field("certs", &self.certs.len())
            .field("anchors", &self.anchors())
            .finish()
    }
}

impl EkCaStore {
    fn empty() -> Self {
        Self {
            certs: Vec::new(),
            by_subject: HashMap::new(),
            by_hash: HashMap::new(),
        }
    }

    /// Loads every `.pem`/`.crt`/`.cer`/`.der` file of `dir` (not recursive;
    /// hidden files and other extensions are skipped). PEM files may hold
    /// several certificates and text around the blocks (`openssl x509 -text`
    /// output); other files are one DER certificate.
    ///
    /// **Every certificate in the directory is a trust anchor**: an EK chain
    /// may end at any of them, self-signed or not. Configuring a directory
    /// therefore means trusting every CA in it — which is what lets an
    /// operator trust a vendor (or swtpm local CA) intermediate directly,
    /// without its root.
    pub fn load_dir(dir: &Path) -> Result<Self, EkCertError> {
        let store_err = |path: &Path, reason: String| EkCertError::Store {
            path: path.to_path_buf(),
            reason,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| store_err(dir, e.to_string()))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for (n, entry) in entries.enumerate() {
            if n >= MAX_DIR_ENTRIES {
                return Err(store_err(
                    dir,
                    format!("more than {MAX_DIR_ENTRIES} entries"),
                ));
            }
            let path = entry.map_err(|e| store_err(dir, e.to_string()))?.path();
            if is_cert_file_name(&path) && path.is_file() {
                files.push(path);
            }
        }
        if files.len() > MAX_STORE_FILES {
            return Err(store_err(
                dir,
                format!("more than {MAX_STORE_FILES} certificate files"),
            ));
        }
        files.sort();
        let mut store = Self::empty();
        let mut total: u64 = 0;
        for path in &files {
            let bytes = read_bounded(path).map_err(|reason| store_err(path, reason))?;
            total = total.saturating_add(bytes.len() as u64);
            if total > MAX_STORE_BYTES {
                return Err(store_err(dir, format!("more than {MAX_STORE_BYTES} bytes")));
            }
            for der in certs_in_file(&bytes).map_err(|reason| store_err(path, reason))? {
                store
                    .add(der, true)
                    .map_err(|reason| store_err(path, reason))?;
            }
        }
        if store.certs.is_empty() {
            return Err(store_err(dir, "no certificate found".into()));
        }
        tracing::debug!(dir = %dir.display(), files = files.len(), certs = store.certs.len(), "loaded EK CA store");
        Ok(store)
    }

    /// A store from DER certificates: `roots` are trust anchors,
    /// `intermediates` may only extend a path towards one of them.
    pub fn from_certs(
        roots: Vec<Vec<u8>>,
        intermediates: Vec<Vec<u8>>,
    ) -> Result<Self, EkCertError> {
        let mut store = Self::empty();
        let tagged = roots
            .into_iter()
            .map(|d| (d, true))
            .chain(intermediates.into_iter().map(|d| (d, false)));
        for (i, (der, anchor)) in tagged.enumerate() {
            store
                .add(der, anchor)
                .map_err(|reason| EkCertError::Store {
                    path: PathBuf::from(format!("<certificate #{i}>")),
                    reason,
                })?;
        }
        Ok(store)
    }

    /// Number of distinct certificates (duplicates are stored once).
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True if the store holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Number of certificates a path may end at.
    pub fn anchors(&self) -> usize {
        self.certs.iter().filter(|c| c.anchor).count()
    }

    pub(super) fn get(&self, idx: usize) -> Option<&StoredCa> {
        self.certs.get(idx)
    }

    /// Indices of the certificates that may have issued a certificate with
    /// this issuer DN and authority key identifier.
    pub(super) fn candidates(&self, issuer: &X509Name<'_>, aki: Option<&[u8]>) -> Vec<usize> {
        let Some(idxs) = self.by_subject.get(&name_key(issuer)) else {
            return Vec::new();
        };
        idxs.iter()
            .copied()
            .filter(
                |i| match (aki, self.certs.get(*i).and_then(|c| c.ski.as_deref())) {
                    (Some(aki), Some(ski)) => aki == ski,
                    _ => true,
                },
            )
            .collect()
    }

    fn add(&mut self, der: Vec<u8>, anchor: bool) -> Result<(), String> {
        let hash: [u8; 32] = Sha256::digest(&der).into();
        if let Some(idx) = self.by_hash.get(&hash) {
            if let Some(existing) = self.certs.get_mut(*idx) {
                existing.anchor |= anchor;
            }
            return Ok(());
        }
        if self.certs.len() >= MAX_STORE_CERTS {
            return Err(format!("more than {MAX_STORE_CERTS} certificates"));
        }
        let cert = parse_cert(&der).map_err(|e| e.to_string())?;
        let subject = name_key(cert.subject());
        let ski = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(ki) => Some(ki.0.to_vec()),
                _ => None,
            });
        let idx = self.certs.len();
        self.certs.push(StoredCa { der, ski, anchor });
        self.by_subject.entry(subject).or_default().push(idx);
        self.by_hash.insert(hash, idx);
        Ok(())
    }
}

fn is_cert_file_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    !hidden && ext.is_some_and(|e| CERT_EXTENSIONS.contains(&e.as_str()))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The DER certificates of one file (PEM with any number of CERTIFICATE
/// blocks and surrounding text, or a single DER certificate).
pub(super) fn certs_in_file(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if !is_pem {
        let len = super::der_sequence_len(bytes).map_err(|e| e.to_string())?;
        let der = bytes.get(..len).ok_or("DER certificate truncated")?;
        let rest = bytes.get(len..).unwrap_or(&[]);
        if !rest.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
            return Err("trailing data after the DER certificate".into());
        }
        return Ok(vec![der.to_vec()]);
    }
    let blocks = pem::parse_many(bytes).map_err(|e| format!("PEM: {e}"))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(certs)
}

/// Issuer-matching form of a DN (RFC 5280 §7.1, as OpenSSL does it): string
/// values of any string type compare as case-folded UTF-8 with whitespace
/// trimmed and collapsed; attributes of a multi-valued RDN in sorted order.
/// Real vendor CAs need it: STM's "STM TPM ECC Root CA 01" has a
/// PrintableString subject while some intermediates it issued name it in
/// UTF8String. Identical raw names always give identical keys; the key only
/// selects candidates, the signature decides.
pub(super) fn name_key(name: &X509Name<'_>) -> Vec<u8> {
    let push_lv = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    let mut key = Vec::new();
    for rdn in name.iter() {
        let mut attrs: Vec<Vec<u8>> = rdn
            .iter()
            .map(|attr| {
                let mut out = Vec::new();
                push_lv(&mut out, attr.attr_type().as_bytes());
                let value = attr.attr_value();
                match canonical_string(value.header.tag().0, value.data) {
                    Some(s) => {
                        out.extend_from_slice(&12u32.to_be_bytes());
                        push_lv(&mut out, s.as_bytes());
                    }
                    None => {
                        out.extend_from_slice(&value.header.tag().0.to_be_bytes());
                        push_lv(&mut out, value.data);
                    }
                }
                out
            })
            .collect();
        attrs.sort();
        key.push(0x31);
        key.extend_from_slice(&(attrs.len() as u32).to_be_bytes());
        attrs.iter().for_each(|a| key.extend_from_slice(a));
    }
    key
}

/// UTF8/Printable/IA5/Numeric/Visible/Teletex(as Latin-1)/BMP string
/// values, case-folded with whitespace collapsed; `None` for other types.
fn canonical_string(tag: u32, data: &[u8]) -> Option<String> {
    let s = match tag {
        12 | 18 | 19 | 22 | 26 => std::str::from_utf8(data).ok()?.to_owned(),
        20 => data.iter().map(|b| char::from(*b)).collect(),
        30 => {
            let units = data.chunks(2).map(|c| match c {
                [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
                _ => None,
            });
            String::from_utf16(&units.collect::<Option<Vec<u16>>>()?).ok()?
        }
        _ => return None,
    };
    Some(
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
    )
}
