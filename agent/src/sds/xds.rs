//! State-of-the-world xDS bookkeeping for one SDS stream: which names the
//! client subscribed to, what was last sent, and what each request means
//! (first, ACK, NACK, stale). Pure, so every rule is a table-driven test.

use super::service::truncate;
use std::collections::BTreeSet;

/// The last response on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub version: String,
    pub nonce: String,
    /// Whether a request already ACKed or NACKed it.
    pub answered: bool,
}

/// What a request says about the last response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Nothing was sent yet on this stream.
    Initial,
    /// The last response was applied.
    Ack,
    /// The last response was rejected (with Envoy's reason).
    Nack(String),
    /// It answers an older response; ignored as a whole.
    Stale,
    /// The last response was already ACKed or NACKed: only a change of names
    /// counts, so a client repeating a NACK cannot flood the log.
    Repeat,
}

/// The part of a `DiscoveryRequest` the bookkeeping reads.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub names: &'a [String],
    pub version_info: &'a str,
    pub response_nonce: &'a str,
    /// `error_detail.message`, when Envoy set `error_detail`.
    pub error: Option<&'a str>,
}

/// What to do about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: Kind,
    /// Answer now: the first request, or the subscribed names changed.
    pub respond: bool,
}

#[derive(Debug, Default)]
pub struct Xds {
    names: Option<BTreeSet<String>>,
    sent: Option<Sent>,
}

impl Xds {
    /// The names subscribed to; `None` before the first request.
    pub fn names(&self) -> Option<&BTreeSet<String>> {
        self.names.as_ref()
    }

    pub fn on_request(&mut self, r: Received<'_>) -> Step {
        let kind = match &mut self.sent {
            None => Kind::Initial,
            Some(s) if r.response_nonce != s.nonce => {
                return Step {
                    kind: Kind::Stale,
                    respond: false,
                }
            }
            Some(s) if s.answered => Kind::Repeat,
            Some(s) => {
                s.answered = true;
                match r.error {
                    Some(msg) => Kind::Nack(truncate(msg).to_string()),
                    // Without a reason: the client kept another version than the one sent.
                    None if r.version_info != s.version => Kind::Nack(format!(
                        "the client kept version {:?} instead of {:?}",
                        truncate(r.version_info),
                        s.version
                    )),
                    None => Kind::Ack,
                }
            }
        };
        // Empty names are dropped: an empty set means "everything".
        let names: BTreeSet<String> = r.names.iter().filter(|n| !n.is_empty()).cloned().collect();
        let respond = self.names.as_ref() != Some(&names);
        self.names = Some(names);
        Step { kind, respond }
    }

    /// After the cache changed: push `version` only to a subscribed client
    /// that was not last sent this very version (so neither an ACKed nor a
    /// NACKed version goes out twice).
    pub fn wants_push(&self, version: &str) -> bool {
        self.names.is_some() && self.sent.as_ref().is_none_or(|s| s.version != version)
    }

