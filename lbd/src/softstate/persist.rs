//! The state file (`global.soft_state_file`): the soft state survives a restart or crash of
//! lbd on the same node, so a restarted node is nearly warm before its peer's resync starts,
//! and a peer killed during that resync costs (almost) nothing.
//!
//! # Format
//!
//! An append-only journal of the tables' own replication records ([`Record`], each table's
//! codec), in batches:
//!
//! ```text
//! file   = MAGIC (8) | boot id (36, ASCII, from /proc/sys/kernel/random/boot_id) | batch*
//! batch  = payload length u32 | first 8 bytes of SHA-256(payload) | payload
//! payload= CLOCK_BOOTTIME ns u64 | wall clock ns since 1970 u64 | record count u32 | record*
//! record = table u8 | key length u16 | key | value length u16 | value
//! ```
//!
//! Integers are big endian. A record's times are relative to the moment it was encoded (an
//! age, a remaining TTL): lbd's own clock starts at 0 in every process, so each batch carries
//! clocks that survive a restart. At load, a batch written in this boot is aged by the
//! CLOCK_BOOTTIME difference (monotonic, counts suspend); one from an earlier boot by the wall
//! clock difference (never negative). Aged records are merged like a peer's: the merges are
//! joins, so replaying the journal in any order gives the same table, and the newest write of
//! each key wins. Expired ones are dropped.
//!
//! A truncated last batch (lbd killed mid-write) ends the load; a batch whose checksum fails
//! is skipped and counted; a length past [`MAX_BATCH_PAYLOAD`] or a bad header ends the load,
//! counted. Nothing in the file can make lbd panic or refuse to start.
//!
//! # Writing
//!
//! Each table keeps a second coalescing change feed ([`super::changes`]) holding local
//! writes AND merges (on a backup nearly everything arrives by merge). A background thread
//! drains it every `flush` (default 20 ms), reads each key's current record and appends one
//! write per batch; the data path never touches the disk. Appends are not fsynced: they
//! survive a crash of lbd (the page cache is the kernel's), and a power loss costs what the
//! kernel had not written back, a stale state the peer's resync repairs anyway. The
//! journal is compacted (the live table written to `FILE.tmp` in the same directory,
//! fsynced, renamed over the file, the directory fsynced) at start after loading, and when it
//! grows past twice the last compaction's size plus [`COMPACT_FLOOR`]; after a write error
//! (the journal may now end in a partial batch) the next flush compacts instead of appending,
//! at most once a second.
//!
//! # Permissions
//!
//! The file holds applications' session cookies and API keys. It is created mode 0600, never
//! through a symlink (`O_NOFOLLOW`, `O_EXCL` for the temporary file); an existing file that
//! is not a regular file, has any group or other permission, or belongs to another user than
//! the one lbd runs as is refused at start, as is a directory that group or others may write
//! (they could replace the file).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use shared::peer::{Record, RecordKey, ReplicaStore, Table};
use tracing::{info, warn};

use super::SoftState;
use crate::clock;
use crate::metrics::Exposition;

/// First bytes of a state file (the last one is the format version).
pub const MAGIC: &[u8; 8] = b"LBDSOFT\x01";
/// Length of the boot id in the header.
const BOOT_ID_LEN: usize = 36;
const HEADER_LEN: usize = MAGIC.len() + BOOT_ID_LEN;
/// The clocks and record count at the start of each payload.
const PAYLOAD_HEAD_LEN: usize = 8 + 8 + 4;
/// A batch is cut once its payload passes this (one record always fits: keys and values are
/// bounded by u16 lengths). A longer length read back is damage, not a batch.
pub const MAX_BATCH_PAYLOAD: usize = 1 << 20;
/// Compaction waits until the journal is this much larger than twice the live table, so a
/// small table is not rewritten every few flushes.
pub const COMPACT_FLOOR: u64 = 1 << 20;
/// The default flush interval of the writer.
pub const DEFAULT_FLUSH: Duration = Duration::from_millis(20);
/// How soon a failed write is retried (by a full rewrite).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why the state file cannot be used: lbd refuses to start (the file is secret material).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "soft state file {path}: has mode {mode:04o}; it must be 0600 or stricter (no group \
         or other access): chmod 600 {path}"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "soft state file {path}: owned by uid {owner}; it must be owned by uid {me}, the user \
         lbd runs as"
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error("soft state file {path}: not a regular file (a symlink is not followed)")]
    NotRegular { path: PathBuf },
    #[error(
        "soft state file {path}: its directory {dir} has mode {mode:04o}; group and others \
         must not be able to write it (they could replace the file): chmod go-w {dir}"
    )]
    DirWritable {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error(
        "soft state file {path}: its directory {dir} is owned by uid {owner}; it must belong \
         to uid {me} (the user lbd runs as) or root"
    )]
    DirOwner {
        path: PathBuf,
        dir: PathBuf,
        owner: u32,
        me: u32,
    },
    #[error("soft state file {path}: cannot {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn shown(path: &Path) -> PathBuf {
    path.to_path_buf()
}

