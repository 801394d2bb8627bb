//! Endorsement key: certificate from NV, key from a persistent handle or the
//! TCG default template.

use tss_esapi::abstraction::ek::create_ek_object_2;
use tss_esapi::abstraction::{nv, AsymmetricAlgorithmSelection as Alg, DefaultKey};
use tss_esapi::handles::{KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::{ecc::EccCurve, key_bits::RsaKeyBits, resource_handles::NvAuth};
use tss_esapi::structures::Public;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::super::public::{EkTemplate, TpmtPublic};
use super::context::{flush, handles, tss, State};
use super::{Endorsement, TpmError};

/// EK certificate NV indices in preference order. RSA-2048 first: every
/// verifier can MakeCredential for it. `creatable`: tss-esapi builds the
/// template the certificate was issued for (not so for H-1/H-2 at 0x..12/14,
/// usable only through a persistent EK).
const CERT_INDICES: [(u32, Alg, bool); 8] = [
    (0x01C0_0002, Alg::Rsa(RsaKeyBits::Rsa2048), true),
    (0x01C0_000A, Alg::Ecc(EccCurve::NistP256), true),
    (0x01C0_0012, Alg::Rsa(RsaKeyBits::Rsa2048), false),
    (0x01C0_0014, Alg::Ecc(EccCurve::NistP256), false),
    (0x01C0_0016, Alg::Ecc(EccCurve::NistP384), true),
    (0x01C0_001C, Alg::Rsa(RsaKeyBits::Rsa3072), true),
    (0x01C0_001E, Alg::Rsa(RsaKeyBits::Rsa4096), true),
    (0x01C0_0018, Alg::Ecc(EccCurve::NistP521), true),
];
/// Persistent handles reserved for EKs (0x81010001 RSA, 0x81010002 ECC, …).
const PERSISTENT_EK_RANGE: (u32, u32) = (0x8101_0000, 0x8101_00FF);

/// The EK this TPM attests with, resolved once per [`State`].
pub(crate) struct Ek {
    pub(crate) handle: KeyHandle,
    persistent: bool,
    pub(crate) public: Public,
    pub(crate) name: Vec<u8>,
    cert: Option<Vec<u8>>,
}

impl Ek {
    pub(crate) fn endorsement(&self) -> Result<Endorsement, TpmError> {
        let ek_public = self
            .public
            .marshall()
            .map_err(|e| TpmError::Ek(format!("marshal EK public: {}", tss(&e))))?;
        Ok(Endorsement {
            ek_cert: self.cert.clone(),
            ek_public,
        })
    }

    /// Flush a created EK; persistent ones only lose their ESYS handle.
    pub(crate) fn release(self, ctx: &mut Context) {
        if self.persistent {
            let _ = ctx.tr_close(&mut ObjectHandle::from(self.handle));
        } else {
            flush(ctx, self.handle);
        }
    }
}

/// The EK, resolving it on first use.
pub(crate) fn ensure(state: &mut State) -> Result<&Ek, TpmError> {
    if state.ek.is_none() {
        state.ek = Some(match state.ek_template {
            None => resolve(&mut state.ctx)?,
            Some(t) => resolve_template(&mut state.ctx, t)?,
        });
    }
    state.ek.as_ref().ok_or(TpmError::NoEk)
}

fn resolve(ctx: &mut Context) -> Result<Ek, TpmError> {
    let present = handles(ctx, 0x01C0_0000, 0x01C0_7FFF).map_err(TpmError::Nv)?;
    let mut saw_cert = false;
    for (index, alg, creatable) in CERT_INDICES {
        if !present.contains(&index) {
            continue;
        }
        let cert = match read_cert(ctx, index) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("EK certificate at NV {index:#x} unreadable: {e}");
                continue;
            }
        };
        saw_cert = true;
        if let Some(ek) = find_ek(ctx, alg, Some(cert), creatable)? {
            return Ok(ek);
        }
        tracing::warn!("no EK matches the certificate at NV {index:#x}");
    }
    if saw_cert {
        // Silently attesting with a cert-less EK would only fail at the authority.
        return Err(TpmError::Ek(
            "EK certificates are present but no EK matches them (vendor EK template in NV?)".into(),
        ));
    }
    find_ek(ctx, Alg::Rsa(RsaKeyBits::Rsa2048), None, true)?.ok_or(TpmError::NoEk)
}

