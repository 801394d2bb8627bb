//! The JWT signing key, kept in `data_dir` next to the CA.

use std::path::Path;
use tessera_common::fsutil;
use tessera_common::jwt::JwtSigner;
use tessera_common::secret::SecretBytes;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyError {
    path: String,
    reason: String,
}

/// Loads `jwt_key.pk8` and `jwt_key.kid`, creating them on first start.
pub fn load_or_create_jwt_signer(data_dir: &Path) -> Result<JwtSigner, KeyError> {
    let key_path = data_dir.join("jwt_key.pk8");
    let kid_path = data_dir.join("jwt_key.kid");
    let err = |p: &Path, e: &dyn std::fmt::Display| KeyError {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    if !key_path.exists() {
        let signer = JwtSigner::generate().map_err(|e| err(&key_path, &e))?;
        fsutil::write_atomic(&key_path, signer.pkcs8_der(), 0o600)
            .map_err(|e| err(&key_path, &e))?;
        fsutil::write_atomic(&kid_path, signer.kid().as_bytes(), 0o644)
            .map_err(|e| err(&kid_path, &e))?;
        tracing::info!(kid = signer.kid(), "created a new JWT signing key");
    }
    let der = SecretBytes::new(std::fs::read(&key_path).map_err(|e| err(&key_path, &e))?);
    let kid = std::fs::read_to_string(&kid_path).map_err(|e| err(&kid_path, &e))?;
    JwtSigner::from_pkcs8_der(&der, kid.trim().to_string()).map_err(|e| err(&key_path, &e))
}
