//! MakeCredential proven against a real TPM: a private swtpm driven with
//! tpm2-tools activates what `make_credential` produced. Skipped (with a
//! notice) only when `swtpm` is not on PATH.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::node::tpm::public::{AkPublic, EkTemplate};
use crate::testdata;

fn fixture_ek() -> TpmtPublic {
    TpmtPublic::parse(&testdata::read("fixtures/swtpm-sample/ek_pub.tpmt_public")).expect("EK")
}

fn random_secret() -> Vec<u8> {
    let mut s = vec![0u8; 32];
    rand::fill(&mut s).expect("random");
    s
}

#[test]
fn output_has_the_activate_credential_layout() {
    let ek = fixture_ek();
    let name = [&[0x00, 0x0b][..], &[0x11; 32]].concat();
    let c = make_credential(&ek, &[1; 32], &name).expect("credential");
    // size || (size=32 || HMAC-SHA256) || AES-CFB(size=32 || secret).
    assert_eq!(c.credential_blob.len(), 2 + 2 + 32 + 2 + 32);
    assert_eq!(&c.credential_blob[..4], &[0, 68, 0, 32]);
    assert_eq!(c.encrypted_secret.len(), 2 + 256);
    assert_eq!(&c.encrypted_secret[..2], &[1, 0]);
    let again = make_credential(&ek, &[1; 32], &name).expect("credential");
    assert_ne!(c, again, "the seed must be fresh each time");
}

#[test]
fn rejects_bad_inputs() {
    let ek = fixture_ek();
    let name = [&[0x00, 0x0b][..], &[0x11; 32]].concat();
    let too_long = make_credential(&ek, &[1; 33], &name);
    assert_eq!(too_long, Err(CredentialError::SecretLength { max: 32 }));
    assert!(make_credential(&ek, &[], &name).is_err());
    for bad in [&name[..33], &[0x00, 0x0c, 1, 2][..], &[0x00][..], &[][..]] {
        assert_eq!(
            make_credential(&ek, &[1; 32], bad),
            Err(CredentialError::AkName)
        );
    }
    let ak = testdata::read("fixtures/swtpm-sample/ak_pub.tpmt_public");
    let not_ek = TpmtPublic::parse(&ak).expect("AK");
    assert_eq!(
        make_credential(&not_ek, &[1; 32], &name),
        Err(CredentialError::Ek(PublicError::NotEkTemplate))
    );
}

