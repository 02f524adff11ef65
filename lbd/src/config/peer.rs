//! `[peer]`: the authenticated link to the other lbd node.
//!
//! ```toml
//! [peer]
//! node_id = "lb-a"              # this node (1..64 of A-Z a-z 0-9 _ . -)
//! peer_node_id = "lb-b"         # the other node (must differ)
//! cluster_id = "pair-1"         # both nodes must agree, or HELLO is rejected
//! listen = "10.0.0.1:7946"      # where the other node dials us
//! peer = "10.0.0.2:7946"        # where we dial the other node
//! psk_file = "/etc/lbpair/peer.key"   # >= 32 hex digits, or exactly 32 random bytes; mode
//!                                     # 0600 or stricter, owned by lbd's user; relative to
//!                                     # the config file's directory
//! allow_from = ["10.0.0.2"]     # who may connect to `listen` (IPs/CIDRs; default: peer's IP)
//! resync_rate = 500000          # entries/s streamed during a full resync (1M entries: ~2 s)
//! warm_timeout_ms = 10000       # peer unreachable this long after start: report warm anyway
//! reconnect_ms = 500            # dial interval while not connected
//! ping_ms = 1000                # keepalive; a peer silent for 3x this is dropped
//! ```
//!
//! The key file is read at validation time, so a missing, unreadable, weak or world-readable
//! key is a config error at `lbd check-config` and on reload, not a link that silently never
//! comes up (or one whose key anybody on the host can read).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::config::Validator;

use ipnet::IpNet;

use super::validate::{check_ms, parse_addr, required};
use shared::private_file::{read_private_file, PrivateFileError};

/// 1M entries (a full sticky table) in about 2 s, ~30 MB/s on the peer link.
pub const DEFAULT_PEER_RESYNC_RATE: u32 = 500_000;
pub const DEFAULT_PEER_WARM_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_PEER_RECONNECT_MS: u64 = 500;
pub const DEFAULT_PEER_PING_MS: u64 = 1_000;
/// A hex key needs at least this many hex digits (128 bits).
pub const PSK_MIN_HEX_CHARS: usize = 32;
/// A raw (binary) key has exactly this many bytes (256 bits).
pub const PSK_RAW_BYTES: usize = 32;
/// Longer than any sane key: a wrong path (a log, a binary) is caught instead of slurped.
const PSK_MAX_FILE_BYTES: u64 = 4096;
const ID_MAX_LEN: usize = 64;

/// `[peer]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePeer {
    pub node_id: Option<String>,
    pub peer_node_id: Option<String>,
    pub cluster_id: Option<String>,
    pub listen: Option<String>,
    pub peer: Option<String>,
    pub psk_file: Option<String>,
    pub allow_from: Option<Vec<String>>,
    pub resync_rate: Option<u32>,
    pub warm_timeout_ms: Option<u64>,
    pub reconnect_ms: Option<u64>,
    pub ping_ms: Option<u64>,
}

/// The pre-shared key's bytes. `Debug` never prints them (configs get logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(pub Vec<u8>);

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psk(<{} bytes redacted>)", self.0.len())
    }
}

/// The validated `[peer]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    pub node_id: String,
    pub peer_node_id: String,
    pub cluster_id: String,
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    /// Where the key came from (resolved against the config file's directory).
    pub psk_file: PathBuf,
    pub psk: Psk,
    /// Addresses a connection to `listen` may come from; any other is closed unanswered.
    pub allow_from: Vec<IpNet>,
    /// Entries per second streamed during a full resync.
    pub resync_rate: u32,
    /// Report warm anyway if the peer stays unreachable this long after start.
    pub warm_timeout: Duration,
    pub reconnect: Duration,
    /// Keepalive interval; a peer silent for 3× this is dropped.
    pub ping: Duration,
}

/// Check a node or cluster id: 1..=64 of `[A-Za-z0-9_.-]` (they travel in HELLO and logs).
fn check_id(v: &mut Validator<'_>, key: &str, value: &Option<String>) -> Option<String> {
    let s = required(v, key, value)?;
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if s.len() > ID_MAX_LEN || !ok_chars {
        v.error(
            key,
            format!("{s:?} is not an id (valid: 1..={ID_MAX_LEN} characters of A-Z a-z 0-9 _ . -)"),
        );
        return None;
    }
    Some(s.to_string())
}

