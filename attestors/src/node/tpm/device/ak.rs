//! Attestation key: a restricted signing key under the EK, kept on disk as a
//! TPM-wrapped blob and loaded only for the command that needs it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tss_esapi::abstraction::ak::{create_ak_2, load_ak};
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection as Alg, DefaultKey};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind as Rc;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::{ecc::EccCurve, key_bits::RsaKeyBits};
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};

use super::context::{flush, tss, State};
use super::{ek, AkPublic, TpmError, AK_BLOB_FILE};

const MAGIC: &[u8; 4] = b"TAK1";
/// TPM_ALG_SHA256: the AK's nameAlg, first two bytes of its Name.
const NAME_ALG_SHA256: [u8; 2] = [0x00, 0x0B];

/// A persisted AK: wrapped private part, public area, and the EK it lives under.
pub(crate) struct AkBlob {
    ek_name: Vec<u8>,
    pub(crate) private: Private,
    pub(crate) public: Public,
}

impl AkBlob {
    pub(crate) fn ak_public(&self) -> Result<AkPublic, TpmError> {
        let public = self
            .public
            .marshall()
            .map_err(|e| TpmError::Ak(format!("marshal AK public: {}", tss(&e))))?;
        // Name = nameAlg || H(TPMT_PUBLIC); the AK is always created with SHA-256.
        let mut name = NAME_ALG_SHA256.to_vec();
        name.extend_from_slice(&Sha256::digest(&public));
        Ok(AkPublic { public, name })
    }

    fn encode(&self) -> Result<Vec<u8>, TpmError> {
        let public = self
            .public
            .marshall()
            .map_err(|e| TpmError::Ak(format!("marshal AK public: {}", tss(&e))))?;
        let mut out = MAGIC.to_vec();
        for part in [&self.ek_name[..], self.private.value(), &public] {
            let len =
                u32::try_from(part.len()).map_err(|_| TpmError::Ak("AK blob too big".into()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<AkBlob, String> {
        let mut rest = bytes.strip_prefix(MAGIC).ok_or("bad magic")?;
        let mut part = || -> Result<Vec<u8>, String> {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or("truncated")?;
            let len = u32::from_be_bytes(*len) as usize;
            let (value, tail) = (tail.get(..len).ok_or("truncated")?, &tail[len..]);
            rest = tail;
            Ok(value.to_vec())
        };
        let ek_name = part()?;
        let private = Private::try_from(part()?).map_err(|e| format!("private: {e}"))?;
        let public = Public::unmarshall(&part()?).map_err(|e| format!("public: {e}"))?;
        Ok(AkBlob {
            ek_name,
            private,
            public,
        })
    }
}

pub(crate) fn blob_path(dir: &Path) -> PathBuf {
    dir.join(AK_BLOB_FILE)
}

/// Load the persisted AK if it is usable, else create and persist a new one.
pub(crate) fn attestation_key(state: &mut State, dir: &Path) -> Result<AkPublic, TpmError> {
    let (parent, ek_name) = ek::ensure(state).map(|ek| (ek.handle, ek.name.clone()))?;
    match read_blob(dir) {
        Ok(blob) if blob.ek_name == ek_name => match load(state, parent, &blob) {
            Ok(handle) => {
                flush(&mut state.ctx, handle);
                return blob.ak_public();
            }
            Err(e) if blob_rejected(&e) => {
                tracing::warn!(
                    "persisted AK rejected by the TPM ({}); creating a new one",
                    tss(&e)
                )
            }
            Err(e) => return Err(TpmError::Ak(format!("load AK: {}", tss(&e)))),
        },
        Ok(_) => tracing::warn!("persisted AK belongs to another EK; creating a new one"),
        Err(TpmError::NoAk(_)) => {}
        Err(TpmError::Ak(e)) => tracing::warn!("persisted AK unreadable ({e}); creating a new one"),
        Err(e) => return Err(e),
    }
    let blob = create(state, parent, ek_name)?;
    write_blob(dir, &blob.encode()?)?;
    blob.ak_public()
}

/// Run `f` with the persisted AK loaded; the AK is flushed afterwards.
pub(crate) fn with_ak<T>(
    state: &mut State,
    dir: &Path,
    f: impl FnOnce(&mut State, KeyHandle, &AkBlob) -> Result<T, TpmError>,
) -> Result<T, TpmError> {
    let blob = read_blob(dir)?;
    let (parent, same_ek) = ek::ensure(state).map(|ek| (ek.handle, ek.name == blob.ek_name))?;
    if !same_ek {
        return Err(TpmError::Ak("persisted AK belongs to another EK".into()));
    }
    let handle =
        load(state, parent, &blob).map_err(|e| TpmError::Ak(format!("load AK: {}", tss(&e))))?;
    let out = f(state, handle, &blob);
    flush(&mut state.ctx, handle);
    out
}

fn load(state: &mut State, parent: KeyHandle, blob: &AkBlob) -> tss_esapi::Result<KeyHandle> {
    load_ak(
        &mut state.ctx,
        parent,
        None,
        blob.private.clone(),
        blob.public.clone(),
    )
}

/// Errors meaning "this blob will never load here" (TPM cleared, other TPM,
/// corrupted file) as opposed to transient or authorization failures.
fn blob_rejected(e: &tss_esapi::Error) -> bool {
    let tss_esapi::Error::Tss2Error(rc) = e else {
        return false;
    };
    matches!(
        rc.kind(),
        Some(Rc::Integrity | Rc::Value | Rc::Size | Rc::Key | Rc::Attributes | Rc::KeySize)
            | Some(
                Rc::Scheme | Rc::Hash | Rc::Type | Rc::Symmetric | Rc::Parent | Rc::Insufficient
            )
    )
}

/// ECC P-256/ECDSA-SHA256 (fast on every chip), else RSA-2048/RSASSA-SHA256.
fn create(state: &mut State, parent: KeyHandle, ek_name: Vec<u8>) -> Result<AkBlob, TpmError> {
    let ecc = create_ak_2(
        &mut state.ctx,
        parent,
        HashingAlgorithm::Sha256,
        Alg::Ecc(EccCurve::NistP256),
        SignatureSchemeAlgorithm::EcDsa,
        None,
        DefaultKey,
    );
    let created = match ecc {
        Ok(k) => k,
        Err(e) => {
            tracing::info!("ECC AK not available ({}); using RSA-2048", tss(&e));
            create_ak_2(
                &mut state.ctx,
                parent,
                HashingAlgorithm::Sha256,
                Alg::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
                None,
                DefaultKey,
            )
            .map_err(|e| TpmError::Ak(format!("create AK: {}", tss(&e))))?
        }
    };
    Ok(AkBlob {
        ek_name,
        private: created.out_private,
        public: created.out_public,
    })
}

fn read_blob(dir: &Path) -> Result<AkBlob, TpmError> {
    let path = blob_path(dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(TpmError::NoAk(path)),
        Err(source) => return Err(TpmError::Io { path, source }),
    };
    AkBlob::decode(&bytes).map_err(|e| TpmError::Ak(format!("{}: {e}", path.display())))
}

/// Write-then-rename so a crash never leaves a half-written blob; 0600
/// because the blob is the key's identity on this host; in a directory only
/// we can write, through a temp file nobody can redirect.
fn write_blob(dir: &Path, bytes: &[u8]) -> Result<(), TpmError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TpmError::Io { path, source }
    };
    tessera_common::fsutil::ensure_private_dir(dir, 0o700).map_err(io(dir))?;
    let path = blob_path(dir);
    tessera_common::fsutil::write_atomic(&path, bytes, 0o600).map_err(io(&path))
}
