//! The AK checks of TPM.md §1.4 item 6.

use super::super::wire::{alg, HashAlg};
use super::{attr, coordinate_len, AkCheck, KeyParams, PublicError, TpmtPublic};

/// An AK public area that passed every check of TPM.md §1.4 item 6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkPublic {
    public: TpmtPublic,
    name: Vec<u8>,
    scheme: (u16, HashAlg),
}

impl AkPublic {
    /// Checks attributes, nameAlg, key size/curve and scheme, in that order,
    /// and computes the Name.
    pub fn new(public: TpmtPublic) -> Result<Self, PublicError> {
        let a = &public.area;
        let fail = |c| Err(PublicError::AkCheck(c));
        let required = [
            (attr::RESTRICTED, AkCheck::Restricted),
            (attr::SIGN, AkCheck::Sign),
            (attr::FIXED_TPM, AkCheck::FixedTpm),
            (attr::FIXED_PARENT, AkCheck::FixedParent),
            (attr::SENSITIVE_DATA_ORIGIN, AkCheck::SensitiveDataOrigin),
        ];
        for (bit, check) in required {
            if a.attributes & bit == 0 {
                return fail(check);
            }
        }
        if a.attributes & attr::DECRYPT != 0 {
            return fail(AkCheck::DecryptClear);
        }
        if a.name_alg != alg::SHA256 {
            return fail(AkCheck::NameAlgSha256);
        }
        let scheme = a.scheme.map(|s| (s.alg, HashAlg::from_id(s.hash)));
        let scheme = match &a.key {
            KeyParams::Rsa {
                key_bits, modulus, ..
            } => {
                if !(2048..=4096).contains(key_bits) || modulus.len() * 8 != usize::from(*key_bits)
                {
                    return fail(AkCheck::RsaKeyBits);
                }
                match scheme {
                    Some((alg::RSASSA, Some(HashAlg::Sha256))) => (alg::RSASSA, HashAlg::Sha256),
                    _ => return fail(AkCheck::SigningScheme),
                }
            }
            KeyParams::Ecc { curve, x, y, .. } => {
                match coordinate_len(*curve) {
                    Some(n) if !x.is_empty() && x.len() <= n && !y.is_empty() && y.len() <= n => {}
                    _ => return fail(AkCheck::EccCurve),
                }
                match scheme {
                    Some((alg::ECDSA, Some(h @ (HashAlg::Sha256 | HashAlg::Sha384)))) => {
                        (alg::ECDSA, h)
                    }
                    _ => return fail(AkCheck::SigningScheme),
                }
            }
        };
        let name = public.name()?;
        Ok(Self {
            public,
            name,
            scheme,
        })
    }

    pub fn public(&self) -> &TpmtPublic {
        &self.public
    }

    /// The Name to use in MakeCredential (TPM2B_NAME contents).
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The signing scheme (RSASSA or ECDSA) and its hash.
    pub fn scheme(&self) -> (u16, HashAlg) {
        self.scheme
    }
}
