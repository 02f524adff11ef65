//! Secret files (keys, tokens): read only if private to the daemon's user.
//!
//! One reader for lbd's admin token and peer PSK and vrrpd's advert key, so both daemons
//! refuse the same things with the same messages: a file others could read, one owned by
//! someone else, a symlink, a FIFO or device, one too large for a secret.

use std::path::PathBuf;

/// Why a secret file could not be read; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("cannot read {}: {source} (a symlink is not followed)", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a regular file", .path.display())]
    NotRegular { path: PathBuf },
    #[error(
        "{} has mode {mode:04o}; it must be 0600 or stricter (no group or other access): \
         chmod 600 {}",
        .path.display(),
        .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error(
        "{} is owned by uid {owner}; it must be owned by uid {me}, the user {process} runs as",
        .path.display()
    )]
    WrongOwner {
        path: PathBuf,
        owner: u32,
        me: u32,
        process: &'static str,
    },
    #[error(
        "{} is {len} bytes, too large for a secret (at most {max_bytes})",
        .path.display()
    )]
    TooLarge {
        path: PathBuf,
        len: u64,
        max_bytes: u64,
    },
    #[error("{} grew past {max_bytes} bytes while being read", .path.display())]
    Grew { path: PathBuf, max_bytes: u64 },
}

/// Read a secret file that only its owner, the user `process` (the daemon's name, for the
/// message) runs as, may read. The checks are
/// made on the opened file (not the path, which could be swapped between a check and the
/// read), a FIFO or device can't block a reload (opened non-blocking, then refused as not a
/// regular file), and no symlink is followed at the last component.
pub fn read_private_file(
    path: &std::path::Path,
    max_bytes: u64,
    process: &'static str,
) -> Result<Vec<u8>, PrivateFileError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path_buf = || path.to_path_buf();
    let read_error = |source| PrivateFileError::Read {
        path: path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| PrivateFileError::Open {
            path: path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.file_type().is_file() {
        return Err(PrivateFileError::NotRegular { path: path_buf() });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Exposed {
            path: path_buf(),
            mode,
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PrivateFileError::WrongOwner {
            path: path_buf(),
            owner: meta.uid(),
            me,
            process,
        });
    }
    if meta.len() > max_bytes {
        return Err(PrivateFileError::TooLarge {
            path: path_buf(),
            len: meta.len(),
            max_bytes,
        });
    }
    let mut bytes = Vec::new();
    file.by_ref()
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max_bytes {
        return Err(PrivateFileError::Grew {
            path: path_buf(),
            max_bytes,
        });
    }
    Ok(bytes)
}
