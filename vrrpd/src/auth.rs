//! Authenticated adverts (`auth_key_file`): sequence numbers out, replay window in.
//!
//! The trailer format and the tag are `shared::wire::auth`. This module adds what is
//! vrrpd's policy, as pure code (time is an argument):
//!
//! - **Sending**: [`SeqCounter`] gives every advert round a sequence number that is the
//!   wall-clock time in nanoseconds since the Unix epoch, or one more than the last number
//!   sent, whichever is larger. Within a process the numbers strictly increase whatever the
//!   clock does. A restarted vrrpd starts from the present time, which is above every
//!   number its predecessor sent, since no advert round takes less than a nanosecond. The
//!   wall clock rather than CLOCK_BOOTTIME or CLOCK_MONOTONIC because those restart from
//!   zero on reboot, and a rebooted node's adverts would then be refused as replays by a
//!   peer that kept running. The one way to reuse numbers is a wall clock that steps back
//!   between two runs (a node that boots with a bad RTC and starts vrrpd before NTP has
//!   corrected it): the peer then refuses the node's adverts as `auth_replay` until the
//!   clock passes its old numbers or the peer's vrrpd restarts, and logs how far back the
//!   numbers went. Run vrrpd after time sync (`After=time-sync.target`).
//! - **Receiving**: [`ReplayWindow`] keeps the highest sequence verified per source address
//!   and accepts only a strictly greater one. Only adverts whose tag verified update it, so
//!   a forger can't fill it or move it; it is also bounded ([`MAX_SOURCES`]). It lives in
//!   memory: after *this* vrrpd restarts, the first authenticated advert from each source is
//!   accepted on its tag alone, so an advert recorded earlier could be replayed once at that
//!   moment. That is an advert the peer really sent, and the peer's next one supersedes it.
//! - [`Authenticator`] holds the key, the counter and the window, and is the one thing the
//!   instance calls: [`Authenticator::seal_next`] before sending, [`Authenticator::verify`]
//!   before the FSM sees an advert.

use std::net::Ipv4Addr;

use shared::wire::auth::{self, Key};

/// Most sources whose sequence is remembered per instance. Only key holders can add one,
/// so this bounds memory against a misconfigured LAN, not against forgers.
pub const MAX_SOURCES: usize = 64;

/// Why an advert was refused before the FSM saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The trailer did not verify (missing, malformed, wrong key, bad tag).
    Trailer(auth::Error),
    /// The tag verified but the sequence is not above the highest seen from this source.
    Replay { seq: u64, highest: u64 },
}

impl Rejection {
    /// The discard counter label: `auth_missing`, `auth_malformed`, `auth_bad_tag`,
    /// `auth_replay`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::Trailer(e) => e.as_str(),
            Rejection::Replay { .. } => "auth_replay",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Trailer(e) => e.fmt(f),
            Rejection::Replay { seq, highest } => write!(
                f,
                "sequence {seq} is not above {highest}, the highest seen from this source \
                 ({} ms older): a replay, or the sender's clock went back across a restart",
                highest.saturating_sub(*seq) / 1_000_000
            ),
        }
    }
}

/// The sender's sequence numbers (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct SeqCounter {
    last: u64,
}

impl SeqCounter {
    /// The number for the next advert round, given the wall clock in ns since the epoch.
    /// Strictly above the previous one (saturating at `u64::MAX`, in the year 2554).
    pub fn next(&mut self, wall_ns: u64) -> u64 {
        self.last = wall_ns.max(self.last.saturating_add(1));
        self.last
    }
}

/// The highest verified sequence per source.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// `(source, highest sequence)`, most recently updated last.
    highest: Vec<(Ipv4Addr, u64)>,
}

