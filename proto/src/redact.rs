//! `Debug` for the messages that carry a private key, a bearer token or a TPM
//! secret (listed in build.rs, which stops prost deriving it): such a field
//! prints as its length only, so a `{:?}` in a log line cannot leak it.

use crate::authority::{
    attest_request, AttestBegin, AttestRequest, GenerateTokenResponse, SignJwtResponse,
};
use crate::tpm::{helper, ChallengeResponse};
use crate::workload::{Jwtsvid, ValidateJwtsvidRequest, Witsvid, X509svid};
use std::fmt;

/// Prints `<redacted, N bytes>` in place of a secret field.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

impl fmt::Debug for X509svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("x509_svid", &self.x509_svid)
            .field("x509_svid_key", &Redacted(self.x509_svid_key.len()))
            .field("bundle", &self.bundle)
            .field("hint", &self.hint)
            .finish()
    }
}

impl fmt::Debug for Jwtsvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwtsvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("svid", &Redacted(self.svid.len()))
            .field("hint", &self.hint)
            .finish()
    }
}

impl fmt::Debug for Witsvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Witsvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("wit_svid", &self.wit_svid)
            .field("wit_svid_key", &Redacted(self.wit_svid_key.len()))
            .field("hint", &self.hint)
            .finish()
    }
}

impl fmt::Debug for ValidateJwtsvidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateJwtsvidRequest")
            .field("audience", &self.audience)
            .field("svid", &Redacted(self.svid.len()))
            .finish()
    }
}

impl fmt::Debug for AttestRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestRequest")
            .field("step", &self.step)
            .finish()
    }
}

impl fmt::Debug for attest_request::Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Begin(b) => f.debug_tuple("Begin").field(b).finish(),
            // The TPM's answer to the credential challenge: its secret.
            Self::ChallengeResponse(r) => f
                .debug_tuple("ChallengeResponse")
                .field(&Redacted(r.len()))
                .finish(),
        }
    }
}

impl fmt::Debug for AttestBegin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A join-token agent's payload is its token.
        f.debug_struct("AttestBegin")
            .field("method", &self.method)
            .field("payload", &Redacted(self.payload.len()))
            .field("csr", &self.csr)
            .finish()
    }
}

impl fmt::Debug for SignJwtResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignJwtResponse")
            .field("token", &Redacted(self.token.len()))
            .field("expires_at", &self.expires_at)
            .field("status", &self.status)
            .finish()
    }
}

impl fmt::Debug for GenerateTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateTokenResponse")
            .field("token", &Redacted(self.token.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for ChallengeResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengeResponse")
            .field("secret", &Redacted(self.secret.len()))
            .field("quote", &self.quote)
            .field("signature", &self.signature)
            .field("pcr_values", &self.pcr_values)
            .finish()
    }
}

impl fmt::Debug for helper::Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("secret", &Redacted(self.secret.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value-that-must-not-print";

    /// Debug output of `v` with the secret neither as text nor as the byte
    /// list a derived `Debug` prints for `Vec<u8>`.
    fn assert_hidden(what: &str, v: &dyn fmt::Debug) {
        let out = format!("{v:?}");
        let bytes = format!("{:?}", SECRET.as_bytes());
        let bytes = &bytes[1..bytes.len() - 1];
        assert!(
            !out.contains(SECRET) && !out.contains(bytes),
            "{what}: {out}"
        );
        assert!(
            out.contains(&format!("<redacted, {} bytes>", SECRET.len())),
            "{what}: {out}"
        );
    }

    #[test]
    fn every_secret_bearing_message_prints_only_the_secrets_length() {
        let s = || SECRET.to_string();
        let b = || SECRET.as_bytes().to_vec();
        let begin = AttestBegin {
            method: "join_token".into(),
            payload: b(),
            csr: vec![1],
        };
        let cases: [(&str, &dyn fmt::Debug); 11] = [
            (
                "X509SVID",
                &X509svid {
                    x509_svid_key: b(),
                    ..Default::default()
                },
            ),
            (
                "JWTSVID",
                &Jwtsvid {
                    svid: s(),
                    ..Default::default()
                },
            ),
            (
                "WITSVID",
                &Witsvid {
                    wit_svid_key: s(),
                    ..Default::default()
                },
            ),
            (
                "ValidateJWTSVIDRequest",
                &ValidateJwtsvidRequest {
                    svid: s(),
                    ..Default::default()
                },
            ),
            ("AttestBegin", &begin),
            (
                "AttestRequest begin",
                &AttestRequest {
                    step: Some(attest_request::Step::Begin(begin.clone())),
                },
            ),
            (
                "AttestRequest challenge response",
                &AttestRequest {
                    step: Some(attest_request::Step::ChallengeResponse(b())),
                },
            ),
            (
                "SignJwtResponse",
                &SignJwtResponse {
                    token: s(),
                    ..Default::default()
                },
            ),
            (
                "GenerateTokenResponse",
                &GenerateTokenResponse {
                    token: s(),
                    ..Default::default()
                },
            ),
            (
                "ChallengeResponse",
                &ChallengeResponse {
                    secret: b(),
                    ..Default::default()
                },
            ),
            ("tpm helper Secret", &helper::Secret { secret: b() }),
        ];
        for (what, v) in cases {
            assert_hidden(what, v);
        }
    }

    #[test]
    fn fields_that_are_not_secret_still_print() {
        let svid = X509svid {
            spiffe_id: "spiffe://example.org/web".into(),
            hint: "internal".into(),
            ..Default::default()
        };
        let out = format!("{svid:?}");
        assert!(
            out.contains("spiffe://example.org/web") && out.contains("internal"),
            "{out}"
        );
    }
}
