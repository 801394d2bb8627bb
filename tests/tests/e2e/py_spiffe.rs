//! A second Workload API client written by others: py-spiffe (PyPI `spiffe`) on gRPC
//! C-core, which sends the socket's path as the HTTP/2 `:authority` (the agent's
//! patched h2 accepts it, see vendor/h2/PATCH.md). The first test that needs it
//! installs tests/py/requirements.txt from PyPI into a virtualenv under the target
//! dir (reused while the requirements are unchanged); without PyPI these tests fail.

use crate::harness::*;
use crate::pki;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tessera_proto::workload as pb;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::ChildStdout;
use tokio::sync::OnceCell;

fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py")
}

static VENV: OnceCell<Result<PathBuf, String>> = OnceCell::const_new();

/// The virtualenv's python, with py-spiffe installed (once per test run at most).
async fn python() -> PathBuf {
    match VENV.get_or_init(make_venv).await {
        Ok(p) => p.clone(),
        Err(e) => panic!("py-spiffe virtualenv: {e}"),
    }
}

/// `<target>/debug/py-spiffe-venv`. A marker holding the requirements it was built
/// from, written last, says it is complete and current; otherwise it is rebuilt.
async fn make_venv() -> Result<PathBuf, String> {
    let reqs_file = py_dir().join("requirements.txt");
    let reqs = fs::read_to_string(&reqs_file).map_err(|e| format!("{reqs_file:?}: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test binary is not in <target>/debug/deps")?;
    let dir = debug.join("py-spiffe-venv");
    let marker = dir.join("tessera-requirements.txt");
    let python = dir.join("bin").join("python3");
    if python.is_file() && fs::read_to_string(&marker).is_ok_and(|m| m == reqs) {
        return Ok(python);
    }
    let _ = fs::remove_dir_all(&dir);
    let dir_arg = dir.to_string_lossy().into_owned();
    setup_step(system_python(), &["-m", "venv", &dir_arg]).await?;
    let reqs_arg = reqs_file.to_string_lossy().into_owned();
    setup_step(
        &python.to_string_lossy(),
        &[
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
            &reqs_arg,
        ],
    )
    .await?;
    fs::write(&marker, reqs).map_err(|e| format!("{marker:?}: {e}"))?;
    Ok(python)
}

/// The venv links to its base interpreter, which `nobody` must be able to run (the
/// PermissionDenied test), so prefer Debian's over one on PATH (e.g. pyenv under /root).
fn system_python() -> &'static str {
    const DEBIAN: &str = "/usr/bin/python3";
    if Path::new(DEBIAN).is_file() {
        DEBIAN
    } else {
        "python3"
    }
}

