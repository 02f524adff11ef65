use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::softstate::{Limits, RateDecision, RateSpec};

const S: Duration = Duration::from_secs(1);
const SPEC: RateSpec = RateSpec {
    rate_per_s: 1.0,
    burst: 2,
};

fn private_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    d
}

/// A table with a pinned session, an emptied bucket and a drain, all written at `now`.
fn populated(node: &str) -> SoftState {
    let s = SoftState::new(node, Limits::default());
    let now = clock::now();
    s.sticky_learn("app", b"SESSION-1", "10.0.0.1:80", 60 * S, now);
    s.sticky_learn("app", b"SESSION-2", "10.0.0.2:80", 60 * S, now);
    while s.rate_check("rl", b"key-1", SPEC, now) == RateDecision::Allow {}
    s.set_drained("app", "10.0.0.3:80", true, now);
    s
}

fn journal(path: &Path, soft: &SoftState) -> Journal {
    let dir = path.parent().expect("dir").to_path_buf();
    let boot_id = read_boot_id();
    let (file, size) = write_snapshot(path, &dir, &boot_id, soft).expect("snapshot");
    soft.set_file_feed(true);
    Journal::compacted(path, dir, file, boot_id, size)
}

fn load(path: &Path, node: &str) -> (SoftState, LoadReport) {
    load_at(path, node, read_clocks())
}

fn load_at(path: &Path, node: &str, clocks: Clocks) -> (SoftState, LoadReport) {
    let s = SoftState::new(node, Limits::default());
    let bytes = read_existing(path).expect("readable").unwrap_or_default();
    let r = load_bytes(&bytes, &s, clocks, &read_boot_id());
    (s, r)
}

fn assert_restored(s: &SoftState) {
    let now = clock::now();
    assert_eq!(
        s.sticky_lookup("app", b"SESSION-1", now).as_deref(),
        Some("10.0.0.1:80")
    );
    assert_eq!(
        s.sticky_lookup("app", b"SESSION-2", now).as_deref(),
        Some("10.0.0.2:80")
    );
    assert!(s.is_drained("app", "10.0.0.3:80"));
    assert!(
        matches!(
            s.rate_check("rl", b"key-1", SPEC, now),
            RateDecision::Deny { .. }
        ),
        "the emptied bucket stays empty across the restart"
    );
}

#[test]
fn round_trip_restores_every_table() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    let a = populated("a");
    journal(&path, &a);
    let mode = std::fs::metadata(&path).expect("exists").mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (b, r) = load(&path, "a");
    assert_eq!(r.merged, 4);
    assert_eq!((r.expired, r.rejected, r.corrupt_batches), (0, 0, 0));
    assert_eq!(a.digest(), b.digest());
    assert_restored(&b);
}

#[test]
fn journal_captures_local_writes_and_merges() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    let a = SoftState::new("a", Limits::default());
    let mut j = journal(&path, &a);
    // A peer's records arrive by merge (a backup's usual case); merges don't enter the peer
    // feed but must enter the file's.
    let peer = populated("b");
    let now = clock::now();
    {
        let pg = peer.lock();
        let mut ag = a.lock();
        for k in pg.keys() {
            if let Some(r) = pg.record(&k, now) {
                assert_eq!(ag.merge(&r, now), Ok(true));
            }
        }
        assert!(ag.take_changes().is_empty(), "merges are not peer changes");
    }
    a.sticky_learn("app", b"LOCAL", "10.0.0.9:80", 60 * S, now);
    j.flush(&a);
    assert!(
        a.take_file_changes().is_empty(),
        "the flush drained the feed"
    );
    assert_eq!(get(&a.file_stats().records_written), 5);
    let (b, r) = load(&path, "a");
    assert_eq!(r.merged, 5);
    assert_restored(&b);
    assert_eq!(
        b.sticky_lookup("app", b"LOCAL", clock::now()).as_deref(),
        Some("10.0.0.9:80")
    );
}

#[test]
fn newest_write_wins_on_replay() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    let a = SoftState::new("a", Limits::default());
    let mut j = journal(&path, &a);
    for (i, backend) in ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
        .iter()
        .enumerate()
    {
        let now = clock::now() + S * i as u32;
        a.sticky_learn("app", b"S", backend, 60 * S, now);
        j.flush(&a);
    }
    let (b, r) = load(&path, "a");
    assert_eq!(r.merged, 3);
    assert_eq!(
        b.sticky_lookup("app", b"S", clock::now()).as_deref(),
        Some("10.0.0.3:80")
    );
}

/// A journal of one snapshot plus one appended batch per session.
fn journal_of_batches(path: &Path, n: usize) -> SoftState {
    let a = SoftState::new("a", Limits::default());
    let mut j = journal(path, &a);
    for i in 0..n {
        let cookie = format!("S{i}");
        a.sticky_learn(
            "app",
            cookie.as_bytes(),
            "10.0.0.1:80",
            60 * S,
            clock::now(),
        );
        j.flush(&a);
    }
    a
}

