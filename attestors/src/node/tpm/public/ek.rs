//! Recognition of the TCG EK Credential Profile templates (L-1/L-2 low range,
//! H-1..H-3, H-6, H-7 high range). The template fixes the nameAlg and the
//! symmetric algorithm that MakeCredential must use.

use super::super::wire::{alg, curve, HashAlg};
use super::{attr, coordinate_len, KeyParams, PublicError, SymDef, TpmtPublic};

/// fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt.
const LOW_ATTRS: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::ADMIN_WITH_POLICY
    | attr::RESTRICTED
    | attr::DECRYPT;
/// The high-range templates add userWithAuth (0x000300f2).
const HIGH_ATTRS: u32 = LOW_ATTRS | attr::USER_WITH_AUTH;

/// PolicyA (PolicySecret(TPM_RH_ENDORSEMENT)), SHA-256.
const POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];
/// PolicyB = PolicyOR(PolicyA, PolicyC), SHA-256.
const POLICY_B_SHA256: [u8; 32] = [
    0xca, 0x3d, 0x0a, 0x99, 0xa2, 0xb9, 0x39, 0x06, 0xf7, 0xa3, 0x34, 0x24, 0x14, 0xef, 0xcf, 0xb3,
    0xa3, 0x85, 0xd4, 0x4c, 0xd1, 0xfd, 0x45, 0x90, 0x89, 0xd1, 0x9b, 0x50, 0x71, 0xc0, 0xb7, 0xa0,
];
/// PolicyB, SHA-384.
const POLICY_B_SHA384: [u8; 48] = [
    0xb2, 0x6e, 0x7d, 0x28, 0xd1, 0x1a, 0x50, 0xbc, 0x53, 0xd8, 0x82, 0xbc, 0xf5, 0xfd, 0x3a, 0x1a,
    0x07, 0x41, 0x48, 0xbb, 0x35, 0xd3, 0xb4, 0xe4, 0xcb, 0x1c, 0x0a, 0xd9, 0xbd, 0xe4, 0x19, 0xca,
    0xcb, 0x47, 0xba, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0f, 0x9f, 0xc0, 0x00, 0xf3, 0xf8, 0x0e, 0x12,
];

/// A recognised TCG EK template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EkTemplate {
    /// L-1: RSA-2048, SHA-256, AES-128-CFB, PolicyA.
    L1Rsa2048,
    /// L-2: ECC P-256, SHA-256, AES-128-CFB, PolicyA.
    L2EccP256,
    /// H-1: RSA-2048, SHA-256, AES-128-CFB, PolicyB.
    H1Rsa2048,
    /// H-2: ECC P-256, SHA-256, AES-128-CFB, PolicyB.
    H2EccP256,
    /// H-3: ECC P-384, SHA-384, AES-256-CFB, PolicyB.
    H3EccP384,
    /// H-6: RSA-3072, SHA-384, AES-256-CFB, PolicyB.
    H6Rsa3072,
    /// H-7: RSA-4096, SHA-384, AES-256-CFB, PolicyB.
    H7Rsa4096,
}

enum Key {
    Rsa(u16),
    Ecc(u16),
}

impl EkTemplate {
    const ALL: [Self; 7] = [
        Self::L1Rsa2048,
        Self::L2EccP256,
        Self::H1Rsa2048,
        Self::H2EccP256,
        Self::H3EccP384,
        Self::H6Rsa3072,
        Self::H7Rsa4096,
    ];