async fn setup_step(program: &str, args: &[&str]) -> Result<(), String> {
    let what = format!("{program} {}", args.join(" "));
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(secs(600), out)
        .await
        .map_err(|_| format!("{what}: timed out"))?
        .map_err(|e| format!("{what}: {e} (python3 and python3-venv are needed)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs tests/py/workload_client.py with `SPIFFE_ENDPOINT_SOCKET=endpoint`, as `uid`.
async fn py_client(endpoint: &str, uid: Option<u32>, args: &[&str]) -> CmdOut {
    let python = python().await;
    let script = py_dir().join("workload_client.py");
    let mut argv = vec![script.to_str().expect("UTF-8 path")];
    argv.extend_from_slice(args);
    let env = [
        ("SPIFFE_ENDPOINT_SOCKET", endpoint),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ];
    run_cmd(&python, &argv, uid, &env)
        .await
        .expect("run a command")
}

/// The JSON line a successful run printed.
fn output(out: &CmdOut, what: &str) -> Value {
    assert!(out.success(), "py-spiffe {what}: {out:?}");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("py-spiffe {what} printed no JSON ({e}): {out:?}"))
}

fn b64_strings(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| STANDARD.decode(s.as_str().unwrap_or_default()).unwrap())
        .collect()
}

#[tokio::test]
async fn py_spiffe_fetches_x509_svid_chain_key_and_bundles() {
    let (d, id) = Deployment::up("py/x509").await.expect("start a deployment");
    let resp = wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    let agent_svid = svid(&resp, &id);
    let endpoint = format!("unix://{}", d.socket_path().display());
    let v = output(&py_client(&endpoint, None, &["x509"]).await, "x509");

    let svids = v["svids"].as_array().unwrap();
    assert_eq!(svids.len(), 1, "one SVID for this caller: {v}");
    let s = &svids[0];
    assert_eq!(s["spiffe_id"], id.as_str());
    assert_eq!(v["default_id"], id.as_str(), "fetch_x509_svid");
    assert_eq!(v["source_id"], id.as_str(), "X509Source");
    // The same chain the agent serves to a Rust client, leaf first.
    let chain = b64_strings(&s["chain"]);
    assert_eq!(chain, pki::split_der(&agent_svid.x509_svid));
    assert_eq!(
        s["leaf_key"], s["private_key_public"],
        "py-spiffe's private key does not belong to its leaf certificate"
    );
    // Bundles from the X.509 context and from FetchX509Bundles: the authority's CA.
    let ca = pki::pem_certs(d.bundle_pem().expect("read bundle.pem").as_bytes());
    for key in ["context_bundles", "bundles"] {
        let bundles = v[key].as_object().unwrap();
        assert_eq!(bundles.len(), 1, "{key}: one trust domain: {v}");
        let mut got = b64_strings(&bundles[TD]);
        got.sort();
        let mut want = ca.clone();
        want.sort();
        assert_eq!(got, want, "{key} for {TD}");
    }
}

#[tokio::test]
async fn py_spiffe_fetches_and_validates_jwt_svids_and_bundles() {
    let (d, id) = Deployment::up("py/jwt").await.expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    // The unix:/path form of the endpoint (py-spiffe's own normal form).
    let endpoint = format!("unix:{}", d.socket_path().display());
    let v = output(&py_client(&endpoint, None, &["jwt", "py-aud"]).await, "jwt");

    assert_eq!(v["spiffe_id"], id.as_str());
    assert_eq!(v["audience"], serde_json::json!(["py-aud"]));
    assert_eq!(v["validated_by_agent"], id.as_str(), "validate_jwt_svid");
    assert_eq!(
        v["validated_offline"],
        id.as_str(),
        "JwtSvid.parse_and_validate"
    );
    assert_eq!(v["source_id"], id.as_str(), "JwtSource");
    for key in ["wrong_audience_by_agent", "wrong_audience_offline"] {
        assert!(
            v[key].is_string(),
            "{key}: a token for another audience was accepted: {v}"
        );
    }
    let (_, kid) = d.jwt_signing_key().expect("read the JWT key");
    assert_eq!(
        v["jwt_bundles"],
        serde_json::json!({ TD: [kid] }),
        "JWT bundles: the authority's signing key"
    );
    // The agent, asked by a Rust client, accepts the token py-spiffe fetched.
    let token = v["token"].as_str().unwrap().to_string();
    let msg = pb::ValidateJwtsvidRequest {
        audience: "py-aud".into(),
        svid: token,
    };
    let valid = within(secs(20), "ValidateJWTSVID", raw.validate_jwtsvid(req(msg)))
        .await
        .unwrap_or_else(|st| panic!("the agent refuses py-spiffe's token: {st:?}"))
        .into_inner();
    assert_eq!(valid.spiffe_id, id);
}

/// The SPIFFE IDs of the watcher's next update.
async fn next_ids(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = within(PROPAGATION, "a py-spiffe stream update", lines.next_line())
        .await
        .expect("read the watcher's stdout")
        .expect("the py-spiffe watcher ended early");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert!(v.get("error").is_none(), "py-spiffe stream error: {v}");
    v["ids"].clone()
}

#[tokio::test]
async fn py_spiffe_stream_follows_a_new_entry() {
    let (d, id) = Deployment::up("py/watch-a")
        .await
        .expect("start a deployment");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    let script = py_dir().join("workload_client.py");
    let mut child = tokio::process::Command::from(child_command(python().await))
        .arg(&script)
        .args(["watch", "20"])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", d.socket_path().display()),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the py-spiffe watcher");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_ids(&mut lines).await, serde_json::json!([id]));
    let (second, _) = d
        .register_self("py/watch-b", &[])
        .await
        .expect("register an entry");
    let mut both = vec![id.clone(), second];
    both.sort();
    while next_ids(&mut lines).await != serde_json::json!(both) {}
}

#[tokio::test]
async fn py_spiffe_caller_without_an_entry_gets_permission_denied() {
    let (d, id) = Deployment::up("py/denied")
        .await
        .expect("start a deployment");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    let endpoint = format!("unix://{}", d.socket_path().display());
    for cmd in [&["x509"][..], &["jwt", "py-aud"]] {
        let out = py_client(&endpoint, Some(NOBODY), cmd).await;
        assert_eq!(
            out.status.code(),
            Some(3),
            "py-spiffe {cmd:?} as nobody must fail with a py-spiffe error: {out:?}"
        );
        let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("PERMISSION_DENIED"),
            "py-spiffe {cmd:?} as nobody: expected PermissionDenied, got {v}"
        );
    }
}