/// The EK of `template`: its certificate's NV index only, or without a
/// certificate there the EK created from the template. The authority refuses
/// every other EK, so no other one is tried.
fn resolve_template(ctx: &mut Context, template: EkTemplate) -> Result<Ek, TpmError> {
    let index = template.cert_nv_index();
    let (alg, creatable) = CERT_INDICES
        .iter()
        .find(|(i, _, _)| *i == index)
        .map(|(_, alg, creatable)| (*alg, *creatable))
        .ok_or_else(|| TpmError::Ek(format!("EK template {template} is not supported")))?;
    let present = handles(ctx, index, index).map_err(TpmError::Nv)?;
    let cert = match present.contains(&index) {
        true => Some(read_cert(ctx, index)?),
        false => None,
    };
    let ek = find_ek(ctx, alg, cert, creatable)?.ok_or_else(|| {
        TpmError::Ek(format!(
            "no EK of template {template} (certificate NV index {index:#x}) on this TPM"
        ))
    })?;
    let public = ek
        .public
        .marshall()
        .map_err(|e| TpmError::Ek(format!("marshal EK public: {}", tss(&e))))?;
    let found = TpmtPublic::parse(&public)
        .ok()
        .and_then(|p| p.ek_template().ok());
    if found != Some(template) {
        ek.release(ctx);
        return Err(TpmError::Ek(format!(
            "the EK found for template {template} is not of that template"
        )));
    }
    Ok(ek)
}

/// A persistent EK for `alg` (matching `cert` if given), else a new one from
/// the default template if `creatable` and it matches `cert`.
fn find_ek(
    ctx: &mut Context,
    alg: Alg,
    cert: Option<Vec<u8>>,
    creatable: bool,
) -> Result<Option<Ek>, TpmError> {
    let template =
        tss_esapi::abstraction::ek::create_ek_public_from_default_template_2(alg, DefaultKey)
            .map_err(|e| TpmError::Ek(format!("EK template: {}", tss(&e))))?;
    let fits = |public: &Public, cert: Option<&[u8]>| {
        same_template(public, &template) && cert.is_none_or(|c| key_in_cert(public, c))
    };
    let (first, last) = PERSISTENT_EK_RANGE;
    for h in handles(ctx, first, last).map_err(TpmError::Ek)? {
        let Ok(tpm_handle) = TpmHandle::try_from(h) else {
            continue;
        };
        let Ok(mut obj) = ctx.execute_without_session(|c| c.tr_from_tpm_public(tpm_handle)) else {
            continue;
        };
        match ctx.read_public(KeyHandle::from(obj)) {
            Ok((public, name, _)) if fits(&public, cert.as_deref()) => {
                tracing::debug!("using persistent EK {h:#x}");
                let name = name.value().to_vec();
                let handle = KeyHandle::from(obj);
                return Ok(Some(Ek {
                    handle,
                    persistent: true,
                    public,
                    name,
                    cert,
                }));
            }
            _ => {
                let _ = ctx.tr_close(&mut obj);
            }
        }
    }
    if !creatable {
        return Ok(None);
    }
    let handle = create_ek_object_2(ctx, alg, DefaultKey)
        .map_err(|e| TpmError::Ek(format!("CreatePrimary(EK {alg:?}): {}", tss(&e))))?;
    match ctx.read_public(handle) {
        Ok((public, name, _)) if fits(&public, cert.as_deref()) => {
            let name = name.value().to_vec();
            Ok(Some(Ek {
                handle,
                persistent: false,
                public,
                name,
                cert,
            }))
        }
        Ok(_) => {
            flush(ctx, handle);
            Ok(None)
        }
        Err(e) => {
            flush(ctx, handle);
            Err(TpmError::Ek(format!("ReadPublic(EK): {}", tss(&e))))
        }
    }
}