#[test]
fn kdfa_counter_and_truncation() {
    let long = kdfa(HashAlg::Sha256, b"k", b"STORAGE", b"u", b"", 40);
    assert_eq!(long.len(), 40);
    // The size in bits is part of every block, so a shorter output is not a prefix.
    let short = kdfa(HashAlg::Sha256, b"k", b"STORAGE", b"u", b"", 16);
    assert_ne!(&long[..16], short.as_slice());
    assert_eq!(
        kdfe(HashAlg::Sha384, b"z", IDENTITY, b"u", b"v", 48).len(),
        48
    );
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A private swtpm on two free loopback ports, killed (by its pid) on drop.
struct Swtpm {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Swtpm {
    fn start() -> Option<Self> {
        if !on_path("swtpm") {
            eprintln!("NOTICE: swtpm is not on PATH; skipping the swtpm MakeCredential test");
            return None;
        }
        let _serial = crate::node::tpm::SWTPM_START
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for _ in 0..10 {
            let Some(port) = free_port_pair() else {
                continue;
            };
            let dir = tempfile::tempdir().expect("tempdir");
            let state = format!("dir={}", dir.path().display());
            let server = format!("type=tcp,port={port},bindaddr=127.0.0.1");
            let ctrl = format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1);
            let mut child = Command::new("swtpm")
                .args([
                    "socket",
                    "--tpm2",
                    "--tpmstate",
                    &state,
                    "--server",
                    &server,
                ])
                .args(["--ctrl", &ctrl, "--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn swtpm");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost a port race: try other ports
                }
                if TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                    // Listening, but is it ours? A swtpm that lost the port exits at once.
                    std::thread::sleep(Duration::from_millis(100));
                    if let Ok(None) = child.try_wait() {
                        return Some(Self { child, dir, port });
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start swtpm");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tool(&self, args: &[&str]) -> Output {
        Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.dir.path())
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]))
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.tool(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect(name)
    }

    /// EK (`-G rsa|ecc`) and an ECC P-256 ECDSA-SHA256 AK under it.
    fn provision(&self, ek_alg: &str) -> (TpmtPublic, AkPublic) {
        self.ok(&[
            "tpm2_createek",
            "-c",
            "ek.ctx",
            "-G",
            ek_alg,
            "-u",
            "ek.pub",
        ]);
        self.ok(&[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            "ecc",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
        ]);
        self.ok(&["tpm2_flushcontext", "-t"]);
        let ek = TpmtPublic::parse_tpm2b(&self.read("ek.pub")).expect("ek.pub");
        let ak = TpmtPublic::parse_tpm2b(&self.read("ak.pub")).expect("ak.pub");
        let ak = AkPublic::new(ak).expect("tpm2_createak AK passes the AK checks");
        assert_eq!(
            ak.name(),
            self.read("ak.name").as_slice(),
            "computed AK name"
        );
        (ek, ak)
    }

    /// tpm2_activatecredential with the EK's PolicySecret(endorsement) session.
    fn activate(&self, cred_file: &[u8]) -> Result<Vec<u8>, String> {
        std::fs::write(self.path("cred.bin"), cred_file).expect("write cred");
        let _ = std::fs::remove_file(self.path("secret.out"));
        self.ok(&["tpm2_startauthsession", "--policy-session", "-S", "s.ctx"]);
        self.ok(&["tpm2_policysecret", "-S", "s.ctx", "-c", "e"]);
        let out = self.tool(&[
            "tpm2_activatecredential",
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            "cred.bin",
            "-o",
            "secret.out",
            "-P",
            "session:s.ctx",
        ]);
        let _ = self.tool(&["tpm2_flushcontext", "s.ctx"]);
        let _ = self.tool(&["tpm2_flushcontext", "-t"]);
        if out.status.success() {
            Ok(self.read("secret.out"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port_pair() -> Option<u16> {
    let a = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = a.local_addr().ok()?.port();
    let _b = TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
    Some(port)
}

/// The tpm2-tools credential file: BE u32 0xBADCC0DE, u32 1, TPM2B_ID_OBJECT,
/// TPM2B_ENCRYPTED_SECRET.
fn tools_file(c: &Credential) -> Vec<u8> {
    [
        &0xBADC_C0DEu32.to_be_bytes()[..],
        &1u32.to_be_bytes(),
        &c.credential_blob,
        &c.encrypted_secret,
    ]
    .concat()
}

fn activates(ek_alg: &str, template: EkTemplate) {
    let Some(tpm) = Swtpm::start() else { return };
    let (ek, ak) = tpm.provision(ek_alg);
    assert_eq!(ek.ek_template(), Ok(template));
    let secret = random_secret();
    let cred = make_credential(&ek, &secret, ak.name()).expect("make_credential");
    assert_eq!(tpm.activate(&tools_file(&cred)), Ok(secret));
}

#[test]
fn make_credential_activates_on_swtpm_rsa_ek() {
    activates("rsa", EkTemplate::L1Rsa2048);
}

#[test]
fn make_credential_activates_on_swtpm_ecc_ek() {
    activates("ecc", EkTemplate::L2EccP256);
}

#[test]
fn make_credential_wrong_ak_name_fails_activation_on_swtpm() {
    let Some(tpm) = Swtpm::start() else { return };
    for ek_alg in ["rsa", "ecc"] {
        let (ek, ak) = tpm.provision(ek_alg);
        let secret = random_secret();
        let mut wrong = ak.name().to_vec();
        if let Some(b) = wrong.last_mut() {
            *b ^= 1;
        }
        let cred = make_credential(&ek, &secret, &wrong).expect("make_credential");
        assert!(tpm.activate(&tools_file(&cred)).is_err(), "{ek_alg}");
        // Same TPM, keys and harness, right name: activates.
        let cred = make_credential(&ek, &secret, ak.name()).expect("make_credential");
        assert_eq!(tpm.activate(&tools_file(&cred)), Ok(secret), "{ek_alg}");
    }
}

#[test]
fn tpm2_makecredential_output_activates_on_swtpm() {
    let Some(tpm) = Swtpm::start() else { return };
    let (ek, ak) = tpm.provision("rsa");
    let secret = random_secret();
    std::fs::write(tpm.path("secret.in"), &secret).expect("write secret");
    let name = hex::encode(ak.name());
    tpm.ok(&[
        "tpm2_makecredential",
        "-T",
        "none",
        "-e",
        "ek.pub",
        "-s",
        "secret.in",
        "-n",
        &name,
        "-o",
        "ref.bin",
    ]);
    let reference = tpm.read("ref.bin");
    // Same file layout as ours (the contents differ: the seed is random).
    let ours = tools_file(&make_credential(&ek, &secret, ak.name()).expect("ours"));
    assert_eq!(reference.len(), ours.len());
    assert_eq!(&reference[..12], &ours[..12]);
    assert_eq!(tpm.activate(&reference), Ok(secret));
}