/// The state file's counters, rendered as `lbd_soft_state_file_*` (only when a file is set).
#[derive(Default)]
pub struct FileStats {
    enabled: AtomicBool,
    bytes_written: AtomicU64,
    records_written: AtomicU64,
    write_errors: AtomicU64,
    compactions: AtomicU64,
    size_bytes: AtomicU64,
    loaded: AtomicU64,
    load_expired: AtomicU64,
    load_rejected: AtomicU64,
    load_corrupt_batches: AtomicU64,
    load_truncated_bytes: AtomicU64,
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// What a load found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records merged (whether or not they changed the table: a key's older writes too).
    pub merged: u64,
    /// Records that had expired by now.
    pub expired: u64,
    /// Records a table refused (malformed, over a bound).
    pub rejected: u64,
    /// Batches skipped for a bad checksum or malformed content, plus one for a bad header
    /// or an impossible length (which end the load).
    pub corrupt_batches: u64,
    /// Bytes of an incomplete last batch (a crash mid-write).
    pub truncated_bytes: u64,
}

/// The clocks stored with each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Clocks {
    boottime_ns: u64,
    wall_ns: u64,
}

fn read_clocks() -> Clocks {
    let boottime_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            u64::try_from(t.tv_sec())
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
        })
        .unwrap_or(0);
    let wall_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Clocks {
        boottime_ns,
        wall_ns,
    }
}

type BootId = [u8; BOOT_ID_LEN];

/// This boot's id (all zeros if the kernel does not say: then only the wall clock ages).
fn read_boot_id() -> BootId {
    let mut id = [0u8; BOOT_ID_LEN];
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let s = s.trim().as_bytes();
        let n = s.len().min(BOOT_ID_LEN);
        id[..n].copy_from_slice(&s[..n]);
    }
    id
}

/// How long before `now` a batch stamped `then` was written, in ns (never negative).
fn elapsed_since(then: Clocks, same_boot: bool, now: Clocks) -> i64 {
    let d = if same_boot {
        now.boottime_ns.saturating_sub(then.boottime_ns)
    } else {
        now.wall_ns.saturating_sub(then.wall_ns)
    };
    i64::try_from(d).unwrap_or(i64::MAX)
}

// ---- encoding ----

/// Append `records` to `out` as batches of at most about [`MAX_BATCH_PAYLOAD`] bytes.
fn encode_batches(out: &mut Vec<u8>, records: &[Record], clocks: Clocks) {
    let mut rest = records;
    while !rest.is_empty() {
        let mut payload = Vec::with_capacity(PAYLOAD_HEAD_LEN + 64 * rest.len().min(4096));
        payload.extend_from_slice(&clocks.boottime_ns.to_be_bytes());
        payload.extend_from_slice(&clocks.wall_ns.to_be_bytes());
        payload.extend_from_slice(&[0; 4]);
        let mut count: u32 = 0;
        while let Some((r, tail)) = rest.split_first() {
            if count > 0 && payload.len() + record_len(r) > MAX_BATCH_PAYLOAD {
                break;
            }
            rest = tail;
            if encode_record(&mut payload, r) {
                count += 1;
            }
        }
        payload[16..20].copy_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&checksum(&payload));
        out.extend_from_slice(&payload);
    }
}

fn record_len(r: &Record) -> usize {
    5 + r.key.len() + r.value.len()
}

/// Append one record; `false` (nothing written) if a field is too long for its u16 length,
/// which no table produces.
fn encode_record(out: &mut Vec<u8>, r: &Record) -> bool {
    let (Ok(klen), Ok(vlen)) = (u16::try_from(r.key.len()), u16::try_from(r.value.len())) else {
        return false;
    };
    out.push(r.table as u8);
    out.extend_from_slice(&klen.to_be_bytes());
    out.extend_from_slice(&r.key);
    out.extend_from_slice(&vlen.to_be_bytes());
    out.extend_from_slice(&r.value);
    true
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(payload);
    let mut c = [0u8; 8];
    c.copy_from_slice(&d[..8]);
    c
}