#[test]
fn truncated_last_batch_is_skipped() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    journal_of_batches(&path, 3);
    let len = std::fs::metadata(&path).expect("exists").len();
    for cut in [1, 5, 13, 20] {
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - cut).expect("truncate");
        let (b, r) = load(&path, "a");
        assert_eq!(r.merged, 2, "cut {cut}");
        assert!(r.truncated_bytes > 0, "cut {cut}");
        assert_eq!(r.corrupt_batches, 0, "cut {cut}");
        assert!(b.sticky_lookup("app", b"S1", clock::now()).is_some());
        assert!(b.sticky_lookup("app", b"S2", clock::now()).is_none());
        // Restore for the next cut: rebuild the journal.
        std::fs::remove_file(&path).expect("rm");
        journal_of_batches(&path, 3);
    }
}

#[test]
fn corrupt_batch_is_counted_and_skipped() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    journal_of_batches(&path, 3);
    let mut bytes = std::fs::read(&path).expect("read");
    // The snapshot batch is empty (count 0): header, then batch 0 (S0), 1 (S1), 2 (S2).
    // Flip the last byte of S1's batch.
    let mut c = Cursor(&bytes[HEADER_LEN..]);
    let mut ends = Vec::new();
    while let Some(len) = c.u32() {
        c.take(8 + len as usize);
        ends.push(bytes.len() - c.0.len());
    }
    assert_eq!(
        ends.len(),
        3,
        "one batch per flush (an empty snapshot writes none)"
    );
    bytes[ends[1] - 1] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let (b, r) = load(&path, "a");
    assert_eq!((r.merged, r.corrupt_batches, r.truncated_bytes), (2, 1, 0));
    let now = clock::now();
    assert!(b.sticky_lookup("app", b"S0", now).is_some());
    assert!(b.sticky_lookup("app", b"S1", now).is_none());
    assert!(b.sticky_lookup("app", b"S2", now).is_some());
}

#[test]
fn garbage_never_panics() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    let s = SoftState::new("a", Limits::default());
    let boot = read_boot_id();
    let mut valid = header(&boot);
    let a = populated("a");
    let keys = a.lock().keys();
    let records = current_records(&a, &keys, clock::now());
    encode_batches(&mut valid, &records, read_clocks());
    // Every prefix, and every single-byte corruption, loads without panicking.
    for n in 0..valid.len() {
        let _ = load_bytes(&valid[..n], &s, read_clocks(), &boot);
    }
    for i in 0..valid.len() {
        let mut v = valid.clone();
        v[i] ^= 0x5a;
        let _ = load_bytes(&v, &s, read_clocks(), &boot);
    }
    let r = load_bytes(b"not a state file at all", &s, read_clocks(), &boot);
    assert_eq!(r.corrupt_batches, 1);
    // A batch claiming a huge length ends the load.
    let mut huge = header(&boot);
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    huge.extend_from_slice(&[0; 64]);
    let r = load_bytes(&huge, &s, read_clocks(), &boot);
    assert_eq!((r.merged, r.corrupt_batches), (0, 1));
    let _ = path;
}

#[test]
fn journal_is_compacted_when_it_outgrows_the_table() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    let a = SoftState::new("a", Limits::default());
    let mut j = journal(&path, &a);
    let big = "x".repeat(200);
    // One key rewritten over and over: the journal grows, the table does not.
    let mut compacted = false;
    for i in 0..20_000u32 {
        let backend = format!("{big}{}", i % 2);
        let now = clock::now() + Duration::from_millis(u64::from(i));
        a.sticky_learn("app", b"S", &backend, 60 * S, now);
        j.flush(&a);
        if get(&a.file_stats().compactions) > 1 {
            compacted = true;
            break;
        }
    }
    assert!(compacted, "the journal was compacted");
    let size = std::fs::metadata(&path).expect("exists").len();
    assert!(size < 4096, "compacted to the live table: {size} bytes");
    assert_eq!(j.size, size);
    assert!(!dir.path().join("softstate.tmp").exists());
    let (b, _) = load(&path, "a");
    assert!(b.sticky_lookup("app", b"S", clock::now()).is_some());
}

