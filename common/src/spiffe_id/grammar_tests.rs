//! The parser against the SPIFFE-ID standard's grammar (§2), restated here
//! as one regular expression plus the two length limits: whatever the
//! generators produce, the parser accepts exactly what the grammar does.

use super::{SpiffeId, MAX_ID_LEN, MAX_TD_LEN};
use proptest::prelude::*;
use regex::Regex;
use std::sync::LazyLock;

/// `spiffe://` trust-domain path: a trust domain of lowercase letters,
/// digits, `.`, `-`, `_`; a path of `/`-separated non-empty segments of
/// letters, digits, `.`, `-`, `_` that are not `.` or `..`, no trailing `/`.
/// No port, user info, query, fragment or percent-encoding.
static GRAMMAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^spiffe://([a-z0-9._-]+)((?:/[A-Za-z0-9._-]+)*)$").expect("a valid regex")
});

fn grammar_accepts(s: &str) -> bool {
    let Some(c) = GRAMMAR.captures(s) else {
        return false;
    };
    let path = &c[2];
    s.len() <= MAX_ID_LEN
        && c[1].len() <= MAX_TD_LEN
        && path.split('/').skip(1).all(|seg| seg != "." && seg != "..")
}

fn scheme() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("spiffe://".to_string()),
        1 => Just("SPIFFE://".to_string()),
        1 => Just("spiffe:/".to_string()),
        1 => Just("spiffe:".to_string()),
        1 => Just("https://".to_string()),
        1 => Just(String::new()),
    ]
}

fn trust_domain() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9._-]{1,12}",
        2 => "[a-zA-Z0-9._:@%-]{0,12}",
        1 => "[a-z]{250,260}",
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[A-Za-z0-9._-]{1,8}",
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just(String::new()),
        2 => "[A-Za-z0-9._%?#@: é/-]{1,6}",
    ]
}

fn id_like() -> impl Strategy<Value = String> {
    (
        scheme(),
        trust_domain(),
        prop::collection::vec(segment(), 0..6),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(scheme, td, segs, trailing)| {
            let mut s = scheme + &td;
            for seg in segs {
                s.push('/');
                s.push_str(&seg);
            }
            if trailing {
                s.push('/');
            }
            s
        })
}

/// IDs around the 2048-byte limit: one long last segment.
fn near_limit() -> impl Strategy<Value = String> {
    (2030usize..2060).prop_map(|len| {
        let head = "spiffe://example.org/";
        format!("{head}{}", "a".repeat(len - head.len()))
    })
}

fn check(s: &str) -> Result<(), TestCaseError> {
    let parsed = s.parse::<SpiffeId>();
    prop_assert_eq!(parsed.is_ok(), grammar_accepts(s), "{:?}: {:?}", s, parsed);
    if let Ok(id) = parsed {
        prop_assert_eq!(id.as_str(), s);
        prop_assert_eq!(id.to_string(), s);
        let rebuilt = format!("spiffe://{}{}", id.trust_domain(), id.path());
        prop_assert_eq!(rebuilt.as_str(), s);
        prop_assert_eq!(id.trust_domain().id(id.path()), Ok(id.clone()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parser_accepts_exactly_the_grammar(s in id_like()) {
        check(&s)?;
    }

    #[test]
    fn arbitrary_strings_follow_the_grammar(s in any::<String>()) {
        check(&s)?;
        check(&format!("spiffe://{s}"))?;
        check(&format!("spiffe://example.org/{s}"))?;
    }

    #[test]
    fn the_length_limit_is_exact(s in near_limit()) {
        check(&s)?;
    }
}