/// What a key file may hold, for the errors.
const PSK_VALID: &str = "valid: at least 32 hex digits, e.g. `openssl rand -hex 32`, or exactly \
     32 random bytes, e.g. `head -c 32 /dev/urandom`";

/// Why a key file's content is not a usable PSK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    #[error("hex key has {digits} digits, under 128 bits ({PSK_VALID})")]
    ShortHex { digits: usize },
    #[error("hex key has an odd number of digits ({digits})")]
    OddHex { digits: usize },
    #[error("holds {len} bytes of text that is not hex: a passphrase is refused ({PSK_VALID})")]
    Passphrase { len: usize },
    #[error("holds {len} bytes of binary; a raw key is exactly {PSK_RAW_BYTES} ({PSK_VALID})")]
    RawLength { len: usize },
}

/// Why `peer.psk_file` gave no key: unreadable or exposed, or holding no usable key.
#[derive(Debug, thiserror::Error)]
pub enum PskFileError {
    #[error(transparent)]
    File(#[from] PrivateFileError),
    #[error("{}: {source}", .path.display())]
    Content { path: PathBuf, source: PskError },
}

/// Decode a key file: all hex digits (surrounding whitespace trimmed) is a hex key of at
/// least [`PSK_MIN_HEX_CHARS`] digits; otherwise the file must be exactly [`PSK_RAW_BYTES`]
/// bytes of binary. Text that is not hex (a passphrase) is refused whatever its length: a
/// typed phrase has far fewer than 128 bits of entropy, and the HELLO's MAC would let anyone
/// who captures one guess it offline.
pub fn decode_psk(content: &[u8]) -> Result<Vec<u8>, PskError> {
    let trimmed = content.trim_ascii();
    let is_hex = !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit);
    if is_hex {
        if trimmed.len() < PSK_MIN_HEX_CHARS {
            return Err(PskError::ShortHex {
                digits: trimmed.len(),
            });
        }
        if !trimmed.len().is_multiple_of(2) {
            return Err(PskError::OddHex {
                digits: trimmed.len(),
            });
        }
        let nibble = |b: u8| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        return Ok(trimmed
            .chunks_exact(2)
            .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
            .collect());
    }
    let is_text = content
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if is_text {
        return Err(PskError::Passphrase { len: content.len() });
    }
    if content.len() != PSK_RAW_BYTES {
        return Err(PskError::RawLength { len: content.len() });
    }
    Ok(content.to_vec())
}

/// Read the key file: private to lbd's user (mode 0600 or stricter, owned by it) and decoded
/// by [`decode_psk`].
fn read_psk(path: &Path) -> Result<Vec<u8>, PskFileError> {
    let content = read_private_file(path, PSK_MAX_FILE_BYTES, "lbd")?;
    decode_psk(&content).map_err(|source| PskFileError::Content {
        path: path.to_path_buf(),
        source,
    })
}

/// `peer.allow_from`: IPs and CIDRs; by default the peer's own address.
fn check_allow_from(
    v: &mut Validator<'_>,
    file: &Option<Vec<String>>,
    peer: Option<SocketAddr>,
) -> Option<Vec<IpNet>> {
    const KEY: &str = "peer.allow_from";
    let Some(list) = file else {
        return peer.map(|p| vec![IpNet::from(p.ip().to_canonical())]);
    };
    if list.is_empty() {
        v.error(
            KEY,
            "must list at least one address (the peer's), or be left out to allow only              the IP of `peer.peer`",
        );
        return None;
    }
    let mut nets = Vec::new();
    for s in list {
        let net = s
            .parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from));
        match net {
            Some(n) => nets.push(n.trunc()),
            None => v.error(
                KEY,
                format!(
                    "{s:?} is not an IP address or CIDR (e.g. \"10.0.0.2\", \"10.0.0.0/24\", \
                     \"fd00::/64\")"
                ),
            ),
        }
    }
    (nets.len() == list.len()).then_some(nets)
}