    fn spec(self) -> (u32, &'static [u8], HashAlg, u16, Key) {
        use EkTemplate::*;
        match self {
            L1Rsa2048 => (
                LOW_ATTRS,
                &POLICY_A_SHA256,
                HashAlg::Sha256,
                128,
                Key::Rsa(2048),
            ),
            L2EccP256 => (
                LOW_ATTRS,
                &POLICY_A_SHA256,
                HashAlg::Sha256,
                128,
                Key::Ecc(curve::NIST_P256),
            ),
            H1Rsa2048 => (
                HIGH_ATTRS,
                &POLICY_B_SHA256,
                HashAlg::Sha256,
                128,
                Key::Rsa(2048),
            ),
            H2EccP256 => (
                HIGH_ATTRS,
                &POLICY_B_SHA256,
                HashAlg::Sha256,
                128,
                Key::Ecc(curve::NIST_P256),
            ),
            H3EccP384 => (
                HIGH_ATTRS,
                &POLICY_B_SHA384,
                HashAlg::Sha384,
                256,
                Key::Ecc(curve::NIST_P384),
            ),
            H6Rsa3072 => (
                HIGH_ATTRS,
                &POLICY_B_SHA384,
                HashAlg::Sha384,
                256,
                Key::Rsa(3072),
            ),
            H7Rsa4096 => (
                HIGH_ATTRS,
                &POLICY_B_SHA384,
                HashAlg::Sha384,
                256,
                Key::Rsa(4096),
            ),
        }
    }

    /// The name the EK Credential Profile gives it ("L-1", "H-3", …), as in configs.
    pub fn name(self) -> &'static str {
        use EkTemplate::*;
        match self {
            L1Rsa2048 => "L-1",
            L2EccP256 => "L-2",
            H1Rsa2048 => "H-1",
            H2EccP256 => "H-2",
            H3EccP384 => "H-3",
            H6Rsa3072 => "H-6",
            H7Rsa4096 => "H-7",
        }
    }

    /// The NV index where the EK Credential Profile stores this template's certificate.
    pub fn cert_nv_index(self) -> u32 {
        use EkTemplate::*;
        match self {
            L1Rsa2048 => 0x01C0_0002,
            L2EccP256 => 0x01C0_000A,
            H1Rsa2048 => 0x01C0_0012,
            H2EccP256 => 0x01C0_0014,
            H3EccP384 => 0x01C0_0016,
            H6Rsa3072 => 0x01C0_001C,
            H7Rsa4096 => 0x01C0_001E,
        }
    }

    /// The EK's nameAlg: the hash of MakeCredential's KDFs, OAEP and HMAC.
    pub fn name_alg(self) -> HashAlg {
        self.spec().2
    }

    /// The EK's symmetric definition: AES-CFB with 128 or 256-bit keys.
    pub fn symmetric(self) -> SymDef {
        SymDef {
            alg: alg::AES,
            key_bits: self.spec().3,
            mode: alg::CFB,
        }
    }

    fn matches(self, public: &TpmtPublic) -> bool {
        let (attrs, policy, name_alg, sym_bits, key) = self.spec();
        let a = &public.area;
        let key_ok = match (key, &a.key) {
            (
                Key::Rsa(bits),
                KeyParams::Rsa {
                    key_bits,
                    exponent,
                    modulus,
                },
            ) => *key_bits == bits && *exponent == 0 && modulus.len() * 8 == usize::from(bits),
            (Key::Ecc(c), KeyParams::Ecc { curve, kdf, x, y }) => {
                let n = coordinate_len(c).unwrap_or(0);
                *curve == c && kdf.is_none() && x.len() == n && y.len() == n
            }
            _ => false,
        };
        key_ok
            && a.attributes == attrs
            && a.name_alg == name_alg.id()
            && a.auth_policy == policy
            && a.symmetric == Some(self.symmetric())
            && a.symmetric.map(|s| s.key_bits) == Some(sym_bits)
            && a.scheme.is_none()
    }
}

impl std::fmt::Display for EkTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EkTemplate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
                format!("{s:?} is not an EK template (one of {})", names.join(", "))
            })
    }
}

impl TpmtPublic {
    /// The TCG EK template this public area was created from, if any
    /// (TPM.md §1.4 item 4: attributes, authPolicy, algorithms, key size).
    pub fn ek_template(&self) -> Result<EkTemplate, PublicError> {
        EkTemplate::ALL
            .into_iter()
            .find(|t| t.matches(self))
            .ok_or(PublicError::NotEkTemplate)
    }
}
