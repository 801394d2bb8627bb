//! tracing setup shared by both daemons.

use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// The filter's reload handle, and whether TESSERA_LOG chose the filter.
static RELOAD: OnceLock<(reload::Handle<EnvFilter, Registry>, bool)> = OnceLock::new();

/// Human-readable logs to stderr; `json` for machine ingestion. Under systemd
/// (JOURNAL_STREAM set) timestamps are left to the journal. Colour codes only
/// when stderr is a terminal and NO_COLOR is unset: a journal, file or pipe
/// gets plain text. A non-empty TESSERA_LOG overrides `level`, also across
/// reloads.
pub fn init(level: &str, json: bool) {
    let from_env = std::env::var("TESSERA_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| EnvFilter::try_new(s).ok());
    let env_override = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match (json, under_journal) {
        (true, _) => fmt.json().boxed(),
        (false, true) => fmt.without_time().boxed(),
        (false, false) => fmt.boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = RELOAD.set((handle, env_override));
    }
}

/// Checks a `[log] level` value (an EnvFilter directive such as `info` or
/// `info,tessera_agent=debug`).
pub fn check_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("log.level: {level:?}: {e}"))
}

/// Applies a new level at run time (SIGHUP). Ok(false) when nothing changed
/// because TESSERA_LOG overrides the config or logging was not set up here.
pub fn set_level(level: &str) -> Result<bool, String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level: {level:?}: {e}"))?;
    match RELOAD.get() {
        Some((_, true)) | None => Ok(false),
        Some((handle, false)) => handle
            .reload(filter)
            .map(|_| true)
            .map_err(|e| format!("log.level: {e}")),
    }
}

/// After a SIGHUP re-read of `path`: warns once per changed field that only a
/// restart applies, then sets the log level (`info` when unset).
pub fn apply_reload(path: &std::path::Path, restart_fields: &[&'static str], level: Option<&str>) {
    for field in restart_fields {
        tracing::warn!(
            field,
            "SIGHUP: {field} changed in {}; it takes effect only after a restart",
            path.display()
        );
    }
    let level = level.unwrap_or("info");
    match set_level(level) {
        Ok(true) => tracing::info!(level, "SIGHUP: log level set"),
        Ok(false) => {
            tracing::info!("SIGHUP: log level unchanged: TESSERA_LOG overrides [log] level")
        }
        Err(e) => tracing::warn!(error = %e, "SIGHUP: log level unchanged"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked_and_errors_name_the_field() {
        assert!(check_level("info").is_ok());
        assert!(check_level("info,tessera_agent=debug").is_ok());
        let e = check_level("tessera=loud").unwrap_err();
        assert!(e.starts_with("log.level:"), "{e}");
        // A bad level is refused before anything changes.
        assert!(set_level("tessera=loud").is_err());
    }
}