/// Check `[peer]`, recording every problem in `v`.
pub fn validate_peer(file: &FilePeer, v: &mut Validator<'_>) -> Option<PeerConfig> {
    let node_id = check_id(v, "peer.node_id", &file.node_id);
    let peer_node_id = check_id(v, "peer.peer_node_id", &file.peer_node_id);
    if let (Some(a), Some(b)) = (&node_id, &peer_node_id) {
        if a == b {
            v.error(
                "peer.peer_node_id",
                format!("{b:?} is this node's own node_id (the two nodes need different ids)"),
            );
        }
    }
    let cluster_id = check_id(v, "peer.cluster_id", &file.cluster_id);
    let listen =
        required(v, "peer.listen", &file.listen).and_then(|s| parse_addr(v, "peer.listen", s));
    let peer = required(v, "peer.peer", &file.peer).and_then(|s| parse_addr(v, "peer.peer", s));
    if let (Some(l), Some(p)) = (listen, peer) {
        if l == p {
            v.error(
                "peer.peer",
                format!("{p} is this node's own listen address (it would dial itself)"),
            );
        }
    }
    let psk_file = required(v, "peer.psk_file", &file.psk_file).map(|p| {
        let p = PathBuf::from(p);
        match v.source().path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        }
    });
    let psk = psk_file.as_ref().and_then(|p| match read_psk(p) {
        Ok(k) => Some(Psk(k)),
        Err(e) => {
            v.error("peer.psk_file", e);
            None
        }
    });
    let allow_from = check_allow_from(v, &file.allow_from, peer);
    let resync_rate = file.resync_rate.unwrap_or(DEFAULT_PEER_RESYNC_RATE);
    v.check_range("peer.resync_rate", resync_rate, 1, 100_000_000);
    let warm_timeout = check_ms(
        v,
        "peer.warm_timeout_ms",
        file.warm_timeout_ms,
        DEFAULT_PEER_WARM_TIMEOUT_MS,
        0,
        3_600_000,
    );
    let reconnect = check_ms(
        v,
        "peer.reconnect_ms",
        file.reconnect_ms,
        DEFAULT_PEER_RECONNECT_MS,
        10,
        60_000,
    );
    let ping = check_ms(
        v,
        "peer.ping_ms",
        file.ping_ms,
        DEFAULT_PEER_PING_MS,
        10,
        60_000,
    );
    Some(PeerConfig {
        node_id: node_id?,
        peer_node_id: peer_node_id?,
        cluster_id: cluster_id?,
        listen: listen?,
        peer: peer?,
        psk_file: psk_file?,
        psk: psk?,
        allow_from: allow_from?,
        resync_rate,
        warm_timeout,
        reconnect,
        ping,
    })
}

#[cfg(test)]
mod tests {
    use super::super::LbConfig;
    use super::*;
    use shared::config::{ConfigError, Source};

    const BASE: &str = r#"
[[listener]]
name = "http"
address = "127.0.0.1:8080"

[[pool]]
name = "web"
[[pool.backend]]
address = "127.0.0.1:9001"
"#;

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            let dir = tempfile::tempdir().expect("tempdir");
            let d = Dir { dir };
            d.write_key("good.key", b"00112233445566778899aabbccddeeff\n", 0o600);
            d
        }

        /// A key file with `mode` (git keeps no modes: every key a test makes is chmod'ed).
        fn write_key(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let p = self.dir.path().join(name);
            std::fs::write(&p, content).expect("write key");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p
        }

        fn load(&self, peer: &str) -> Result<LbConfig, ConfigError> {
            let text = format!("{BASE}\n[peer]\n{peer}\n");
            let path = self.dir.path().join("lbd.toml");
            LbConfig::from_source(&Source::from_text(path, text))
        }

        fn errors(&self, peer: &str) -> String {
            match self.load(peer) {
                Ok(_) => panic!("[peer] was accepted:\n{peer}"),
                Err(e) => e.to_string(),
            }
        }
    }

    const GOOD: &str = r#"node_id = "lb-a"