fn header(boot_id: &BootId) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(boot_id);
    h
}

// ---- decoding ----

/// A cursor that yields `None` instead of reading past the end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(u64::from_be_bytes(a))
    }
}

/// One checked batch's records, or `None` if its content does not parse.
fn decode_payload(payload: &[u8]) -> Option<(Clocks, Vec<Record>)> {
    let mut c = Cursor(payload);
    let clocks = Clocks {
        boottime_ns: c.u64()?,
        wall_ns: c.u64()?,
    };
    let count = c.u32()? as usize;
    // Each record takes at least 5 bytes: a count beyond that is damage, not a reason to
    // allocate.
    let mut records = Vec::with_capacity(count.min(payload.len() / 5));
    for _ in 0..count {
        let table = Table::from_u8(c.take(1)?[0])?;
        let klen = c.u16()? as usize;
        let key = c.take(klen)?.to_vec();
        let vlen = c.u16()? as usize;
        let value = c.take(vlen)?.to_vec();
        records.push(Record { table, key, value });
    }
    c.0.is_empty().then_some((clocks, records))
}

/// `record` aged by `elapsed` ns (its table's codec); `Err` if the table cannot read it.
fn aged(record: &Record, elapsed: i64) -> Result<Option<Record>, ()> {
    let value = match record.table {
        Table::Sticky => super::sticky::aged(&record.value, elapsed),
        Table::RateLimit => super::ratelimit::aged(&record.value, elapsed),
        Table::Admin => super::admin::aged(&record.value, elapsed),
    }
    .map_err(|_| ())?;
    Ok(value.map(|value| Record {
        table: record.table,
        key: record.key.clone(),
        value,
    }))
}

/// Merge every record of a state file's bytes into `soft`.
fn load_bytes(bytes: &[u8], soft: &SoftState, now_clocks: Clocks, boot_id: &BootId) -> LoadReport {
    let mut report = LoadReport::default();
    if bytes.is_empty() {
        return report;
    }
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        report.corrupt_batches += 1;
        return report;
    }
    let same_boot = &bytes[MAGIC.len()..HEADER_LEN] == boot_id && boot_id.iter().any(|&b| b != 0);
    let now = clock::now();
    let mut guard = soft.lock();
    let mut c = Cursor(&bytes[HEADER_LEN..]);
    while !c.0.is_empty() {
        let left = c.0.len();
        let (Some(len), Some(sum)) = (c.u32(), c.take(8)) else {
            report.truncated_bytes += left as u64;
            break;
        };
        let len = len as usize;
        if !(PAYLOAD_HEAD_LEN..=MAX_BATCH_PAYLOAD).contains(&len) {
            // The framing itself is damaged: nothing after it can be trusted to line up.
            report.corrupt_batches += 1;
            break;
        }
        let Some(payload) = c.take(len) else {
            report.truncated_bytes += left as u64;
            break;
        };
        let decoded = (checksum(payload) == sum).then(|| decode_payload(payload));
        let Some(Some((clocks, records))) = decoded else {
            report.corrupt_batches += 1;
            continue;
        };
        let elapsed = elapsed_since(clocks, same_boot, now_clocks);
        for r in &records {
            match aged(r, elapsed) {
                Ok(Some(r)) => match guard.merge(&r, now) {
                    Ok(_) => report.merged += 1,
                    Err(_) => report.rejected += 1,
                },
                Ok(None) => report.expired += 1,
                Err(()) => report.rejected += 1,
            }
        }
    }
    report
}

// ---- the file ----

/// Refuse a directory that others could write into (they could swap the file).
fn check_dir(path: &Path) -> Result<PathBuf, FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = std::fs::metadata(&dir).map_err(|source| FileError::Io {
        path: shown(path),
        op: "read its directory",
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(FileError::DirWritable {
            path: shown(path),
            dir,
            mode,
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(FileError::DirOwner {
            path: shown(path),
            dir,
            owner: meta.uid(),
            me,
        });
    }
    Ok(dir)
}

/// The existing file's bytes (`None`: there is none yet), after the owner and mode checks,
/// made on the opened file, never through a symlink.
fn read_existing(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(FileError::NotRegular { path: shown(path) })
        }
        Err(source) => {
            return Err(FileError::Io {
                path: shown(path),
                op: "open it",
                source,
            })
        }
    };
    let io = |op, source| FileError::Io {
        path: shown(path),
        op,
        source,
    };
    let meta = file.metadata().map_err(|e| io("stat it", e))?;
    check_private(path, &meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|e| io("read it", e))?;
    Ok(Some(bytes))
}

fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), FileError> {
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular { path: shown(path) });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileError::Mode {
            path: shown(path),
            mode,
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(FileError::Owner {
            path: shown(path),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// The journal being appended to.
struct Journal {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    boot_id: BootId,
    /// Bytes in the file now.
    size: u64,
    /// The file's size right after the last compaction: the live table's.
    live: u64,
    /// A write failed: the file may end in a partial batch, so the next write is a full
    /// rewrite, not before this time (on lbd's clock).
    retry_at: Option<Duration>,
}

impl Journal {
    /// The journal of a file just compacted to `size` bytes (all of it live).
    fn compacted(path: &Path, dir: PathBuf, file: File, boot_id: BootId, size: u64) -> Journal {
        Journal {
            path: path.to_path_buf(),
            dir,
            file,
            boot_id,
            size,
            live: size,
            retry_at: None,
        }
    }
}

impl Journal {
    /// Write the live table to `FILE.tmp`, fsync it, rename it over the file, fsync the
    /// directory; the temporary file becomes the journal.
    fn compact(&mut self, soft: &SoftState) -> io::Result<()> {
        let (file, size) = write_snapshot(&self.path, &self.dir, &self.boot_id, soft)?;
        self.file = file;
        self.size = size;
        self.live = size;
        self.retry_at = None;
        let stats = soft.file_stats();
        add(&stats.compactions, 1);
        stats.size_bytes.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// Append `records`, encoded relative to the moment `clocks` were read.
    fn append(&mut self, soft: &SoftState, records: &[Record], clocks: Clocks) -> io::Result<()> {
        let mut buf = Vec::new();
        encode_batches(&mut buf, records, clocks);
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        let stats = soft.file_stats();
        add(&stats.bytes_written, buf.len() as u64);
        add(&stats.records_written, records.len() as u64);
        stats.size_bytes.store(self.size, Ordering::Relaxed);
        Ok(())
    }

    fn wants_compaction(&self) -> bool {
        self.size > self.live.saturating_mul(2).saturating_add(COMPACT_FLOOR)
    }

    /// One flush: append what changed (or rewrite the file after a failed write).
    fn flush(&mut self, soft: &SoftState) {
        let keys = soft.take_file_changes();
        let (now, clocks) = (clock::now(), read_clocks());
        let result = if let Some(at) = self.retry_at {
            if now < at {
                // The keys taken are not lost: the rewrite reads the whole table.
                return;
            }
            self.compact(soft)
        } else if self.wants_compaction() {
            self.compact(soft)
        } else if keys.is_empty() {
            return;
        } else {
            let records = current_records(soft, &keys, now);
            self.append(soft, &records, clocks)
        };
        if let Err(e) = result {
            self.retry_at = Some(now + RETRY_AFTER);
            add(&soft.file_stats().write_errors, 1);
            warn!(path = %self.path.display(), error = %e, "cannot write the soft state file; retrying by a full rewrite");
        }
    }
}

fn current_records(soft: &SoftState, keys: &[RecordKey], now: Duration) -> Vec<Record> {
    let guard = soft.lock();
    keys.iter().filter_map(|k| guard.record(k, now)).collect()
}

/// Write the whole table to a fresh temporary file and rename it over `path`.
fn write_snapshot(
    path: &Path,
    dir: &Path,
    boot_id: &BootId,
    soft: &SoftState,
) -> io::Result<(File, u64)> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash mid-compaction (removing a symlink removes the link only).
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    // The records are encoded relative to `now`, however long reading them takes: the batch
    // clocks must be read at that same moment.
    let (now, clocks) = (clock::now(), read_clocks());
    let keys = soft.lock().keys();
    let records = current_records(soft, &keys, now);
    let mut buf = header(boot_id);
    encode_batches(&mut buf, &records, clocks);
    let written = file.write_all(&buf).and_then(|()| file.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()?;
    let stats = soft.file_stats();
    add(&stats.bytes_written, buf.len() as u64);
    add(&stats.records_written, records.len() as u64);
    Ok((file, buf.len() as u64))
}

/// Load `path` into `soft` (before serving and before the peer link starts), rewrite it
/// compacted, then keep it up to date from a background thread every `flush`. Refuses a file
/// or directory others could read or write.
pub fn start(path: &Path, flush: Duration, soft: &Arc<SoftState>) -> Result<LoadReport, FileError> {
    let dir = check_dir(path)?;
    let boot_id = read_boot_id();
    let report = match read_existing(path)? {
        Some(bytes) => load_bytes(&bytes, soft, read_clocks(), &boot_id),
        None => LoadReport::default(),
    };
    let stats = soft.file_stats();
    stats.enabled.store(true, Ordering::Relaxed);
    stats.loaded.store(report.merged, Ordering::Relaxed);
    stats.load_expired.store(report.expired, Ordering::Relaxed);
    stats
        .load_rejected
        .store(report.rejected, Ordering::Relaxed);
    stats
        .load_corrupt_batches
        .store(report.corrupt_batches, Ordering::Relaxed);
    stats
        .load_truncated_bytes
        .store(report.truncated_bytes, Ordering::Relaxed);
    // From here on every change, local or merged, is noted for the file.
    soft.set_file_feed(true);
    let (file, size) =
        write_snapshot(path, &dir, &boot_id, soft).map_err(|source| FileError::Io {
            path: shown(path),
            op: "write it",
            source,
        })?;
    add(&stats.compactions, 1);
    stats.size_bytes.store(size, Ordering::Relaxed);
    info!(
        path = %path.display(),
        records = report.merged,
        expired = report.expired,
        rejected = report.rejected,
        corrupt_batches = report.corrupt_batches,
        truncated_bytes = report.truncated_bytes,
        "soft state file loaded"
    );
    let journal = Journal::compacted(path, dir, file, boot_id, size);
    spawn_writer(journal, flush, Arc::downgrade(soft)).map_err(|source| FileError::Io {
        path: shown(path),
        op: "start its writer thread",
        source,
    })?;
    Ok(report)
}

/// The writer thread: flushes every `flush` until the soft state is gone.
fn spawn_writer(mut journal: Journal, flush: Duration, soft: Weak<SoftState>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("lbd-softstate-file".into())
        .spawn(move || loop {
            std::thread::sleep(flush);
            let Some(soft) = soft.upgrade() else { return };
            journal.flush(&soft);
        })
        .map(drop)
}

/// The `lbd_soft_state_file_*` families (nothing without a state file).
pub fn render_metrics(soft: &SoftState, e: &mut Exposition) {
    let s = soft.file_stats();
    if !s.enabled.load(Ordering::Relaxed) {
        return;
    }
    let counters: [(&str, &str, &AtomicU64); 4] = [
        (
            "lbd_soft_state_file_bytes_written_total",
            "Bytes written to the soft state file (journal appends and compactions).",
            &s.bytes_written,
        ),
        (
            "lbd_soft_state_file_records_written_total",
            "Records written to the soft state file (journal appends and compactions).",
            &s.records_written,
        ),
        (
            "lbd_soft_state_file_write_errors_total",
            "Failed writes of the soft state file (each retried by a full rewrite).",
            &s.write_errors,
        ),
        (
            "lbd_soft_state_file_compactions_total",
            "Rewrites of the soft state file with only the live table (at start and when the \
             journal outgrows it).",
            &s.compactions,
        ),
    ];
    for (name, help, v) in counters {
        e.family(name, "counter", help);
        e.sample(name, &[], get(v));
    }
    e.family(
        "lbd_soft_state_file_size_bytes",
        "gauge",
        "Current size of the soft state file.",
    );
    e.sample("lbd_soft_state_file_size_bytes", &[], get(&s.size_bytes));
    e.family(
        "lbd_soft_state_file_loaded_records",
        "gauge",
        "Records read from the soft state file at start, by outcome (merged; expired: dropped; \
         rejected: a table refused it).",
    );
    for (outcome, v) in [
        ("merged", &s.loaded),
        ("expired", &s.load_expired),
        ("rejected", &s.load_rejected),
    ] {
        e.sample(
            "lbd_soft_state_file_loaded_records",
            &[("outcome", outcome)],
            get(v),
        );
    }
    e.family(
        "lbd_soft_state_file_load_damage",
        "gauge",
        "Damage found in the soft state file at start (corrupt_batches: skipped or ending \
         the load; truncated_bytes: an incomplete last batch, a crash mid-write).",
    );
    for (kind, v) in [
        ("corrupt_batches", &s.load_corrupt_batches),
        ("truncated_bytes", &s.load_truncated_bytes),
    ] {
        e.sample("lbd_soft_state_file_load_damage", &[("kind", kind)], get(v));
    }
}

#[cfg(test)]
mod tests;
