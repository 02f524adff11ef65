//! RFC 5798 timer formulas, in centiseconds.
//!
//! VRRPv3 carries every interval in centiseconds (the 12-bit Max Adver Int field), so the
//! formulas of RFC 5798 §6.1 are computed here in integer centiseconds and only converted to
//! [`Duration`] at the end:
//!
//! ```text
//! Skew_Time            = ((256 - Priority) * Master_Adver_Interval) / 256
//! Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time
//! ```
//!
//! Rounding: the division truncates (floors). The RFC states the formula in centiseconds
//! without saying how to round; flooring keeps the arithmetic exact and integer, and the error
//! is below one centisecond (10 ms), far below the jitter of any real network. A side effect is
//! that at small intervals the skew can be 0 (priority 254, interval 100 cs: 200/256 = 0), so
//! two backups with nearby priorities may time out in the same centisecond; the master election
//! of §6.4.3 then settles them with one extra advertisement.
//!
//! All inputs are clamped rather than trusted: a priority of 0 is treated as 1 here (a priority
//! of 0 means "resigning" and is never a local priority), and an interval is clamped to
//! `1..=4095` cs, so no input can produce a zero or overflowing timer.

use std::time::Duration;

/// Smallest advertisement interval, in centiseconds.
pub const MIN_ADVER_INT_CS: u16 = 1;
/// Largest advertisement interval the 12-bit field can carry, in centiseconds (40.95 s).
pub const MAX_ADVER_INT_CS: u16 = 4095;
/// RFC 5798 default Advertisement_Interval: 1 s.
pub const DEFAULT_ADVER_INT_CS: u16 = 100;

fn clamp_interval(interval_cs: u16) -> u32 {
    u32::from(interval_cs.clamp(MIN_ADVER_INT_CS, MAX_ADVER_INT_CS))
}

/// Skew_Time in centiseconds: `((256 - priority) * interval) / 256`, floored.
///
/// Higher priorities get a shorter skew, so the best backup times out first.
pub fn skew_time_cs(priority: u8, master_adver_interval_cs: u16) -> u32 {
    let priority = u32::from(priority.max(1));
    ((256 - priority) * clamp_interval(master_adver_interval_cs)) / 256
}

/// Master_Down_Interval in centiseconds: `3 * interval + Skew_Time`.
pub fn master_down_interval_cs(priority: u8, master_adver_interval_cs: u16) -> u32 {
    3 * clamp_interval(master_adver_interval_cs) + skew_time_cs(priority, master_adver_interval_cs)
}

/// Converts centiseconds to a [`Duration`].
pub fn centis(cs: u32) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// Skew_Time as a [`Duration`].
pub fn skew_time(priority: u8, master_adver_interval_cs: u16) -> Duration {
    centis(skew_time_cs(priority, master_adver_interval_cs))
}

/// Master_Down_Interval as a [`Duration`].
pub fn master_down_interval(priority: u8, master_adver_interval_cs: u16) -> Duration {
    centis(master_down_interval_cs(priority, master_adver_interval_cs))
}

/// The lowest priority a backup can have (0 means "resigning", never a local priority).
pub const LOWEST_BACKUP_PRIORITY: u8 = 1;

/// The longest any backup may wait before it takes over from a master advertising every
/// `master_adver_interval_cs`: the Master_Down_Interval at priority 1, whose Skew_Time is
/// the longest. A master tells lbd this (`StateEvent::master_down_ms`), and lbd stops serving
/// a VIP when it hasn't heard vrrpd for that long. The master's *own* Master_Down_Interval
/// is the wrong figure: its priority is above the backup's, so its Skew_Time is shorter, and
/// lbd would stop serving before the peer could have taken over (a hung vrrpd at priority
/// 200 against a backup at 100, 1 s adverts: 3.21 s against the backup's 3.60 s, so clients
/// would find nobody serving for ~390 ms). Stopping a little after the peer took over costs
/// nothing: clients have followed the peer's GARP by then. The peer learns our interval
/// (clamped into its adopt window, which can only shorten it), so ours is the longest.
pub fn longest_backup_master_down_interval(master_adver_interval_cs: u16) -> Duration {
    master_down_interval(LOWEST_BACKUP_PRIORITY, master_adver_interval_cs)
}

/// An advertisement interval (clamped to `1..=4095` cs) as a [`Duration`].
pub fn adver_interval(interval_cs: u16) -> Duration {
    centis(clamp_interval(interval_cs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_degenerate_inputs() {
        // Interval 0 behaves as 1 cs, priority 0 as 1: never a zero master-down interval.
        assert_eq!(master_down_interval_cs(0, 0), 3);
        assert_eq!(adver_interval(0), Duration::from_millis(10));
        assert_eq!(adver_interval(u16::MAX), Duration::from_millis(40_950));
    }

    #[test]
    fn lbd_is_told_the_longest_a_backup_can_wait() {
        // 3 x 100 + (255 x 100) / 256 = 300 + 99 cs: priority 1's Skew_Time.
        assert_eq!(
            longest_backup_master_down_interval(100),
            Duration::from_millis(3990)
        );
        // 3 x 2 + 510 / 256 = 7 cs; 3 x 10 + 2550 / 256 = 39 cs.
        assert_eq!(
            longest_backup_master_down_interval(2),
            Duration::from_millis(70)
        );
        assert_eq!(
            longest_backup_master_down_interval(10),
            Duration::from_millis(390)
        );
        // Never shorter than the Master_Down_Interval of any backup priority, so lbd never
        // stops serving before the peer can have taken over.
        for interval in [1, 2, 10, 100, 4095] {
            for priority in 1..=255u8 {
                assert!(
                    longest_backup_master_down_interval(interval)
                        >= master_down_interval(priority, interval),
                    "priority {priority}, interval {interval} cs"
                );
            }
        }
        // The master's own figure was the bug: 3.21 s at priority 200 while a backup at
        // priority 100 waits 3.6 s.
        assert_eq!(master_down_interval(200, 100), Duration::from_millis(3210));
        assert_eq!(master_down_interval(100, 100), Duration::from_millis(3600));
    }

    #[test]
    fn conversion() {
        assert_eq!(centis(360), Duration::from_millis(3600));
        assert_eq!(skew_time(100, 100), Duration::from_millis(600));
        assert_eq!(master_down_interval(100, 100), Duration::from_millis(3600));
    }
}
