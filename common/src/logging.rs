//! tracing setup shared by both daemons.

use tracing_subscriber::EnvFilter;

/// Human-readable logs to stderr; `json` for machine ingestion. Under systemd
/// (JOURNAL_STREAM set) timestamps are left to the journal.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match (json, under_journal) {
        (true, _) => builder.json().try_init(),
        (false, true) => builder.without_time().try_init(),
        (false, false) => builder.try_init(),
    };
    let _ = res;
}
