//! Join tokens: single-use secrets an operator hands to a host without a TPM.
//! The agent sends the token; the authority checks and consumes it.

use tessera_common::secret::SecretString;

/// Method name on the wire and in configs.
pub const METHOD: &str = "join_token";

/// Tokens are 128 random bits as 32 lowercase hex characters, so they are
/// valid SPIFFE ID path segments.
const TOKEN_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinTokenError {
    #[error("join token must be {TOKEN_LEN} lowercase hex characters")]
    Format,
}

/// A fresh random token.
pub fn generate() -> String {
    let bytes: [u8; TOKEN_LEN / 2] = rand::random();
    hex::encode(bytes)
}

/// Checks the form of a token (from a config file or the wire) before any lookup.
pub fn parse(raw: &[u8]) -> Result<&str, JoinTokenError> {
    let s = std::str::from_utf8(raw).map_err(|_| JoinTokenError::Format)?;
    if s.len() != TOKEN_LEN
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(JoinTokenError::Format);
    }
    Ok(s)
}

/// The agent ID path for a token: `/tessera/agent/join_token/<token>`.
pub fn agent_path(token: &str) -> String {
    format!("/tessera/agent/join_token/{token}")
}

/// Agent half: the token is the whole evidence.
pub struct JoinTokenEvidence(pub SecretString);

#[async_trait::async_trait]
impl super::NodeEvidence for JoinTokenEvidence {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn evidence(&self) -> Result<Vec<u8>, super::EvidenceError> {
        Ok(self.0.expose().as_bytes().to_vec())
    }

    async fn respond(&self, _: &[u8]) -> Result<Vec<u8>, super::EvidenceError> {
        Err(super::EvidenceError::UnexpectedChallenge(METHOD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = generate();
        assert_eq!(parse(a.as_bytes()), Ok(a.as_str()));
        assert_ne!(a, generate());
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in [
            "",
            "abc",
            &"A".repeat(32),
            &"g".repeat(32),
            &"a".repeat(33),
            "../../../../../../../../etc/passwd",
        ] {
            assert_eq!(parse(bad.as_bytes()), Err(JoinTokenError::Format), "{bad}");
        }
        assert_eq!(parse(&[0xff; 32]), Err(JoinTokenError::Format));
    }
}
