//! Starting `tessera-agent-tpm`, which runs the TPM side of node attestation
//! (`[node_attestation] method = "tpm"`): the agent itself does not link
//! libtss2 (see tessera_attestors::node::tpm::helper).

use crate::config::Config;
use crate::run::BoxError;
use std::path::{Path, PathBuf};
use tessera_attestors::node::tpm::helper::{HelperCommand, TpmHelper, CALL_TIMEOUT};
use tessera_attestors::node::tpm::public::EkTemplate;

pub const HELPER_NAME: &str = "tessera-agent-tpm";
/// Where the packages install it, relative to the agent's directory
/// (`/usr/bin` → `/usr/libexec/tessera`).
const PACKAGED: &str = "../libexec/tessera";

/// `[tpm] helper_path` if set; else the helper beside the agent's executable
/// (a build tree or an unpacked tarball) if there is one; else the packages'
/// place for it.
pub fn helper_path(configured: Option<&Path>, agent_exe: &Path) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    let dir = agent_exe.parent().unwrap_or(Path::new("/"));
    let beside = dir.join(HELPER_NAME);
    if beside.is_file() {
        return beside;
    }
    dir.join(PACKAGED).join(HELPER_NAME)
}

/// Starts the helper and waits until it has opened the TPM behind `tcti`.
pub async fn start(
    cfg: &Config,
    tcti: &str,
    ek_template: EkTemplate,
) -> Result<TpmHelper, BoxError> {
    let exe = std::env::current_exe().map_err(|e| format!("the agent's own path: {e}"))?;
    let command = HelperCommand {
        program: helper_path(cfg.tpm.helper_path.as_deref(), &exe),
        tcti: tcti.to_string(),
        ek_template,
        log_level: cfg.log.level.clone().unwrap_or_else(|| "info".into()),
        log_json: cfg.log.json,
    };
    TpmHelper::start(command, CALL_TIMEOUT)
        .await
        .map_err(|e| format!("tpm.tcti {tcti:?}: {e}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_is_found_beside_the_agent_else_in_libexec_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let agent = bin.join("tessera-agent");
        let packaged = bin.join("../libexec/tessera/tessera-agent-tpm");
        assert_eq!(helper_path(None, &agent), packaged);
        std::fs::write(bin.join(HELPER_NAME), b"").unwrap();
        assert_eq!(helper_path(None, &agent), bin.join(HELPER_NAME));
        let set = Path::new("/opt/tpm-helper");
        assert_eq!(helper_path(Some(set), &agent), set);
    }
}
