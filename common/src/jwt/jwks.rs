//! JWK Sets (RFC 7517) of JWT authorities.

use super::{
    b64_decode, b64_encode, clip, Alg, JwtError, StrictObject, MAX_JWKS_BYTES, MAX_JWKS_KEYS,
};
use aws_lc_rs::signature::{
    ParsedPublicKey, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED,
    ECDSA_P521_SHA512_FIXED, RSA_PKCS1_2048_8192_SHA256,
};
use serde_json::{json, Map, Value};
use std::collections::HashSet;

const MAX_KID_LEN: usize = 256;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn parse(s: &str) -> Option<Curve> {
        match s {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    fn coord_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The only JWS alg each curve may be used with (RFC 7518 §3.4).
    pub(crate) fn alg(self) -> Alg {
        match self {
            Curve::P256 => Alg::ES256,
            Curve::P384 => Alg::ES384,
            Curve::P521 => Alg::ES512,
        }
    }

    pub(crate) fn verification_alg(
        self,
    ) -> &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &ECDSA_P521_SHA512_FIXED,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyMaterial {
    Ec {
        crv: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// Big-endian, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl KeyMaterial {
    /// The uncompressed SEC1 point `04 || x || y` (empty for RSA).
    pub(crate) fn ec_point(&self) -> Vec<u8> {
        match self {
            KeyMaterial::Ec { x, y, .. } => [&[4u8][..], x, y].concat(),
            KeyMaterial::Rsa { .. } => Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JwtKey {
    pub(crate) kid: String,
    /// The JWK's own `alg`, if it pins one.
    pub(crate) alg: Option<Alg>,
    pub(crate) material: KeyMaterial,
}

impl JwtKey {
    /// Whether this key may verify a token with `alg` (kty/crv and the JWK's `alg` must fit).
    pub(crate) fn fits(&self, alg: Alg) -> Result<(), String> {
        if let Some(pinned) = self.alg {
            if pinned != alg {
                return Err(format!("key is pinned to {}", pinned.name()));
            }
        }
        match (&self.material, alg) {
            (KeyMaterial::Ec { crv, .. }, _) if crv.alg() == alg => Ok(()),
            (KeyMaterial::Ec { crv, .. }, _) => Err(format!("EC {} key", crv.name())),
            (
                KeyMaterial::Rsa { .. },
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
            ) => Ok(()),
            (KeyMaterial::Rsa { .. }, _) => Err("RSA key".to_string()),
        }
    }

    fn to_jwk(&self) -> Value {
        let mut m = Map::new();
        match &self.material {
            KeyMaterial::Ec { crv, x, y } => {
                m.insert("kty".into(), json!("EC"));
                m.insert("crv".into(), json!(crv.name()));
                m.insert("x".into(), json!(b64_encode(x)));
                m.insert("y".into(), json!(b64_encode(y)));
            }
            KeyMaterial::Rsa { n, e } => {
                m.insert("kty".into(), json!("RSA"));
                m.insert("n".into(), json!(b64_encode(n)));
                m.insert("e".into(), json!(b64_encode(e)));
            }
        }
        m.insert("kid".into(), json!(self.kid));
        if let Some(alg) = self.alg {
            m.insert("alg".into(), json!(alg.name()));
        }
        Value::Object(m)
    }

    /// `Ok(None)`: a key this set ignores (RFC 7517 §5: unknown kty; or not a signing key).
    fn from_jwk(m: &Map<String, Value>) -> Result<Option<JwtKey>, JwtError> {
        let kty = str_member(m, "kty")?.ok_or_else(|| bad("key without kty"))?;
        if kty != "EC" && kty != "RSA" {
            return Ok(None);
        }
        // SPIFFE bundles mark X.509 authorities with use=x509-svid; those are not ours.
        if let Some(u) = str_member(m, "use")? {
            if u != "sig" && u != "jwt-svid" {
                return Ok(None);
            }
        }
        // A published private key means the authority key has leaked: refuse loudly.
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            if m.contains_key(private) {
                return Err(bad("key holds private key material"));
            }
        }
        let kid = str_member(m, "kid")?.ok_or_else(|| bad("key without kid"))?;
        check_kid(kid).map_err(JwtError::Bundle)?;
        let alg = match str_member(m, "alg")? {
            None => None,
            Some(a) => Some(
                Alg::parse(a).ok_or_else(|| bad(&format!("key alg {:?} unsupported", clip(a))))?,
            ),
        };
        let material = if kty == "EC" {
            let crv = str_member(m, "crv")?.ok_or_else(|| bad("EC key without crv"))?;
            let crv = Curve::parse(crv)
                .ok_or_else(|| bad(&format!("curve {:?} unsupported", clip(crv))))?;
            let x = b64_member(m, "x")?;
            let y = b64_member(m, "y")?;
            if x.len() != crv.coord_len() || y.len() != crv.coord_len() {
                return Err(bad("EC coordinate has the wrong length"));
            }
            let material = KeyMaterial::Ec { crv, x, y };
            // Rejects points that are not on the curve.
            ParsedPublicKey::new(crv.verification_alg(), material.ec_point())
                .map_err(|e| bad(&format!("EC key rejected: {e}")))?;
            material
        } else {
            let n = strip_zeros(b64_member(m, "n")?);
            let e = strip_zeros(b64_member(m, "e")?);
            let bits = bit_len(&n);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(bad(&format!("RSA modulus of {bits} bits")));
            }
            RsaPublicKeyComponents { n: &n, e: &e }
                .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                .map_err(|e| bad(&format!("RSA key rejected: {e}")))?;
            KeyMaterial::Rsa { n, e }
        };
        let key = JwtKey {
            kid: kid.to_string(),
            alg,
            material,
        };
        if let Some(a) = alg {
            key.fits(a)
                .map_err(|e| bad(&format!("key alg {} contradicts the {e}", a.name())))?;
        }
        Ok(Some(key))
    }
}

/// A JWK Set (RFC 7517) of JWT authorities; every key has a unique kid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwtBundle {
    keys: Vec<JwtKey>,
}

impl JwtBundle {
    /// Parses a JWK Set. Also accepts a SPIFFE bundle document: its X.509 authorities
    /// (`use` other than `sig`/`jwt-svid`) and keys of unknown `kty` are ignored, as are
    /// members besides `keys`.
    pub fn from_jwks_json(bytes: &[u8]) -> Result<Self, JwtError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(bad(&format!("document larger than {MAX_JWKS_BYTES} bytes")));
        }
        let doc: StrictObject =
            serde_json::from_slice(bytes).map_err(|e| bad(&format!("not a JSON object: {e}")))?;
        match doc.0.get("keys") {
            Some(Value::Array(keys)) => Self::from_key_values(keys),
            Some(_) => Err(bad("keys is not an array")),
            None => Err(bad("no keys member")),
        }
    }

    /// A plain `{"keys":[...]}` with normalized JWKs (kty, kid, alg if pinned, crv/x/y or n/e).
    pub fn to_jwks_json(&self) -> Vec<u8> {
        let keys: Vec<Value> = self.keys.iter().map(JwtKey::to_jwk).collect();
        // Serializing a Value cannot fail.
        serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default()
    }

    pub fn from_keys(keys: Vec<Value>) -> Result<Self, JwtError> {
        Self::from_key_values(&keys)
    }

    /// The keys as normalized JWKs.
    pub fn keys(&self) -> Vec<Value> {
        self.keys.iter().map(JwtKey::to_jwk).collect()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.find(kid).is_some()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&JwtKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    fn from_key_values(values: &[Value]) -> Result<Self, JwtError> {
        if values.len() > MAX_JWKS_KEYS {
            return Err(bad(&format!("more than {MAX_JWKS_KEYS} keys")));
        }
        let mut keys = Vec::with_capacity(values.len());
        let mut seen = HashSet::new();
        for v in values {
            let m = v
                .as_object()
                .ok_or_else(|| bad("key is not a JSON object"))?;
            if let Some(key) = JwtKey::from_jwk(m)? {
                if !seen.insert(key.kid.clone()) {
                    return Err(bad(&format!("duplicate kid {:?}", clip(&key.kid))));
                }
                keys.push(key);
            }
        }
        Ok(JwtBundle { keys })
    }
}

pub(crate) fn check_kid(kid: &str) -> Result<(), String> {
    if kid.is_empty() || kid.len() > MAX_KID_LEN {
        return Err(format!("kid must be 1 to {MAX_KID_LEN} bytes"));
    }
    if kid.chars().any(char::is_control) {
        return Err("kid has control characters".to_string());
    }
    Ok(())
}

fn bad(msg: &str) -> JwtError {
    JwtError::Bundle(msg.to_string())
}

fn str_member<'a>(m: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, JwtError> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(&format!("key member {name} is not a string"))),
    }
}

