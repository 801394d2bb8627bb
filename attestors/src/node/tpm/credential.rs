//! Software TPM2_MakeCredential (TPM 2.0 Part 1 §24, TPM.md §1.2) for RSA
//! and ECC EKs, with aws-lc-rs only. The output is what
//! TPM2_ActivateCredential takes: a TPM2B_ID_OBJECT and a
//! TPM2B_ENCRYPTED_SECRET, each with its 2-byte size.

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{self, OaepPublicEncryptingKey, PublicEncryptingKey};
use aws_lc_rs::{digest, hmac, rand};

use super::public::{KeyParams, PublicError, TpmtPublic};
use super::wire::{curve, HashAlg, WireError, Writer, MAX_NAME};
use tessera_common::secret::SecretBytes;

/// Label of the seed (OAEP label / KDFe "Use"), NUL included.
const IDENTITY: &[u8] = b"IDENTITY\0";

/// A credential that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("EK: {0}")]
    Ek(#[from] PublicError),
    #[error("secret must be 1..={max} bytes (EK nameAlg digest size)")]
    SecretLength { max: usize },
    #[error("AK name is not nameAlg || digest")]
    AkName,
    #[error("credential encoding: {0}")]
    Wire(#[from] WireError),
    #[error("{0} failed")]
    Crypto(&'static str),
}

/// MakeCredential output, as TPM2_ActivateCredential takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT: size || TPM2B_DIGEST(outer HMAC) || encIdentity.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET: size || OAEP ciphertext or TPMS_ECC_POINT.
    pub encrypted_secret: Vec<u8>,
}

/// SP800-108 counter-mode KDF with HMAC (TPM 2.0 Part 1 §11.4.10.2):
/// `HMAC(key, [i]32 || label || 0x00 || context_u || context_v || [bits]32)`.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bytes: usize,
) -> Vec<u8> {
    let key = hmac::Key::new(hash.hmac_alg(), key);
    let bits = u32::try_from(bytes.saturating_mul(8)).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter = counter.wrapping_add(1);
    }
    out.truncate(bytes);
    out
}

/// SP800-56A concatenation KDF (TPM 2.0 Part 1 §11.4.10.3):
/// `H([i]32 || Z || use || party_u || party_v)`, `use` with its NUL.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    use_label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bytes: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + hash.size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut ctx = digest::Context::new(hash.digest_alg());
        ctx.update(&counter.to_be_bytes());
        ctx.update(z);
        ctx.update(use_label);
        ctx.update(party_u);
        ctx.update(party_v);
        out.extend_from_slice(ctx.finish().as_ref());
        counter = counter.wrapping_add(1);
    }
    out.truncate(bytes);
    out
}

/// Seed and encrypted seed for an RSA EK: random seed, RSA-OAEP(nameAlg,
/// label "IDENTITY\0").
fn rsa_seed(ek: &TpmtPublic, hash: HashAlg) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let oaep_alg = match hash {
        HashAlg::Sha256 => &rsa::OAEP_SHA256_MGF1SHA256,
        HashAlg::Sha384 => &rsa::OAEP_SHA384_MGF1SHA384,
        _ => return Err(CredentialError::Crypto("OAEP hash selection")),
    };
    let mut seed = vec![0u8; hash.size()];
    rand::fill(&mut seed).map_err(|_| CredentialError::Crypto("random seed"))?;
    let key: PublicEncryptingKey = ek
        .rsa_components()?
        .try_into()
        .map_err(|_| PublicError::InvalidKey("RSA EK rejected"))?;
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| CredentialError::Crypto("OAEP key"))?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let ct = key
        .encrypt(oaep_alg, &seed, &mut out, Some(IDENTITY))
        .map_err(|_| CredentialError::Crypto("RSA-OAEP"))?;
    Ok((seed, ct.to_vec()))
}