impl ReplayWindow {
    /// `Ok` if `seq` is fresh for `src`. Changes nothing: call [`record`](Self::record)
    /// once the advert is known good.
    pub fn check(&self, src: Ipv4Addr, seq: u64) -> Result<(), Rejection> {
        match self.highest.iter().find(|(s, _)| *s == src) {
            Some(&(_, highest)) if seq <= highest => Err(Rejection::Replay { seq, highest }),
            _ => Ok(()),
        }
    }

    /// Remember `seq` as the highest from `src`. When full, the source not heard from for
    /// longest is forgotten.
    pub fn record(&mut self, src: Ipv4Addr, seq: u64) {
        if let Some(pos) = self.highest.iter().position(|(s, _)| *s == src) {
            self.highest.remove(pos);
        } else if self.highest.len() >= MAX_SOURCES {
            self.highest.remove(0);
        }
        self.highest.push((src, seq));
    }

    /// The highest sequence seen from `src`.
    pub fn highest(&self, src: Ipv4Addr) -> Option<u64> {
        self.highest
            .iter()
            .find(|(s, _)| *s == src)
            .map(|&(_, seq)| seq)
    }

    pub fn len(&self) -> usize {
        self.highest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.highest.is_empty()
    }
}

/// One instance's authentication state.
#[derive(Debug, Clone)]
pub struct Authenticator {
    key: Key,
    seq: SeqCounter,
    window: ReplayWindow,
}

impl Authenticator {
    pub fn new(key: Key) -> Authenticator {
        Authenticator {
            key,
            seq: SeqCounter::default(),
            window: ReplayWindow::default(),
        }
    }

    /// The key and trailer for the next advert round (one sequence number for every
    /// destination of the round: each receiver sees its own copy, and the tag covers the
    /// destination).
    pub fn seal_next(&mut self, wall_ns: u64) -> Seal<'_> {
        let seq = self.seq.next(wall_ns);
        Seal {
            key: &self.key,
            trailer: auth::Repr::new(&self.key, seq),
        }
    }

    /// Verify the trailer `rest` after the VRRP message `vrrp` from `src` to `dst`, and
    /// the sequence against the replay window; on success the window moves up and the
    /// sequence is returned. Nothing changes on failure.
    pub fn verify(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        vrrp: &[u8],
        rest: &[u8],
    ) -> Result<u64, Rejection> {
        let trailer = auth::open(&self.key, src, dst, vrrp, rest).map_err(Rejection::Trailer)?;
        self.window.check(src, trailer.seq)?;
        self.window.record(src, trailer.seq);
        Ok(trailer.seq)
    }

    /// The replay window (for tests and logs).
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }
}

/// What the socket needs to append a trailer to each copy of one advert.
#[derive(Debug, Clone, Copy)]
pub struct Seal<'k> {
    pub key: &'k Key,
    pub trailer: auth::Repr,
}

impl Seal<'_> {
    /// Append the trailer to `payload`, which holds exactly the VRRP message sent from
    /// `src` to `dst`.
    pub fn append(&self, payload: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr) {
        self.trailer.append(payload, self.key, src, dst);
    }
}

