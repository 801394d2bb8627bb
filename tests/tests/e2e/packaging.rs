//! The .deb and .rpm packages from `packaging/build.sh`: their contents and
//! dependencies, lintian and rpmlint, and an install → upgrade → remove →
//! purge cycle of the agent's .deb with dpkg (root only).
//!
//! The packages are built once per test run, from the debug binaries the
//! suite already built (`TESSERA_PACKAGE_BIN_DIR`), with fast compression:
//! what is tested is the packaging, not the optimizer.

use crate::harness::{bin, child_command};
use crate::systemd::{repo, run, text};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The workspace's version, Debian revision 1 (cargo-deb's and cargo-generate-rpm's default).
fn version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

/// A later version with the same files, for the upgrade.
fn newer_version() -> String {
    format!("{}+upgrade-1", env!("CARGO_PKG_VERSION"))
}

/// target/ (or CARGO_TARGET_DIR): where the suite's binaries are.
fn target_dir() -> PathBuf {
    bin("tessera-agent")
        .expect("binary built")
        .parent()
        .and_then(Path::parent)
        .expect("<target>/debug/tessera-agent")
        .to_path_buf()
}

/// Runs packaging/build.sh once; every test gets target/packages/.
fn packages() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target = target_dir();
        let debug = bin("tessera-agent")
            .expect("binary built")
            .parent()
            .unwrap()
            .to_path_buf();
        let started = std::time::Instant::now();
        // Low priority: the other end-to-end tests have timeouts.
        let out = child_command("nice")
            .args(["-n", "19"])
            .arg(repo().join("packaging/build.sh"))
            .env("CARGO_TARGET_DIR", &target)
            .env("TESSERA_PACKAGE_BIN_DIR", &debug)
            .env("TESSERA_PACKAGE_FAST", "1")
            .output()
            .map_err(|e| format!("cannot run packaging/build.sh: {e}"))?;
        eprintln!("packaging/build.sh took {:?}", started.elapsed());
        if !out.status.success() {
            return Err(format!(
                "packaging/build.sh failed ({}):\n{}{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
        Ok(target.join("packages"))
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn deb(name: &str) -> PathBuf {
    packages().join(format!("{name}_{}_amd64.deb", version()))
}

fn rpm(name: &str) -> PathBuf {
    packages().join(format!("{name}-{}.x86_64.rpm", version()))
}

fn ok(program: &str, args: &[&OsStr]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn debs_hold_the_expected_files_and_dependencies() {
    for (name, config) in [
        ("tessera-agent", "agent"),
        ("tessera-authority", "authority"),
    ] {
        let d = deb(name);
        let list = ok("dpkg-deb", &[os("-c"), d.as_os_str()]);
        for want in [
            format!("./usr/bin/{name}"),
            format!("./usr/lib/systemd/system/{name}.service"),
            format!("./usr/lib/sysusers.d/{name}.conf"),
            format!("./usr/lib/tmpfiles.d/{name}.conf"),
            format!("./etc/tessera/{config}.toml"),
            format!("./usr/share/doc/{name}/copyright"),
            format!("./usr/share/{name}/grafana/tessera.json"),
            format!("./usr/share/man/man1/{name}.1.gz"),
            format!("./usr/share/man/man1/{name}-run.1.gz"),
        ] {
            assert!(
                list.lines().any(|l| l.ends_with(&want)),
                "{name}: no {want} in\n{list}"
            );
        }
        let conffiles = ok("dpkg-deb", &[os("-I"), d.as_os_str(), os("conffiles")]);
        assert_eq!(conffiles.trim(), format!("/etc/tessera/{config}.toml"));
        assert_eq!(
            list.contains("./usr/libexec/tessera/tessera-agent-tpm"),
            name == "tessera-agent",
            "{name}: the TPM helper in\n{list}"
        );
        let depends = ok("dpkg-deb", &[os("-f"), d.as_os_str(), os("Depends")]);
        eprintln!("{name} Depends: {depends}");
        // The agent's TPM helper links libtss2 (ESAPI, the TCTI loader); the
        // authority verifies TPM evidence in software and does not.
        for lib in ["libtss2-esys", "libtss2-tctildr"] {
            assert_eq!(
                depends.contains(lib),
                name == "tessera-agent",
                "{name}: {depends}"
            );
        }
        assert!(depends.contains("libc6"), "{depends}");
    }
    // Only the helper loads libtss2 and the libcrypto it needs: not the
    // agent (whose every command would pay for loading them), not the authority.
    let staged = |b: &str| target_dir().join("packaging").join(b);
    for b in ["tessera-agent", "tessera-authority"] {
        let needed = dt_needed(&staged(b));
        assert!(
            !needed
                .iter()
                .any(|l| l.starts_with("libtss2") || l.starts_with("libcrypto")),
            "{b} needs {needed:?}"
        );
    }
    let needed = dt_needed(&staged("tessera-agent-tpm"));
    assert!(
        needed.iter().any(|l| l.starts_with("libtss2-esys")),
        "the TPM helper needs {needed:?}"
    );
}

/// The `DT_NEEDED` entries of an ELF file (`readelf -d`, binutils).
fn dt_needed(elf: &Path) -> Vec<String> {
    let dynamic = ok("readelf", &[os("-d"), elf.as_os_str()]);
    let needed: Vec<String> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect();
    assert!(needed.iter().any(|l| l.starts_with("libc.so")), "{dynamic}");
    needed
}

/// What the suite built (the binaries the end-to-end tests run), not only the
/// packaged copies: the agent's own build has no libtss2 either.
#[test]
fn only_the_tpm_helper_links_libtss2() {
    let agent = dt_needed(&bin("tessera-agent").expect("binary built"));
    assert!(
        !agent
            .iter()
            .any(|l| l.starts_with("libtss2") || l.starts_with("libcrypto")),
        "tessera-agent needs {agent:?}"
    );
    let helper = dt_needed(&bin("tessera-agent-tpm").expect("binary built"));
    for lib in ["libtss2-esys", "libtss2-tctildr"] {
        assert!(helper.iter().any(|l| l.starts_with(lib)), "{helper:?}");
    }
}

#[test]
fn debs_pass_lintian() {
    let out = run(
        "lintian",
        &[
            deb("tessera-agent").as_os_str(),
            deb("tessera-authority").as_os_str(),
        ],
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("lintian:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // Every binary has its man page (generated from the CLI, gzip'd), and the
    // pages render without groff warnings.
    let man: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("manual-page") || l.contains("manpage"))
        .collect();
    assert!(
        man.is_empty(),
        "lintian on the man pages:\n{}",
        man.join("\n")
    );
    // Other warnings (no ITP bug closed) do not fail lintian.
    assert!(
        out.status.success(),
        "lintian failed ({}):\n{report}",
        out.status
    );
}

#[test]
fn rpms_hold_the_expected_files_and_pass_rpmlint() {
    for (name, config) in [
        ("tessera-agent", "agent"),
        ("tessera-authority", "authority"),
    ] {
        let r = rpm(name);
        let files = ok("rpm", &[os("-qlp"), r.as_os_str()]);
        // The man pages: one per command, each gzip'd.
        let (man, files): (Vec<&str>, Vec<&str>) = files
            .lines()
            .partition(|f| f.starts_with("/usr/share/man/man1/"));
        assert!(
            man.contains(&format!("/usr/share/man/man1/{name}.1.gz").as_str())
                && man.len() > 3
                && man.iter().all(|f| f.ends_with(".1.gz")),
            "{name}: man pages {man:?}"
        );
        let mut got = files;
        got.sort();
        let mut want = vec![
            format!("/etc/tessera/{config}.toml"),
            format!("/usr/bin/{name}"),
            format!("/usr/lib/systemd/system/{name}.service"),
            format!("/usr/lib/sysusers.d/{name}.conf"),
            format!("/usr/lib/tmpfiles.d/{name}.conf"),
            format!("/usr/share/doc/{name}/README.md"),
            format!("/usr/share/{name}/grafana/tessera.json"),
        ];
        if name == "tessera-agent" {
            want.push("/usr/libexec/tessera/tessera-agent-tpm".into());
        }
        want.sort();
        assert_eq!(got, want, "{name}");
        let configs = ok("rpm", &[os("-qcp"), r.as_os_str()]);
        assert_eq!(configs.trim(), format!("/etc/tessera/{config}.toml"));
        // %pre creates the user from the same lines as the sysusers.d file.
        let scripts = ok("rpm", &[os("-qp"), os("--scripts"), r.as_os_str()]);
        let sysusers = fs::read_to_string(repo().join(format!("systemd/{name}.sysusers"))).unwrap();
        for line in sysusers.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                scripts.contains(line),
                "{name} %pre lacks {line:?}:\n{scripts}"
            );
        }
        for scriptlet in ["preinstall", "postinstall", "preuninstall", "postuninstall"] {
            assert!(
                scripts.contains(&format!("{scriptlet} scriptlet")),
                "{scripts}"
            );
        }
        let requires = ok("rpm", &[os("-qp"), os("--requires"), r.as_os_str()]);
        assert_eq!(
            requires.contains("libtss2-esys"),
            name == "tessera-agent",
            "{name}: {requires}"
        );
    }
    // Filtered (packaging/rpmlint.toml): deliberate choices and the tags only
    // rpmbuild can set; any other error fails.
    let out = run(
        "rpmlint",
        &[
            os("-c"),
            repo().join("packaging/rpmlint.toml").as_os_str(),
            rpm("tessera-agent").as_os_str(),
            rpm("tessera-authority").as_os_str(),
        ],
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("rpmlint:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.contains(": E: ")).collect();
    assert!(errors.is_empty(), "rpmlint errors:\n{}", errors.join("\n"));
    assert!(
        !report.contains("manual-page") && !report.contains("manpage"),
        "rpmlint on the man pages:\n{report}"
    );
    assert!(report.contains(" 0 errors"), "{report}");
}

// ---------------------------------------------------------------------------------------
// dpkg: install → upgrade → remove → purge

/// Purges the package if a failed test left it installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &[os("--purge"), os("tessera-agent")]);
    }
}

fn installed_version() -> Option<String> {
    let out = run(
        "dpkg-query",
        &[os("-W"), os("-f=${Status} ${Version}"), os("tessera-agent")],
    );
    let s = text(&out.stdout);
    s.strip_prefix("install ok installed ")
        .map(|v| v.trim().to_string())
}

fn user_exists(name: &str) -> bool {
    run("getent", &[os("passwd"), os(name)]).status.success()
}

fn dpkg(args: &[&OsStr]) {
    let mut all = vec![os("--force-confold")];
    all.extend_from_slice(args);
    let out = child_command("dpkg")
        .args(&all)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg {args:?} ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// One package cycle at a time (the suite runs tests in parallel).
static DPKG: Mutex<()> = Mutex::new(());

#[test]
fn agent_deb_installs_upgrades_removes_and_purges() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: installing packages needs root");
        return;
    }
    let _lock = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = installed_version() {
        eprintln!("skipped: tessera-agent {v} is installed on this machine; not touching it");
        return;
    }
    let first = deb("tessera-agent");
    // The upgrade: the same files under a newer version.
    // (build.sh staged the binaries in <target>/packaging/, named like a profile.)
    let newer = tempfile::tempdir().unwrap();
    let out = child_command("cargo")
        .args(["deb", "--no-build", "--fast", "--profile", "packaging"])
        .args([
            "-p",
            "tessera-agent",
            "--deb-version",
            &newer_version(),
            "-o",
        ])
        .arg(newer.path())
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo deb: {}", text(&out.stderr));
    let second = newer
        .path()
        .join(format!("tessera-agent_{}_amd64.deb", newer_version()));
    let config = Path::new("/etc/tessera/agent.toml");
    let data = Path::new("/var/lib/tessera/agent");
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/tessera-agent.service");

    let _purge = Purge;
    dpkg(&[os("-i"), first.as_os_str()]);
    assert_eq!(installed_version(), Some(version()));
    assert!(user_exists("tessera-agent"));
    let groups = ok("id", &[os("-nG"), os("tessera-agent")]);
    assert!(groups.split_whitespace().any(|g| g == "tss"), "{groups}");
    let meta = fs::metadata(config).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o640,
        "the config may hold a token"
    );
    let gid = nix::unistd::Group::from_name("tessera-agent")
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(meta.gid(), gid.as_raw());
    assert!(Path::new("/usr/lib/systemd/system/tessera-agent.service").is_file());
    // Enabled, not started: nothing runs without a configuration.
    assert!(fs::symlink_metadata(wants).is_ok(), "not enabled");
    // (The suite's own agents run from target/, not /usr/bin.)
    let packaged = Path::new("/usr/bin/tessera-agent");
    let running = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path().join("exe")).ok())
        .any(|exe| exe == packaged);
    assert!(!running, "started without a configuration");
    assert_eq!(
        fs::read_link("/run/tessera/agent.sock").unwrap(),
        Path::new("agent/agent.sock")
    );
    let help = ok("/usr/bin/tessera-agent", &[os("--help")]);
    assert!(help.contains("/etc/tessera/agent.toml"), "{help}");
    // Where the agent looks for its TPM helper when none is beside it.
    let helper = Path::new("/usr/bin/../libexec/tessera/tessera-agent-tpm");
    let version = ok(helper.to_str().unwrap(), &[os("--version")]);
    assert!(version.starts_with("tessera-agent-tpm "), "{version}");

    // A local edit and some state, as a running agent would leave.
    let edited = format!("{}\n# local edit\n", fs::read_to_string(config).unwrap());
    fs::write(config, &edited).unwrap();
    fs::create_dir_all(data).unwrap();
    fs::write(data.join("agent-svid.pem"), "state").unwrap();

    dpkg(&[os("-i"), second.as_os_str()]);
    assert_eq!(installed_version(), Some(newer_version()));
    assert_eq!(
        fs::read_to_string(config).unwrap(),
        edited,
        "conffile edit lost"
    );
    assert_eq!(
        fs::metadata(config).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(data.join("agent-svid.pem").exists());

    dpkg(&[os("--remove"), os("tessera-agent")]);
    assert!(!Path::new("/usr/bin/tessera-agent").exists());
    assert!(!Path::new("/usr/libexec/tessera").exists());
    assert!(config.exists(), "remove keeps the conffile");
    assert!(
        data.join("agent-svid.pem").exists(),
        "remove keeps the data"
    );
    assert!(user_exists("tessera-agent"), "remove keeps the user");

    dpkg(&[os("--purge"), os("tessera-agent")]);
    assert!(installed_version().is_none());
    assert!(!config.exists(), "purge deletes the conffile");
    assert!(!data.exists(), "purge deletes the data");
    assert!(!user_exists("tessera-agent"), "purge deletes the user");
    assert!(
        fs::symlink_metadata(wants).is_err(),
        "purge deletes the enablement"
    );
    let over = run("dpkg-statoverride", &[os("--list"), config.as_os_str()]);
    assert!(!over.status.success(), "statoverride left behind");
}