    pub fn sent(&mut self, version: String, nonce: String) {
        self.sent = Some(Sent {
            version,
            nonce,
            answered: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// One request of a scripted exchange and the step it must give.
    struct Case {
        what: &'static str,
        names: &'static [&'static str],
        version: &'static str,
        nonce: &'static str,
        error: Option<&'static str>,
        kind: Kind,
        respond: bool,
        /// What the server sends after this step, if it responds.
        then_send: Option<(&'static str, &'static str)>,
    }

    fn run(cases: &[Case]) {
        let mut x = Xds::default();
        for c in cases {
            let names = v(c.names);
            let step = x.on_request(Received {
                names: &names,
                version_info: c.version,
                response_nonce: c.nonce,
                error: c.error,
            });
            assert_eq!(
                step,
                Step {
                    kind: c.kind.clone(),
                    respond: c.respond
                },
                "{}",
                c.what
            );
            if let Some((version, nonce)) = c.then_send {
                x.sent(version.into(), nonce.into());
            }
        }
    }

    #[test]
    fn exchanges() {
        use Kind::*;
        let nack = |m: &str| Nack(m.to_string());
        #[rustfmt::skip]
        let cases = [
            Case { what: "first request", names: &["default"], version: "", nonce: "", error: None, kind: Initial, respond: true, then_send: Some(("v1", "n1")) },
            Case { what: "ACK", names: &["default"], version: "v1", nonce: "n1", error: None, kind: Ack, respond: false, then_send: None },
            Case { what: "ACK again (duplicate)", names: &["default"], version: "v1", nonce: "n1", error: None, kind: Repeat, respond: false, then_send: None },
            Case { what: "stale nonce, even with new names", names: &["ROOTCA"], version: "v1", nonce: "n0", error: None, kind: Stale, respond: false, then_send: None },
            Case { what: "ACK with more names", names: &["default", "ROOTCA"], version: "v1", nonce: "n1", error: None, kind: Repeat, respond: true, then_send: Some(("v2", "n2")) },
            Case { what: "NACK with a reason, names in another order", names: &["ROOTCA", "default", ""], version: "v1", nonce: "n2", error: Some("bad key"), kind: nack("bad key"), respond: false, then_send: None },
            Case { what: "the NACK repeated: not a second NACK", names: &["ROOTCA", "default"], version: "v1", nonce: "n2", error: Some("bad key"), kind: Repeat, respond: false, then_send: None },
            Case { what: "a repeat that changes the names", names: &["ROOTCA"], version: "v1", nonce: "n2", error: Some("bad key"), kind: Repeat, respond: true, then_send: Some(("v3", "n3")) },
            Case { what: "NACK by keeping the old version", names: &["ROOTCA"], version: "v1", nonce: "n3", error: None, kind: nack("the client kept version \"v1\" instead of \"v3\""), respond: false, then_send: Some(("v4", "n4")) },
            Case { what: "NACK that also changes the names", names: &["default"], version: "v1", nonce: "n4", error: Some("bad key"), kind: nack("bad key"), respond: true, then_send: Some(("v5", "n5")) },
            Case { what: "old nonce after a newer response", names: &["ROOTCA"], version: "v2", nonce: "n2", error: None, kind: Stale, respond: false, then_send: None },
            Case { what: "ACK with empty names: everything", names: &[], version: "v5", nonce: "n5", error: None, kind: Ack, respond: true, then_send: None },
        ];
        run(&cases);
    }

    #[test]
    fn a_nack_reason_is_kept_short() {
        let mut x = Xds::default();
        let names = v(&["default"]);
        let first = Received {
            names: &names,
            version_info: "",
            response_nonce: "",
            error: None,
        };
        x.on_request(first);
        x.sent("v1".into(), "n1".into());
        let long = "x".repeat(1 << 16);
        let step = x.on_request(Received {
            response_nonce: "n1",
            error: Some(&long),
            ..first
        });
        assert!(matches!(step.kind, Kind::Nack(m) if m.len() == 256));
    }

    #[test]
    fn reconnect_with_an_old_nonce_is_a_first_request() {
        #[rustfmt::skip]
        let cases = [Case { what: "first request of a new stream", names: &["default"], version: "v9", nonce: "old", error: None, kind: Kind::Initial, respond: true, then_send: None }];
        run(&cases);
    }

    #[test]
    fn pushes() {
        let mut x = Xds::default();
        assert!(!x.wants_push("v1"), "nothing subscribed yet");
        let names = v(&["default"]);
        let r = Received {
            names: &names,
            version_info: "",
            response_nonce: "",
            error: None,
        };
        x.on_request(r);
        assert!(x.wants_push("v1"), "subscribed, nothing sent");
        x.sent("v1".into(), "n1".into());
        assert!(!x.wants_push("v1"), "same content");
        assert!(x.wants_push("v2"), "changed content");
        x.sent("v2".into(), "n2".into());
        // A NACK of v2 does not make v2 worth sending again.
        x.on_request(Received {
            version_info: "v1",
            response_nonce: "n2",
            error: Some("no"),
            ..r
        });
        assert!(!x.wants_push("v2"));
        assert!(x.wants_push("v3"));
    }
}