/// The wall clock in ns since the Unix epoch, for [`SeqCounter::next`]; 0 if the clock
/// reads before 1970 (the counter still increases).
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared::wire::vrrp::{ChecksumMode, Repr};

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

    fn key() -> Key {
        Key::new(&[9; 32]).expect("32 bytes")
    }

    /// What `sender` puts on the wire for one advert round at `wall_ns`.
    fn advert(sender: &mut Authenticator, priority: u8, wall_ns: u64) -> Vec<u8> {
        let repr = Repr::advertisement(51, priority, 100, vec![Ipv4Addr::new(192, 0, 2, 100)]);
        let mut payload = repr
            .to_bytes(A, GROUP, ChecksumMode::PseudoHeader)
            .expect("encodable");
        sender.seal_next(wall_ns).append(&mut payload, A, GROUP);
        payload
    }

    fn receive(receiver: &mut Authenticator, payload: &[u8]) -> Result<u64, Rejection> {
        let (vrrp, rest) = auth::split(payload);
        receiver.verify(A, GROUP, vrrp, rest)
    }

    #[test]
    fn adverts_verify_once_and_replays_are_refused() {
        let (mut a, mut b) = (Authenticator::new(key()), Authenticator::new(key()));
        let first = advert(&mut a, 200, 1_000);
        let second = advert(&mut a, 200, 1_000);
        assert_eq!(receive(&mut b, &first), Ok(1_000));
        assert_eq!(
            receive(&mut b, &first).map_err(|r| r.as_str()),
            Err("auth_replay")
        );
        assert_eq!(receive(&mut b, &second), Ok(1_001));
        // An older one, arriving late, is a replay too.
        assert_eq!(
            receive(&mut b, &first),
            Err(Rejection::Replay {
                seq: 1_000,
                highest: 1_001
            })
        );
    }

    #[test]
    fn refused_adverts_leave_the_window_alone() {
        let (mut a, mut b) = (Authenticator::new(key()), Authenticator::new(key()));
        let good = advert(&mut a, 200, 5);
        let (vrrp, _) = auth::split(&good);
        assert_eq!(
            b.verify(A, GROUP, vrrp, &[]).map_err(|r| r.as_str()),
            Err("auth_missing")
        );
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            receive(&mut b, &forged).map_err(|r| r.as_str()),
            Err("auth_bad_tag")
        );
        assert!(b.window().is_empty());
        assert_eq!(receive(&mut b, &good), Ok(5));
    }

    #[test]
    fn a_restarted_sender_is_above_its_predecessor() {
        let mut b = Authenticator::new(key());
        let mut old = Authenticator::new(key());
        for t in 0..10 {
            assert!(receive(&mut b, &advert(&mut old, 200, 1_000 + t)).is_ok());
        }
        // Restarted a millisecond later: a fresh counter starts from the clock.
        let mut new = Authenticator::new(key());
        assert_eq!(
            receive(&mut b, &advert(&mut new, 200, 1_001_000)),
            Ok(1_001_000)
        );
    }

    #[test]
    fn the_window_is_per_source_and_bounded() {
        let mut w = ReplayWindow::default();
        w.record(A, 10);
        assert!(w.check(B, 1).is_ok());
        assert!(w.check(A, 10).is_err());
        assert!(w.check(A, 11).is_ok());
        for i in 0..(MAX_SOURCES as u32 + 5) {
            w.record(Ipv4Addr::from(0x0a00_0000 + i), 1);
        }
        assert_eq!(w.len(), MAX_SOURCES);
        // The oldest entries went first; the newest are all there.
        assert_eq!(w.highest(A), None);
        assert_eq!(
            w.highest(Ipv4Addr::from(0x0a00_0000 + MAX_SOURCES as u32)),
            Some(1)
        );
    }

    proptest! {
        #[test]
        fn sequence_numbers_strictly_increase_whatever_the_clock(
            clock in prop::collection::vec(any::<u64>(), 1..200),
        ) {
            let mut c = SeqCounter::default();
            let mut last = None;
            for t in clock {
                let s = c.next(t);
                prop_assert!(s >= t || last == Some(u64::MAX));
                if let Some(l) = last {
                    prop_assert!(s > l || l == u64::MAX);
                }
                last = Some(s);
            }
        }

        #[test]
        fn the_window_accepts_exactly_the_strictly_greater(
            seqs in prop::collection::vec(0u64..50, 1..100),
        ) {
            let mut w = ReplayWindow::default();
            let mut highest: Option<u64> = None;
            for s in seqs {
                let fresh = highest.is_none_or(|h| s > h);
                prop_assert_eq!(w.check(A, s).is_ok(), fresh);
                if fresh {
                    w.record(A, s);
                    highest = Some(s);
                }
                prop_assert_eq!(w.highest(A), highest);
            }
        }
    }
}
