//! Files and sockets the daemons create cannot be redirected: state and
//! socket directories others could write are refused at start, planted
//! symlinks are replaced rather than followed, and sockets get their modes.

use crate::harness::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A directory (created now) with exactly `m`.
fn dir_with_mode(p: &Path, m: u32) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// An authority config in `dir` with `data_dir`.
fn authority_config(dir: &Path, data_dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("authority.toml");
    fs::write(
        &cfg,
        format!(
            "trust_domain = \"{TD}\"\nlisten_address = \"127.0.0.1:0\"\n\
             admin_socket_path = \"{}\"\ndata_dir = \"{}\"\n",
            dir.join("admin.sock").display(),
            data_dir.display()
        ),
    )
    .unwrap();
    cfg
}

async fn authority_run(cfg: &Path) -> CmdOut {
    run_cmd(
        &bin("tessera-authority").expect("binary built"),
        &["run", "--config", cfg.to_str().unwrap()],
        None,
        &[],
    )
    .await
    .expect("run a command")
}

#[tokio::test]
async fn the_authority_refuses_a_data_dir_others_control() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("state");
    dir_with_mode(&data, 0o777);
    let cfg = authority_config(tmp.path(), &data);
    let line = authority_run(&cfg)
        .await
        .assert_one_line_error("authority with a world-writable data_dir");
    assert!(
        line.contains("data_dir") && line.contains("mode 777"),
        "{line}"
    );
    assert!(
        fs::read_dir(&data).unwrap().next().is_none(),
        "the authority wrote into a data_dir it refused"
    );
    // Owned by someone else (here nobody), even with a private mode.
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&data, Some(NOBODY), None).unwrap();
    let line = authority_run(&cfg)
        .await
        .assert_one_line_error("authority with a data_dir owned by nobody");
    assert!(
        line.contains("data_dir") && line.contains(&format!("owned by uid {NOBODY}")),
        "{line}"
    );
}

#[tokio::test]
async fn the_agent_refuses_a_data_dir_or_socket_dir_others_can_write() {
    let d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let agent_run = |cfg: std::path::PathBuf| async move {
        run_cmd(
            &bin("tessera-agent").expect("binary built"),
            &["run", "--config", cfg.to_str().unwrap()],
            None,
            &[],
        )
        .await
        .expect("run a command")
    };
    let data = d.dir.join("open-data");
    dir_with_mode(&data, 0o757);
    let cfg = d.dir.join("open-data.toml");
    d.write_agent_config(&cfg, &d.dir.join("a1/api.sock"), &data, &d.token)
        .expect("write the agent config");
    let line = agent_run(cfg)
        .await
        .assert_one_line_error("agent with a world-writable data_dir");
    assert!(
        line.contains("data_dir") && line.contains("mode 757"),
        "{line}"
    );

    let run = d.dir.join("open-run");
    dir_with_mode(&run, 0o777);
    let cfg = d.dir.join("open-run.toml");
    d.write_agent_config(&cfg, &run.join("api.sock"), &d.dir.join("a2"), &d.token)
        .expect("write the agent config");
    let line = agent_run(cfg)
        .await
        .assert_one_line_error("agent with a world-writable socket directory");
    assert!(
        line.contains("socket_path") && line.contains("mode 777"),
        "{line}"
    );
    assert!(fs::read_dir(&run).unwrap().next().is_none());
}

#[tokio::test]
async fn planted_symlinks_are_replaced_not_followed_and_sockets_get_their_modes() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let victims = d.dir.join("victims");
    dir_with_mode(&victims, 0o700);
    let victim = |name: &str| {
        let v = victims.join(name);
        fs::write(&v, format!("precious {name}")).unwrap();
        fs::set_permissions(&v, fs::Permissions::from_mode(0o600)).unwrap();
        v
    };
    // The agent's state files and socket, pointed at files it must not touch.
    let data = d.dir.join("agent-data");
    dir_with_mode(&data, 0o700);
    let mut planted = Vec::new();
    for name in ["agent_key.pem", "bundle.pem", "entries.json"] {
        planted.push((data.join(name), victim(name)));
    }
    let sock = d.socket_path();
    dir_with_mode(sock.parent().unwrap(), 0o755);
    planted.push((sock.clone(), victim("api.sock")));
    // The admin socket, planted while the authority is down.
    d.stop_authority().await.expect("stop the authority");
    planted.push((d.admin_socket(), victim("admin.sock")));
    for (link, target) in &planted {
        std::os::unix::fs::symlink(target, link).unwrap();
    }
    d.start_authority().await.expect("start the authority");
    let (id, _) = d
        .register_self("safety/w", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    poll(secs(20), "the agent's state files", || {
        let data = data.clone();
        std::future::ready(
            ["agent_key.pem", "bundle.pem", "entries.json"]
                .iter()
                .all(|n| fs::symlink_metadata(data.join(n)).is_ok_and(|m| m.file_type().is_file()))
                .then_some(()),
        )
    })
    .await;
    for (link, target) in &planted {
        let name = target.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            fs::read_to_string(target).unwrap(),
            format!("precious {name}"),
            "{} was written through the symlink at {}",
            target.display(),
            link.display()
        );
        assert_eq!(mode(target), 0o600, "{} was chmod-ed", target.display());
        assert!(
            !fs::symlink_metadata(link).unwrap().is_symlink(),
            "{} is still a symlink",
            link.display()
        );
    }
    assert_eq!(mode(&data.join("agent_key.pem")), 0o600);
    for (sock, m) in [(d.socket_path(), 0o666), (d.admin_socket(), 0o600)] {
        let meta = fs::symlink_metadata(&sock).unwrap();
        assert!(meta.file_type().is_socket(), "{}", sock.display());
        assert_eq!(meta.mode() & 0o777, m, "{}", sock.display());
    }
    d.admin_ok(&["entry", "list"]).await.expect("admin command");
}
