//! The helper protocol's messages from and to the TPM API's types.

use super::super::ops::{AkPublic, Endorsement, Quote};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use tessera_proto::tpm::helper as pb;

pub(super) fn path_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

pub(super) fn path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

impl From<Endorsement> for pb::Endorsement {
    fn from(e: Endorsement) -> Self {
        pb::Endorsement {
            ek_cert: e.ek_cert,
            ek_public: e.ek_public,
        }
    }
}

impl From<pb::Endorsement> for Endorsement {
    fn from(e: pb::Endorsement) -> Self {
        Endorsement {
            ek_cert: e.ek_cert,
            ek_public: e.ek_public,
        }
    }
}

impl From<AkPublic> for pb::AkPublic {
    fn from(a: AkPublic) -> Self {
        pb::AkPublic {
            public: a.public,
            name: a.name,
        }
    }
}

impl From<pb::AkPublic> for AkPublic {
    fn from(a: pb::AkPublic) -> Self {
        AkPublic {
            public: a.public,
            name: a.name,
        }
    }
}

impl From<Quote> for pb::Quote {
    fn from(q: Quote) -> Self {
        pb::Quote {
            attest: q.attest,
            signature: q.signature,
            pcr_values: q
                .pcr_values
                .into_iter()
                .map(|(index, digest)| pb::PcrValue { index, digest })
                .collect(),
        }
    }
}

impl From<pb::Quote> for Quote {
    fn from(q: pb::Quote) -> Self {
        Quote {
            attest: q.attest,
            signature: q.signature,
            pcr_values: q
                .pcr_values
                .into_iter()
                .map(|v| (v.index, v.digest))
                .collect(),
        }
    }
}