#[test]
fn a_failed_write_is_counted_and_repaired_by_a_rewrite() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    let a = SoftState::new("a", Limits::default());
    let mut j = journal(&path, &a);
    // A handle that cannot write stands in for a full disk.
    j.file = File::open(&path).expect("open read-only");
    let now = clock::now();
    a.sticky_learn("app", b"LOST-WRITE", "10.0.0.1:80", 60 * S, now);
    j.flush(&a);
    assert_eq!(get(&a.file_stats().write_errors), 1);
    assert!(j.retry_at.is_some());
    // Changes go on; nothing is written until the retry time.
    a.sticky_learn("app", b"DURING", "10.0.0.2:80", 60 * S, now);
    j.flush(&a);
    let (b, _) = load(&path, "a");
    assert!(b.sticky_lookup("app", b"DURING", clock::now()).is_none());
    // The retry rewrites the whole table: both writes are back.
    j.retry_at = Some(Duration::ZERO);
    j.flush(&a);
    assert_eq!(j.retry_at, None);
    assert_eq!(get(&a.file_stats().write_errors), 1);
    let (b, r) = load(&path, "a");
    assert_eq!(r.merged, 2);
    assert!(b
        .sticky_lookup("app", b"LOST-WRITE", clock::now())
        .is_some());
    assert!(b.sticky_lookup("app", b"DURING", clock::now()).is_some());
}

#[test]
fn expiry_is_judged_across_the_restart() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    let a = SoftState::new("a", Limits::default());
    let now = clock::now();
    a.sticky_learn("app", b"SHORT", "10.0.0.1:80", 10 * S, now);
    a.sticky_learn("app", b"LONG", "10.0.0.2:80", 100 * S, now);
    // A bucket that refills in 2 s (two tokens at 1/s).
    while a.rate_check("rl", b"k", SPEC, now) == RateDecision::Allow {}
    journal(&path, &a);
    // Loaded 30 s later (same boot: CLOCK_BOOTTIME ages it), then again after a reboot
    // (another boot id: the wall clock ages it).
    let mut later = read_clocks();
    later.boottime_ns += 30_000_000_000;
    later.wall_ns += 30_000_000_000;
    let (b, r) = load_at(&path, "a", later);
    assert_eq!((r.merged, r.expired), (1, 2));
    let now = clock::now();
    assert!(b.sticky_lookup("app", b"SHORT", now).is_none());
    assert_eq!(
        b.sticky_lookup("app", b"LONG", now).as_deref(),
        Some("10.0.0.2:80")
    );
    assert_eq!(b.rate_check("rl", b"k", SPEC, now), RateDecision::Allow);
    // The LONG entry has 70 s left, not 100: it is gone 71 s after the load.
    assert!(b.sticky_lookup("app", b"LONG", now + 71 * S).is_none());

    let bytes = std::fs::read(&path).expect("read");
    let other_boot = [b'x'; BOOT_ID_LEN];
    let mut rebooted = read_clocks();
    rebooted.boottime_ns = 0;
    rebooted.wall_ns += 30_000_000_000;
    let c = SoftState::new("a", Limits::default());
    let r = load_bytes(&bytes, &c, rebooted, &other_boot);
    assert_eq!((r.merged, r.expired), (1, 2));
}

#[test]
fn unsafe_permissions_are_refused() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    std::fs::write(&path, b"").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let soft = Arc::new(SoftState::new("a", Limits::default()));
    let err = start(&path, DEFAULT_FLUSH, &soft).expect_err("0644 is refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("mode 0644"),
        "{msg}"
    );

    // A private file of another user (only root can make one to test with).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
        let err = start(&path, DEFAULT_FLUSH, &soft).expect_err("another owner is refused");
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        std::os::unix::fs::chown(&path, Some(0), None).expect("chown back");
    }

    // A symlink to a private file is not followed.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    let err = start(&link, DEFAULT_FLUSH, &soft).expect_err("symlink refused");
    assert!(matches!(err, FileError::NotRegular { .. }), "{err}");

    // A directory others may write.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = start(&open.join("softstate"), DEFAULT_FLUSH, &soft).expect_err("dir refused");
    assert!(err.to_string().contains("mode 0777"), "{err}");
    assert!(
        !soft.file_stats().enabled.load(Ordering::Relaxed),
        "a refused file is never used"
    );
}

#[test]
fn start_loads_compacts_and_flushes_in_the_background() {
    let dir = private_dir();
    let path = dir.path().join("softstate");
    let a = populated("a");
    journal(&path, &a);
    let soft = Arc::new(SoftState::new("a", Limits::default()));
    let r = start(&path, Duration::from_millis(5), &soft).expect("start");
    assert_eq!(r.merged, 4);
    assert_restored(&soft);
    soft.sticky_learn("app", b"NEW", "10.0.0.7:80", 60 * S, clock::now());
    let deadline = clock::now() + Duration::from_secs(5);
    loop {
        let (b, _) = load(&path, "a");
        if b.sticky_lookup("app", b"NEW", clock::now()).is_some() {
            break;
        }
        assert!(clock::now() < deadline, "the writer flushed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut e = Exposition::new();
    render_metrics(&soft, &mut e);
    let text = e.finish();
    assert!(
        text.contains("lbd_soft_state_file_loaded_records{outcome=\"merged\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("lbd_soft_state_file_write_errors_total 0"),
        "{text}"
    );
}
