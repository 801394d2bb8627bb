//! Secrets in memory: key bytes and tokens that never print in `Debug` (a
//! `?value` in a log line shows a length, not the secret) and are wiped when
//! dropped. Copies handed to crates that own their buffers (prost messages,
//! rustls, aws-lc-rs) are the crates' business; aws-lc-rs wipes its keys.

use std::fmt;
use std::ops::Deref;
use zeroize::Zeroizing;

/// Secret bytes (PKCS#8 DER, activation secrets).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl Deref for SecretBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

/// A secret string (join tokens, JWT-SVIDs held for reuse).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} chars>", self.0.chars().count())
    }
}

/// Config files carry join tokens.
impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_length_not_bytes() {
        // 0xAB renders as "171" in a derived Debug of the bytes.
        let s = SecretBytes::new(vec![0xAB; 5]);
        let shown = format!("{s:?}");
        assert!(!shown.contains("171"), "{shown}");
        assert_eq!(shown, "<redacted 5 bytes>");
        assert_eq!(&*s, &[0xAB; 5]);
    }

    #[test]
    fn debug_hides_string() {
        let s = SecretString::new("join-me-now".into());
        let shown = format!("{s:?}");
        assert!(!shown.contains("join-me-now"), "{shown}");
        assert_eq!(s.expose(), "join-me-now");
    }
}
