//! Node attestors: how a host proves itself to the authority.

pub mod join_token;