peer_node_id = "lb-b"
cluster_id = "pair-1"
listen = "127.0.0.1:7946"
peer = "127.0.0.2:7946"
psk_file = "good.key""#;

    #[test]
    fn good_peer_table_is_typed_with_defaults() {
        let d = Dir::new();
        let c = d.load(GOOD).expect("valid").peer.expect("peer configured");
        assert_eq!(c.node_id, "lb-a");
        assert_eq!(c.peer_node_id, "lb-b");
        assert_eq!(c.cluster_id, "pair-1");
        assert_eq!(c.listen, "127.0.0.1:7946".parse().expect("addr"));
        assert_eq!(c.peer, "127.0.0.2:7946".parse().expect("addr"));
        assert_eq!(c.psk.0.len(), 16);
        assert_eq!(c.psk.0[..3], [0x00, 0x11, 0x22]);
        assert_eq!(c.psk_file, d.dir.path().join("good.key"));
        assert_eq!(c.resync_rate, DEFAULT_PEER_RESYNC_RATE);
        assert_eq!(
            c.warm_timeout,
            Duration::from_millis(DEFAULT_PEER_WARM_TIMEOUT_MS)
        );
        assert_eq!(
            c.reconnect,
            Duration::from_millis(DEFAULT_PEER_RECONNECT_MS)
        );
        assert_eq!(c.ping, Duration::from_millis(DEFAULT_PEER_PING_MS));
        assert!(
            !format!("{c:?}").contains("0011"),
            "Debug must not print the key"
        );
    }

    #[test]
    fn no_peer_table_means_no_link() {
        let c = LbConfig::from_source(&Source::from_text("t.toml", BASE)).expect("valid");
        assert!(c.peer.is_none());
    }

    #[test]
    fn every_bad_value_is_reported_with_key_and_valid_values() {
        let d = Dir::new();
        let text = r#"node_id = "lb a"
peer_node_id = "lb-b"
cluster_id = ""
listen = "nowhere"
peer = "127.0.0.2:7946"
psk_file = "missing.key"
resync_rate = 0
reconnect_ms = 1
ping_ms = 100000"#;
        let e = d.errors(text);
        for want in [
            "`peer.node_id`: \"lb a\" is not an id (valid: 1..=64 characters",
            "`peer.cluster_id`: must not be empty",
            "`peer.listen`: \"nowhere\" is not an IP:port address",
            "`peer.psk_file`: cannot read",
            "`peer.resync_rate`: 0 is out of range (valid: 1..=100000000)",
            "`peer.reconnect_ms`: 1 is out of range (valid: 10..=60000)",
            "`peer.ping_ms`: 100000 is out of range (valid: 10..=60000)",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        // Positions: the file's line of each key.
        assert!(e.contains("lbd.toml:12:1: `peer.node_id`"), "{e}");
        assert_eq!(e.matches("`peer.").count(), 7, "{e}");
    }

    #[test]
    fn required_keys_and_distinct_ids() {
        let d = Dir::new();
        let e = d.errors("");
        for key in [
            "node_id",
            "peer_node_id",
            "cluster_id",
            "listen",
            "peer",
            "psk_file",
        ] {
            assert!(
                e.contains(&format!("`peer.{key}`: is required")),
                "{key}: {e}"
            );
        }
        let same = GOOD.replace("\"lb-b\"", "\"lb-a\"");
        assert!(d
            .errors(&same)
            .contains("`peer.peer_node_id`: \"lb-a\" is this node's own node_id"));
        let self_dial = GOOD.replace("127.0.0.2:7946", "127.0.0.1:7946");
        assert!(d
            .errors(&self_dial)
            .contains("`peer.peer`: 127.0.0.1:7946 is this node's own listen address"));
        let long = GOOD.replace("pair-1", &"x".repeat(65));
        assert!(d.errors(&long).contains("`peer.cluster_id`"));
        let unknown = format!("{GOOD}\nplaintext = true");
        assert!(d.errors(&unknown).contains("unknown field `plaintext`"));
    }

    #[test]
    fn short_or_bad_keys_are_config_errors_naming_the_key() {
        let d = Dir::new();
        for (content, want) in [
            (
                &b"0011223344556677\n"[..],
                "hex key has 16 digits, under 128 bits (valid: at least 32 hex digits",
            ),
            (
                b"short raw key",
                "holds 13 bytes of text that is not hex: a passphrase is refused",
            ),
            (
                b"a passphrase of exactly 32 bytes",
                "a passphrase is refused",
            ),
            (b"", "holds 0 bytes of text"),
            (b"00112233445566778899aabbccddeeff0", "odd number of digits"),
            (
                &[0xff; 31],
                "holds 31 bytes of binary; a raw key is exactly 32",
            ),
        ] {
            d.write_key("bad.key", content, 0o600);
            let e = d.errors(&GOOD.replace("good.key", "bad.key"));
            assert!(e.contains("`peer.psk_file`"), "{e}");
            assert!(e.contains(want), "{content:?}: want {want:?} in {e}");
        }
        d.write_key("big.key", &[b'k'; 5000], 0o600);
        assert!(d
            .errors(&GOOD.replace("good.key", "big.key"))
            .contains("too large for a secret"));
    }

    #[test]
    fn a_key_file_others_can_read_is_a_config_error() {
        let d = Dir::new();
        for mode in [0o644, 0o640, 0o604] {
            let p = d.write_key("open.key", b"00112233445566778899aabbccddeeff", mode);
            let e = d.errors(&GOOD.replace("good.key", "open.key"));
            let want = format!(
                "`peer.psk_file`: {} has mode {mode:04o}; it must be 0600 or stricter (no group \
                 or other access): chmod 600 {}",
                p.display(),
                p.display()
            );
            assert!(e.contains(&want), "want {want:?} in {e}");
        }
        d.write_key("ro.key", b"00112233445566778899aabbccddeeff", 0o400);
        assert!(d.load(&GOOD.replace("good.key", "ro.key")).is_ok());
        // Owned by another user: refused even at 0600 (only root can make such a file).
        if nix::unistd::geteuid().is_root() {
            let p = d.write_key("theirs.key", b"00112233445566778899aabbccddeeff", 0o600);
            std::os::unix::fs::chown(&p, Some(65534), None).expect("chown");
            let e = d.errors(&GOOD.replace("good.key", "theirs.key"));
            assert!(
                e.contains("is owned by uid 65534; it must be owned by uid 0"),
                "{e}"
            );
        }
    }

    #[test]
    fn raw_and_absolute_keys_are_accepted() {
        let d = Dir::new();
        let bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x80).collect();
        let raw = d.write_key("raw.key", &bytes, 0o600);
        let text = GOOD.replace("\"good.key\"", &format!("{:?}", raw.display().to_string()));
        let c = d.load(&text).expect("valid").peer.expect("peer");
        assert_eq!(c.psk.0, bytes);
        assert_eq!(c.psk_file, raw);
    }

    #[test]
    fn allow_from_defaults_to_the_peer_and_takes_ips_and_cidrs() {
        let d = Dir::new();
        let c = d.load(GOOD).expect("valid").peer.expect("peer");
        assert_eq!(
            c.allow_from,
            vec!["127.0.0.2/32".parse::<IpNet>().expect("net")]
        );
        let c = d
            .load(&format!(
                "{GOOD}\nallow_from = [\"10.0.0.2\", \"10.1.0.0/16\", \"fd00::1/64\"]"
            ))
            .expect("valid")
            .peer
            .expect("peer");
        let want: Vec<IpNet> = ["10.0.0.2/32", "10.1.0.0/16", "fd00::/64"]
            .iter()
            .map(|s| s.parse().expect("net"))
            .collect();
        assert_eq!(c.allow_from, want);
        let e = d.errors(&format!("{GOOD}\nallow_from = [\"10.0.0.300\", \"x/8\"]"));
        assert!(
            e.contains("`peer.allow_from`: \"10.0.0.300\" is not an IP address or CIDR"),
            "{e}"
        );
        assert!(e.contains("\"x/8\" is not an IP address or CIDR"), "{e}");
        let e = d.errors(&format!("{GOOD}\nallow_from = []"));
        assert!(
            e.contains("`peer.allow_from`: must list at least one address"),
            "{e}"
        );
    }

    #[test]
    fn decode_psk_hex_case_and_whitespace() {
        assert_eq!(
            decode_psk(b"  AABBCCDDEEFF00112233445566778899 \n").expect("hex"),
            vec![
                0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                0x88, 0x99
            ]
        );
    }
}
