//! The shipped configs load, and `lbd check-config` reports errors with positions.

use std::path::{Path, PathBuf};
use std::process::Command;

use lbd::config::LbConfig;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// configs/lbd*.toml and configs/*/lbd.toml.
fn shipped() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(configs_dir()).expect("configs/ exists");
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let nested = path.join("lbd.toml");
            if nested.exists() {
                out.push(nested);
            }
        } else if name.starts_with("lbd") && name.ends_with(".toml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn every_shipped_config_loads() {
    let files = shipped();
    assert!(
        files.len() >= 3,
        "expected the example and both node configs: {files:?}"
    );
    for f in files {
        if let Err(e) = LbConfig::load(&f) {
            panic!("{e}");
        }
    }
}

#[test]
fn check_config_exit_codes_and_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(["check-config"])
        .arg(configs_dir().join("lbd.example.toml"))
        .output()
        .expect("run lbd");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\nname = \"a\"\naddress = \"0.0.0.0:80\"\n[[pool]]\nname = \"p\"\nalgorithm = \"random\"\n[[pool.backend]]\naddress = \"10.0.0.1\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("run lbd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:6:1: `pool[0].algorithm`: \"random\" is not an algorithm"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:8:1: `pool[0].backend[0].address`: \"10.0.0.1\" is not an IP:port"),
        "{err}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("check-config")
        .arg(dir.path().join("nope.toml"))
        .output()
        .expect("run lbd");
    assert!(!missing.status.success());
}

/// The node configs carry `[peer]` commented out (the key can't ship in the repo); once
/// uncommented with a real key, as their comments tell operators to do, they must load, and
/// the two nodes must name each other.
#[test]
fn node_configs_peer_blocks_load_once_uncommented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("peer.key");
    // As the configs' comments tell operators: the key file is private to lbd's user.
    std::fs::write(&key, "ab".repeat(32)).expect("write key");
    std::fs::set_permissions(
        &key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("chmod key");
    let mut ids = Vec::new();
    for node in ["node-a", "node-b"] {
        let text = std::fs::read_to_string(configs_dir().join(node).join("lbd.toml"))
            .expect("node config");
        let mut in_block = false;
        let mut uncommented = String::new();
        for line in text.lines() {
            if line == "# [peer]" {
                in_block = true;
            } else if in_block && !line.starts_with('#') {
                in_block = false;
            }
            let line = if in_block && !line.starts_with("# #") {
                line.trim_start_matches("# ")
            } else {
                line
            };
            uncommented.push_str(line);
            uncommented.push('\n');
        }
        let uncommented = uncommented.replace("/etc/lbpair/peer.key", &key.display().to_string());
        let path = dir.path().join(format!("{node}.toml"));
        std::fs::write(&path, uncommented).expect("write config");
        let cfg = LbConfig::load(&path).unwrap_or_else(|e| panic!("{node}: {e}"));
        let peer = cfg
            .peer
            .unwrap_or_else(|| panic!("{node}: no [peer] after uncommenting"));
        ids.push((peer.node_id.clone(), peer.peer_node_id.clone()));
    }
    assert_eq!(ids[0].0, ids[1].1, "node B's peer is node A");
    assert_eq!(ids[1].0, ids[0].1, "node A's peer is node B");
}
