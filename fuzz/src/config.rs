//! A config file as an operator (or anyone who can write it) leaves it:
//! the agent's and the authority's parse-and-validate, on the same text.

use crate::data;

pub fn fuzz_one(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = tessera_agent::config::Config::parse(text);
    let _ = tessera_authority::config::Config::parse(text);
}

pub fn seeds() -> Vec<Vec<u8>> {
    data::read_all("packaging", ".toml")
}
