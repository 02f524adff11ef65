//! Every shipped vrrpd config (`configs/vrrpd*.toml`, `configs/*/vrrpd*.toml`) must load.

use std::path::{Path, PathBuf};

use vrrpd::config::{ChecksumMode, VrrpConfig};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// Files named `vrrpd*.toml` in `configs/` and one level below (node-a/, node-b/, ...).
fn shipped_configs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![configs_dir()];
    let entries = std::fs::read_dir(configs_dir()).expect("configs/ exists");
    for e in entries.flatten() {
        if e.path().is_dir() {
            dirs.push(e.path());
        }
    }
    for dir in dirs {
        for e in std::fs::read_dir(&dir).expect("readable dir").flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_file() && name.starts_with("vrrpd") && name.ends_with(".toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn load(rel: &str) -> VrrpConfig {
    let path = configs_dir().join(rel);
    VrrpConfig::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_shipped_config_validates() {
    let files = shipped_configs();
    assert!(
        files.len() >= 6,
        "expected the six shipped configs, found {files:?}"
    );
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = VrrpConfig::load(f) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn node_pair_shares_a_vrid_and_a_has_the_higher_priority() {
    let a = load("vrrpd-node-a.toml");
    let b = load("vrrpd-node-b.toml");
    let (ia, ib) = (&a.instances[0], &b.instances[0]);
    assert_eq!(ia.vrid, ib.vrid);
    assert_eq!(ia.vips, ib.vips);
    assert_eq!((ia.priority, ib.priority), (150, 100));
    assert_eq!(ia.checksum_mode, ChecksumMode::PseudoHeader);
    assert_eq!(ia.vips[1].label.as_deref(), Some("eth0:web"));
    // Documentation range only (TEST-NET-1).
    for vip in &ia.vips {
        assert_eq!(vip.address.octets()[..3], [192, 0, 2], "{vip}");
    }
}

#[test]
fn active_active_pair_has_one_master_per_vrid() {
    let a = load("vrrpd-active-active-a.toml");
    let b = load("vrrpd-active-active-b.toml");
    assert_eq!(a.instances.len(), 2);
    assert_eq!(b.instances.len(), 2);
    let mut masters_a = 0;
    for ia in &a.instances {
        let ib = b.instance(&ia.name).expect("same instances on both nodes");
        assert_eq!(ia.vrid, ib.vrid);
        assert_ne!(
            ia.priority, ib.priority,
            "{}: a tie would elect by address",
            ia.name
        );
        if ia.priority > ib.priority {
            masters_a += 1;
        }
    }
    assert_eq!(masters_a, 1, "node A must be master of exactly one VRID");
}

#[test]
fn demo_pair_peers_point_at_each_other() {
    let a = load("node-a/vrrpd.toml");
    let b = load("node-b/vrrpd.toml");
    let (ia, ib) = (&a.instances[0], &b.instances[0]);
    assert_eq!(ia.vrid, ib.vrid);
    assert!(ia.priority > ib.priority);
    assert_eq!(ia.unicast_peers.len(), 1);
    assert_ne!(ia.unicast_peers, ib.unicast_peers);
}