/// Same key type and policy as the template; only `unique` (the key) differs.
fn same_template(public: &Public, template: &Public) -> bool {
    match (public, template) {
        (
            Public::Rsa {
                object_attributes: a,
                name_hashing_algorithm: h,
                auth_policy: p,
                parameters: q,
                ..
            },
            Public::Rsa {
                object_attributes: a2,
                name_hashing_algorithm: h2,
                auth_policy: p2,
                parameters: q2,
                ..
            },
        ) => a == a2 && h == h2 && p == p2 && q == q2,
        (
            Public::Ecc {
                object_attributes: a,
                name_hashing_algorithm: h,
                auth_policy: p,
                parameters: q,
                ..
            },
            Public::Ecc {
                object_attributes: a2,
                name_hashing_algorithm: h2,
                auth_policy: p2,
                parameters: q2,
                ..
            },
        ) => a == a2 && h == h2 && p == p2 && q == q2,
        _ => false,
    }
}

/// Whether the certificate carries this public key. The RSA modulus / the
/// uncompressed ECC point appears verbatim in the DER SubjectPublicKeyInfo,
/// so a byte search is exact without an X.509 parser on the agent.
fn key_in_cert(public: &Public, cert: &[u8]) -> bool {
    let key = match public {
        Public::Rsa { unique, .. } => unique.value().to_vec(),
        Public::Ecc { unique, .. } => {
            let mut p = vec![0x04];
            p.extend_from_slice(unique.x().value());
            p.extend_from_slice(unique.y().value());
            p
        }
        _ => return false,
    };
    key.len() > 16 && cert.windows(key.len()).any(|w| w == key.as_slice())
}

fn read_cert(ctx: &mut Context, index: u32) -> Result<Vec<u8>, TpmError> {
    let nv_err = |e: tss_esapi::Error| TpmError::Nv(format!("NV {index:#x}: {}", tss(&e)));
    let nv_index = NvIndexTpmHandle::new(index).map_err(nv_err)?;
    let obj = ctx
        .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv_index)))
        .map_err(nv_err)?;
    // The index is its own auth (empty), as tpm2_getekcertificate does. The
    // ESYS handle is closed by nv::read_full's reader.
    let auth = NvAuth::NvIndex(NvIndexHandle::from(obj));
    let raw = ctx
        .execute_with_nullauth_session(|c| nv::read_full(c, auth, nv_index))
        .map_err(nv_err)?;
    strip_nv_cert(&raw)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| TpmError::Nv(format!("NV {index:#x} holds no DER certificate")))
}

/// Cut an NV certificate down to its DER: drop the TCG PC Client header
/// `10 01 00 <len16>` some vendors prepend and any padding after the end.
pub(crate) fn strip_nv_cert(raw: &[u8]) -> Option<&[u8]> {
    let body = match raw {
        [0x10, 0x01, 0x00, hi, lo, rest @ ..] => {
            rest.get(..usize::from(u16::from_be_bytes([*hi, *lo])))?
        }
        _ => raw,
    };
    let len = match body {
        [0x30, n, ..] if *n < 0x80 => 2 + usize::from(*n),
        [0x30, 0x81, n, ..] => 3 + usize::from(*n),
        [0x30, 0x82, a, b, ..] => 4 + usize::from(u16::from_be_bytes([*a, *b])),
        [0x30, 0x83, a, b, c, ..] => {
            5 + (usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c))
        }
        _ => return None,
    };
    body.get(..len)
}
