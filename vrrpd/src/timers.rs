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
    fn conversion() {
        assert_eq!(centis(360), Duration::from_millis(3600));
        assert_eq!(skew_time(100, 100), Duration::from_millis(600));
        assert_eq!(master_down_interval(100, 100), Duration::from_millis(3600));
    }
}