fn b64_member(m: &Map<String, Value>, name: &str) -> Result<Vec<u8>, JwtError> {
    let s = str_member(m, name)?.ok_or_else(|| bad(&format!("key without {name}")))?;
    b64_decode(s).ok_or_else(|| bad(&format!("key member {name} is not base64url")))
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(b) => (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::JwtSigner;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

    fn bundle_err(r: Result<JwtBundle, JwtError>) -> String {
        match r {
            Err(JwtError::Bundle(m)) => m,
            other => panic!("expected a Bundle error, got {other:?}"),
        }
    }

    pub(crate) fn p384_jwk(kid: &str) -> (EcdsaKeyPair, Value) {
        let kp = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let pt = kp.public_key().as_ref().to_vec();
        let jwk = json!({"kty":"EC","crv":"P-384","kid":kid,
            "x":b64_encode(&pt[1..49]),"y":b64_encode(&pt[49..])});
        (kp, jwk)
    }

    #[test]
    fn jwks_round_trip() {
        let a = JwtSigner::generate().unwrap();
        let b = JwtSigner::generate().unwrap();
        let bundle = JwtBundle::from_keys(vec![a.public_jwk(), b.public_jwk()]).unwrap();
        assert_eq!(bundle.len(), 2);
        let json = bundle.to_jwks_json();
        let doc: Value = serde_json::from_slice(&json).unwrap();
        let obj = doc.as_object().unwrap();
        assert_eq!(obj.len(), 1, "plain JWK Set, nothing but keys");
        assert_eq!(doc["keys"][0], a.public_jwk());
        assert!(doc["keys"][0].get("use").is_none());
        let again = JwtBundle::from_jwks_json(&json).unwrap();
        assert_eq!(again, bundle);
        assert_eq!(again.kids().collect::<Vec<_>>(), vec![a.kid(), b.kid()]);
        assert!(again.contains_kid(a.kid()));
        assert!(!again.contains_kid("nope"));
    }

    #[test]
    fn jwks_rejects_duplicate_kid() {
        let a = JwtSigner::generate().unwrap();
        let m = bundle_err(JwtBundle::from_keys(vec![a.public_jwk(), a.public_jwk()]));
        assert!(m.contains("duplicate kid"), "{m}");
        let b = JwtSigner::generate().unwrap();
        let mut bj = b.public_jwk();
        bj["kid"] = json!(a.kid());
        let m = bundle_err(JwtBundle::from_keys(vec![a.public_jwk(), bj]));
        assert!(m.contains("duplicate kid"), "{m}");
    }

    #[test]
    fn jwks_rejects_missing_or_bad_kid() {
        let a = JwtSigner::generate().unwrap();
        let mut j = a.public_jwk();
        j.as_object_mut().unwrap().remove("kid");
        let m = bundle_err(JwtBundle::from_keys(vec![j]));
        assert!(m.contains("without kid"), "{m}");
        for kid in [json!(""), json!(7), json!("a\nb"), json!("k".repeat(300))] {
            let mut j = a.public_jwk();
            j["kid"] = kid;
            bundle_err(JwtBundle::from_keys(vec![j]));
        }
    }

    #[test]
    fn jwks_size_and_count_limits() {
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(bundle_err(JwtBundle::from_jwks_json(&big)).contains("larger"));
        let a = JwtSigner::generate().unwrap();
        let keys: Vec<Value> = (0..=MAX_JWKS_KEYS)
            .map(|i| {
                let mut j = a.public_jwk();
                j["kid"] = json!(format!("k{i}"));
                j
            })
            .collect();
        assert!(bundle_err(JwtBundle::from_keys(keys.clone())).contains("more than"));
        assert_eq!(
            JwtBundle::from_keys(keys[..MAX_JWKS_KEYS].to_vec())
                .unwrap()
                .len(),
            MAX_JWKS_KEYS
        );
    }

    #[test]
    fn jwks_rejects_malformed_documents() {
        for doc in [
            &b"[]"[..],
            b"{}",
            br#"{"keys":{}}"#,
            br#"{"keys":[1]}"#,
            b"not json",
            br#"{"keys":[],"keys":[]}"#,
        ] {
            bundle_err(JwtBundle::from_jwks_json(doc));
        }
        assert!(JwtBundle::from_jwks_json(br#"{"keys":[]}"#)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn jwks_rejects_bad_key_material() {
        let a = JwtSigner::generate().unwrap();
        let good = a.public_jwk();
        let cases: Vec<(&str, Value)> = vec![
            ("d", json!("AAAA")),
            ("crv", json!("secp256k1")),
            ("x", json!("AAAA")),
            ("y", json!(b64_encode(&[0u8; 32]))), // off the curve
            ("x", json!("not base64!")),
            ("alg", json!("ES384")), // contradicts the P-256 key
            ("alg", json!("HS256")),
        ];
        for (member, value) in cases {
            let mut j = good.clone();
            j[member] = value;
            bundle_err(JwtBundle::from_keys(vec![j]));
        }
        bundle_err(JwtBundle::from_keys(vec![json!("x")]));
        bundle_err(JwtBundle::from_keys(vec![json!({"kid":"a"})]));
    }

    #[test]
    fn jwks_ignores_foreign_keys_of_a_spiffe_bundle() {
        let a = JwtSigner::generate().unwrap();
        let mut jwt_key = a.public_jwk();
        jwt_key["use"] = json!("jwt-svid");
        let doc = json!({
            "spiffe_sequence": 3,
            "keys": [
                {"kty":"EC","crv":"P-256","use":"x509-svid","x5c":["AAAA"],"x":"AA","y":"AA"},
                {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"AAAA"},
                jwt_key,
            ]
        });
        let b = JwtBundle::from_jwks_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(b.kids().collect::<Vec<_>>(), vec![a.kid()]);
        assert_eq!(b.keys(), vec![a.public_jwk()]);
    }

    #[test]
    fn jwks_accepts_p384_and_rejects_small_rsa() {
        let (_, j) = p384_jwk("p384");
        let b = JwtBundle::from_keys(vec![j.clone()]).unwrap();
        assert_eq!(b.keys(), vec![j]);
        let small = json!({"kty":"RSA","kid":"r","n":b64_encode(&[0xC5u8; 128]),"e":"AQAB"});
        assert!(bundle_err(JwtBundle::from_keys(vec![small])).contains("1024 bits"));
    }

    #[test]
    fn key_fit() {
        let (_, j) = p384_jwk("p384");
        let b = JwtBundle::from_keys(vec![j]).unwrap();
        let k = b.find("p384").unwrap();
        assert!(k.fits(Alg::ES384).is_ok());
        assert!(k.fits(Alg::ES256).is_err());
        assert!(k.fits(Alg::RS256).is_err());
        assert_eq!(bit_len(&[0x01, 0]), 9);
        assert_eq!(strip_zeros(vec![0, 0, 5]), vec![5]);
    }
}
