//! `auth_key_file`: the key file's rules (owner, mode, length), every violation a config
//! error naming the file, its mode and the rule; a good key is typed, relative paths are
//! resolved against the config file's directory, and the key never shows in `Debug`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shared::config::Source;
use vrrpd::config::{validate, VrrpConfig};

const HEX_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

fn config_text(key_file: &str) -> String {
    format!(
        "[[instance]]\nname = \"web\"\ninterface = \"eth0\"\nvrid = 51\npriority = 150\n\
         vips = [\"192.0.2.10/24\"]\nauth_key_file = \"{key_file}\"\n"
    )
}

fn load(dir: &Path, key_file: &str) -> Result<VrrpConfig, String> {
    let text = config_text(key_file);
    let path = dir.join("vrrpd.toml");
    validate(&Source::from_text(path.clone(), text.clone())).map_err(|e| {
        e.errors()
            .iter()
            .map(|fe| fe.render(&path))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn write_key(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn a_private_hex_key_is_loaded_relative_to_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_key(dir.path(), "vrrp.key", HEX_KEY.as_bytes(), 0o600);
    let cfg = load(dir.path(), "vrrp.key").unwrap_or_else(|e| panic!("{e}"));
    let auth = cfg.instances[0].auth.as_ref().expect("auth configured");
    assert_eq!(auth.key_file, path);
    assert!(
        !format!("{cfg:?}").contains("0011"),
        "Debug must not print key material"
    );
    // Same material, absolute path, read-only mode: the same key.
    write_key(dir.path(), "copy.key", HEX_KEY.trim().as_bytes(), 0o400);
    let copy = dir.path().join("copy.key");
    let again = load(dir.path(), &copy.to_string_lossy()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        again.instances[0].auth.as_ref().map(|a| &a.key),
        Some(&auth.key)
    );
}

#[test]
fn auth_is_off_by_default() {
    let text = "[[instance]]\nname = \"web\"\ninterface = \"eth0\"\nvrid = 51\npriority = 150\nvips = [\"192.0.2.10/24\"]\n";
    let cfg = validate(&Source::from_text("/etc/lbpair/t.toml", text)).expect("valid");
    assert!(cfg.instances[0].auth.is_none());
}

#[test]
fn a_key_readable_by_group_or_others_is_refused_naming_file_mode_and_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in [0o640, 0o604, 0o644, 0o660] {
        write_key(dir.path(), "vrrp.key", HEX_KEY.as_bytes(), mode);
        let e = load(dir.path(), "vrrp.key").expect_err("exposed key accepted");
        assert!(
            e.contains(":7:")
                && e.contains("`instance[0].auth_key_file`")
                && e.contains(&dir.path().join("vrrp.key").display().to_string())
                && e.contains(&format!("mode {mode:04o}"))
                && e.contains("0600"),
            "{e}"
        );
    }
}

#[test]
fn short_missing_and_empty_keys_are_refused_with_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_key(
        dir.path(),
        "short.key",
        b"00112233445566778899aabbccddeeff\n",
        0o600,
    );
    let e = load(dir.path(), "short.key").expect_err("128-bit key accepted");
    assert!(
        e.contains("32 digits") && e.contains("at least 64 hex digits"),
        "{e}"
    );
    write_key(
        dir.path(),
        "raw.key",
        b"twenty-nine bytes of raw key!",
        0o600,
    );
    let e = load(dir.path(), "raw.key").expect_err("short raw key accepted");
    assert!(e.contains("29 bytes") && e.contains("32 raw bytes"), "{e}");
    let e = load(dir.path(), "absent.key").expect_err("missing file accepted");
    assert!(e.contains("cannot read") && e.contains("absent.key"), "{e}");
    let e = load(dir.path(), "").expect_err("empty path accepted");
    assert!(e.contains("must not be empty"), "{e}");
}

#[test]
fn a_raw_key_of_32_bytes_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw: Vec<u8> = (0u8..32).map(|i| 0x80 | i).collect();
    write_key(dir.path(), "raw.key", &raw, 0o600);
    let cfg = load(dir.path(), "raw.key").unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.instances[0].auth.is_some());
}

#[test]
fn a_key_owned_by_another_user_is_refused() {
    // Only root can give a file away; elsewhere this is covered by the mode checks.
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_key(dir.path(), "vrrp.key", HEX_KEY.as_bytes(), 0o600);
    nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let e = load(dir.path(), "vrrp.key").expect_err("foreign key accepted");
    assert!(
        e.contains("owned by uid 65534") && e.contains("the user vrrpd runs as"),
        "{e}"
    );
}
