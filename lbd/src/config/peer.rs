//! `[peer]`: the authenticated link to the other lbd node (issue 5).
//!
//! ```toml
//! [peer]
//! node_id = "lb-a"              # this node (1..64 of A-Z a-z 0-9 _ . -)
//! peer_node_id = "lb-b"         # the other node (must differ)
//! cluster_id = "pair-1"         # both nodes must agree, or HELLO is rejected
//! listen = "10.0.0.1:7946"      # where the other node dials us
//! peer = "10.0.0.2:7946"        # where we dial the other node
//! psk_file = "/etc/lbpair/peer.key"   # >= 32 hex chars, or >= 16 raw bytes; relative to
//!                                     # the config file's directory
//! resync_rate = 500000          # entries/s streamed during a full resync (1M entries: ~2 s)
//! warm_timeout_ms = 10000       # peer unreachable this long after start: report warm anyway
//! reconnect_ms = 500            # dial interval while not connected
//! ping_ms = 1000                # keepalive; a peer silent for 3x this is dropped
//! ```
//!
//! The key file is read at validation time, so a missing, unreadable or short key is a
//! config error at `lbd check-config` and on reload, not a link that silently never comes up.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::config::Validator;

use super::validate::{check_ms, parse_addr, required};

/// 1M entries (a full sticky table) in about 2 s, ~30 MB/s on the peer link.
pub const DEFAULT_PEER_RESYNC_RATE: u32 = 500_000;
pub const DEFAULT_PEER_WARM_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_PEER_RECONNECT_MS: u64 = 500;
pub const DEFAULT_PEER_PING_MS: u64 = 1_000;
/// A hex key needs at least this many hex digits (128 bits).
pub const PSK_MIN_HEX_CHARS: usize = 32;
/// A raw key needs at least this many bytes.
pub const PSK_MIN_RAW_BYTES: usize = 16;
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

/// Decode a key file: all hex digits (whitespace trimmed) means a hex key of at least
/// [`PSK_MIN_HEX_CHARS`] digits; anything else is a raw key of at least
/// [`PSK_MIN_RAW_BYTES`] bytes (used as is, a trailing newline included would be a trap, so
/// surrounding ASCII whitespace is trimmed for both).
pub fn decode_psk(content: &[u8]) -> Result<Vec<u8>, String> {
    let trimmed = content.trim_ascii();
    let is_hex = !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit);
    if is_hex {
        if trimmed.len() < PSK_MIN_HEX_CHARS {
            return Err(format!(
                "hex key has {} digits (valid: at least {PSK_MIN_HEX_CHARS} hex digits, or at \
                 least {PSK_MIN_RAW_BYTES} raw bytes)",
                trimmed.len()
            ));
        }
        if !trimmed.len().is_multiple_of(2) {
            return Err(format!(
                "hex key has an odd number of digits ({})",
                trimmed.len()
            ));
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
    if trimmed.len() < PSK_MIN_RAW_BYTES {
        return Err(format!(
            "key has {} bytes (valid: at least {PSK_MIN_HEX_CHARS} hex digits, or at least \
             {PSK_MIN_RAW_BYTES} raw bytes)",
            trimmed.len()
        ));
    }
    Ok(trimmed.to_vec())
}

fn read_psk(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > PSK_MAX_FILE_BYTES {
        return Err(format!(
            "{} is {} bytes, too large for a key (at most {PSK_MAX_FILE_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    let content =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode_psk(&content).map_err(|e| format!("{}: {e}", path.display()))
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
    use shared::config::Source;

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
            std::fs::write(
                dir.path().join("good.key"),
                "00112233445566778899aabbccddeeff\n",
            )
            .expect("write key");
            Dir { dir }
        }

        fn load(&self, peer: &str) -> Result<LbConfig, String> {
            let text = format!("{BASE}\n[peer]\n{peer}\n");
            let path = self.dir.path().join("lbd.toml");
            LbConfig::from_source(&Source::from_text(path, text)).map_err(|e| e.to_string())
        }

        fn errors(&self, peer: &str) -> String {
            match self.load(peer) {
                Ok(_) => panic!("[peer] was accepted:\n{peer}"),
                Err(e) => e,
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
            ("0011223344556677\n", "hex key has 16 digits"),
            ("short raw key", "key has 13 bytes"),
            ("", "key has 0 bytes"),
            ("00112233445566778899aabbccddeeff0", "odd number of digits"),
        ] {
            std::fs::write(d.dir.path().join("bad.key"), content).expect("write");
            let e = d.errors(&GOOD.replace("good.key", "bad.key"));
            assert!(e.contains("`peer.psk_file`"), "{e}");
            assert!(e.contains(want), "{content:?}: want {want:?} in {e}");
        }
        std::fs::write(d.dir.path().join("big.key"), vec![b'k'; 5000]).expect("write");
        assert!(d
            .errors(&GOOD.replace("good.key", "big.key"))
            .contains("too large for a key"));
    }

    #[test]
    fn raw_and_absolute_keys_are_accepted() {
        let d = Dir::new();
        let raw = d.dir.path().join("raw.key");
        std::fs::write(&raw, "a raw passphrase of 30 bytes!!").expect("write");
        let text = GOOD.replace("\"good.key\"", &format!("{:?}", raw.display().to_string()));
        let c = d.load(&text).expect("valid").peer.expect("peer");
        assert_eq!(c.psk.0, b"a raw passphrase of 30 bytes!!".to_vec());
        assert_eq!(c.psk_file, raw);
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
