//! `auth_key_file`: the key that signs and verifies an instance's adverts.
//!
//! Per instance rather than in `[global]`: a node may run one VRID with its lbpair peer and
//! another with some other router, and only the first can be authenticated. Both nodes of a
//! pair point their instance at files with the same key.
//!
//! The file is read at validation, so `check-config` and a reload catch a missing, short or
//! exposed key. Its rules are those of lbd's admin token, checked by the same reader
//! (`shared::private_file`): a regular file (no symlink) owned by the user vrrpd runs as,
//! no group or other access (mode 0600 or 0400), at most
//! [`MAX_KEY_FILE_BYTES`]; surrounding whitespace is not part of the key. The content is
//! either at least 64 hex digits (an even number, decoded) or, if it is not all hex, at
//! least 32 raw bytes, e.g. `openssl rand -hex 32 > FILE` or `head -c 32 /dev/urandom`.
//!
//! There is no config setting that marks a peer as keepalived or FRR, so "not together with
//! an interop peer" can't be a check here; the reference says the key is for two lbpair
//! nodes only, and a peer that sends no trailer shows up as `auth_missing` in `vrrpd status`.

use std::path::{Path, PathBuf};

use shared::config::Validator;
use shared::private_file::{read_private_file, PrivateFileError};
use shared::wire::auth::{Key, MIN_KEY_LEN};

/// A key of [`MIN_KEY_LEN`] bytes written as hex.
pub const MIN_KEY_HEX_DIGITS: usize = 2 * MIN_KEY_LEN;
/// Largest key file read: a key is a line, not a document.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// An instance's advert authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Where the key came from, resolved against the config file's directory.
    pub key_file: PathBuf,
    /// The derived key (its `Debug` prints only the key id).
    pub key: Key,
}

/// Check `instance[i].auth_key_file` and read its key; `None` (after recording an error)
/// if it is unusable.
pub(super) fn validate_auth(v: &mut Validator<'_>, key: &str, file: &str) -> Option<AuthConfig> {
    if file.trim().is_empty() {
        v.error(
            key,
            "must not be empty (remove it to send unauthenticated adverts)",
        );
        return None;
    }
    let path = match v.source().path.parent() {
        Some(dir) if Path::new(file).is_relative() => dir.join(file),
        _ => PathBuf::from(file),
    };
    match read_key(&path) {
        Ok(k) => Some(AuthConfig {
            key_file: path,
            key: k,
        }),
        Err(e) => {
            v.error(key, e);
            None
        }
    }
}

/// Why `auth_key_file` gave no key; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Unreadable, not private to vrrpd's user, not a regular file, or too large.
    #[error(transparent)]
    File(#[from] PrivateFileError),
    #[error("{}: {source}", .path.display())]
    Content { path: PathBuf, source: KeyError },
    #[error("{}: {source}", .path.display())]
    Key {
        path: PathBuf,
        source: shared::wire::auth::Error,
    },
}

/// Why a key file's content is not a usable key; each message says what a key file may hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the hex key has {digits} digits (valid: at least {MIN_KEY_HEX_DIGITS} hex digits, or at \
         least {MIN_KEY_LEN} raw bytes, e.g. `openssl rand -hex 32 > FILE`; an even number of \
         digits)"
    )]
    HexLength { digits: usize },
    #[error(
        "the key has {len} bytes (valid: at least {MIN_KEY_HEX_DIGITS} hex digits, or at least \
         {MIN_KEY_LEN} raw bytes, e.g. `openssl rand -hex 32 > FILE`)"
    )]
    RawLength { len: usize },
}

fn read_key(path: &Path) -> Result<Key, KeyFileError> {
    let path_buf = || path.to_path_buf();
    let content = read_private_file(path, MAX_KEY_FILE_BYTES, "vrrpd")?;
    let material = decode_key(&content).map_err(|source| KeyFileError::Content {
        path: path_buf(),
        source,
    })?;
    Key::new(&material).map_err(|source| KeyFileError::Key {
        path: path_buf(),
        source,
    })
}

/// Hex if every (trimmed) byte is a hex digit, else raw bytes.
pub fn decode_key(content: &[u8]) -> Result<Vec<u8>, KeyError> {
    let trimmed = content.trim_ascii();
    let is_hex = !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit);
    if is_hex {
        if trimmed.len() < MIN_KEY_HEX_DIGITS || !trimmed.len().is_multiple_of(2) {
            return Err(KeyError::HexLength {
                digits: trimmed.len(),
            });
        }
        return Ok(trimmed
            .chunks_exact(2)
            .map(|pair| (hex_digit(pair[0]) << 4) | hex_digit(pair[1]))
            .collect());
    }
    if trimmed.len() < MIN_KEY_LEN {
        return Err(KeyError::RawLength { len: trimmed.len() });
    }
    Ok(trimmed.to_vec())
}

/// The value of an ASCII hex digit (the caller has checked it is one).
fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.wrapping_sub(b'A').wrapping_add(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_raw_keys_decode() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        let k = decode_key(hex.as_bytes()).expect("64 hex digits");
        assert_eq!(k.len(), 32);
        assert_eq!((k[0], k[15], k[31]), (0x00, 0xff, 0xff));
        let raw: Vec<u8> = (0u8..40).map(|i| i.wrapping_mul(37) | 0x80).collect();
        assert_eq!(decode_key(&raw).expect("raw"), raw);
    }

    #[test]
    fn short_or_odd_keys_are_refused_with_the_rule() {
        let e = decode_key("00112233".as_bytes())
            .expect_err("8 digits")
            .to_string();
        assert!(
            e.contains("8 digits") && e.contains("at least 64 hex digits"),
            "{e}"
        );
        let odd = "0".repeat(65);
        assert!(decode_key(odd.as_bytes()).is_err());
        let e = decode_key(b"not a long key")
            .expect_err("14 raw bytes")
            .to_string();
        assert!(e.contains("14 bytes"), "{e}");
        assert!(decode_key(b"   \n").is_err());
    }
}