/// Seed and encrypted seed for an ECC EK: ephemeral ECDH on the EK curve,
/// seed = KDFe(nameAlg, Z.x, "IDENTITY\0", eph.x, ek.x), encrypted seed =
/// the ephemeral public point as TPMS_ECC_POINT.
fn ecc_seed(ek: &TpmtPublic, hash: HashAlg) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let (curve_id, ek_point) = ek.ecc_point()?;
    let KeyParams::Ecc { x: ek_x, .. } = &ek.area().key else {
        return Err(PublicError::InvalidKey("not an ECC key").into());
    };
    let algorithm = match curve_id {
        curve::NIST_P256 => &agreement::ECDH_P256,
        curve::NIST_P384 => &agreement::ECDH_P384,
        other => {
            return Err(PublicError::UnsupportedAlg {
                what: "curve",
                alg: other,
            }
            .into())
        }
    };
    let eph = EphemeralPrivateKey::generate(algorithm, &rand::SystemRandom::new())
        .map_err(|_| CredentialError::Crypto("ephemeral ECC key"))?;
    let eph_pub = eph
        .compute_public_key()
        .map_err(|_| CredentialError::Crypto("ephemeral ECC key"))?;
    // Uncompressed SEC1: 04 || x || y, coordinates of equal size.
    let coords = eph_pub.as_ref().get(1..).unwrap_or_default();
    let (eph_x, eph_y) = coords.split_at(coords.len() / 2);
    let z = agreement::agree_ephemeral(
        eph,
        UnparsedPublicKey::new(algorithm, ek_point),
        CredentialError::Crypto("ECDH with the EK"),
        |z| Ok(z.to_vec()),
    )?;
    let seed = kdfe(hash, &z, IDENTITY, eph_x, ek_x, hash.size());
    let mut point = Writer::new();
    point.tpm2b(eph_x, "ecc.x")?.tpm2b(eph_y, "ecc.y")?;
    Ok((seed, point.into_vec()))
}

/// AES-CFB128 with an all-zero IV, in place.
fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<(), CredentialError> {
    let alg = match key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(CredentialError::Crypto("AES key size")),
    };
    let err = |_| CredentialError::Crypto("AES-CFB");
    let key = EncryptingKey::cfb128(UnboundCipherKey::new(alg, key).map_err(err)?).map_err(err)?;
    let iv = EncryptionContext::Iv128(FixedLength::from([0u8; 16]));
    key.less_safe_encrypt(data, iv).map_err(err)?;
    Ok(())
}

/// TPM2_MakeCredential in software. `ek` must match a TCG EK template
/// (which fixes nameAlg and the symmetric algorithm); `ak_name` is the AK's
/// full Name (nameAlg || digest) computed by the authority after the AK
/// checks, e.g. [`super::public::AkPublic::name`].
pub fn make_credential(
    ek: &TpmtPublic,
    secret: &[u8],
    ak_name: &[u8],
) -> Result<Credential, CredentialError> {
    let template = ek.ek_template()?;
    let hash = template.name_alg();
    if secret.is_empty() || secret.len() > hash.size() {
        return Err(CredentialError::SecretLength { max: hash.size() });
    }
    let name_ok = match ak_name {
        [a, b, digest @ ..] => {
            ak_name.len() <= MAX_NAME
                && HashAlg::from_id(u16::from_be_bytes([*a, *b]))
                    .is_some_and(|h| h.size() == digest.len())
        }
        _ => false,
    };
    if !name_ok {
        return Err(CredentialError::AkName);
    }
    let (seed, encrypted_seed) = match ek.area().key {
        KeyParams::Rsa { .. } => rsa_seed(ek, hash)?,
        KeyParams::Ecc { .. } => ecc_seed(ek, hash)?,
    };
    // The seed and the keys derived from it would open the credential: wiped on drop.
    let seed = SecretBytes::new(seed);
    let sym_bytes = usize::from(template.symmetric().key_bits / 8);
    let sym_key = SecretBytes::new(kdfa(hash, &seed, b"STORAGE", ak_name, &[], sym_bytes));
    let mut enc_identity = Writer::new();
    enc_identity.tpm2b(secret, "credential")?;
    let mut enc_identity = enc_identity.into_vec();
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;
    let hmac_key = SecretBytes::new(kdfa(hash, &seed, b"INTEGRITY", &[], &[], hash.size()));
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hash.hmac_alg(), &hmac_key));
    mac.update(&enc_identity);
    mac.update(ak_name);
    let outer_hmac = mac.sign();
    let mut id_object = Writer::new();
    id_object
        .tpm2b(outer_hmac.as_ref(), "integrityHMAC")?
        .bytes(&enc_identity);
    let mut credential_blob = Writer::new();
    credential_blob.tpm2b(&id_object.into_vec(), "TPM2B_ID_OBJECT")?;
    let mut encrypted_secret = Writer::new();
    encrypted_secret.tpm2b(&encrypted_seed, "TPM2B_ENCRYPTED_SECRET")?;
    Ok(Credential {
        credential_blob: credential_blob.into_vec(),
        encrypted_secret: encrypted_secret.into_vec(),
    })
}

#[cfg(test)]
mod tests;
