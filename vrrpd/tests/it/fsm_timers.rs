//! RFC 5798 §6.1 timer formulas at the edges of priority and interval, with every value
//! worked out by hand:
//!
//! Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256, floored (centiseconds),
//! Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.

use std::time::Duration;

use vrrpd::timers::{master_down_interval, master_down_interval_cs, skew_time, skew_time_cs};

/// (priority, interval cs, (256 - p) * i, skew cs, master-down cs)
const TABLE: &[(u8, u16, u32, u32, u32)] = &[
    // 255 * 1 = 255; 255 / 256 = 0.99 -> 0; 3 + 0
    (1, 1, 255, 0, 3),
    // 255 * 100 = 25500; / 256 = 99.6 -> 99; 300 + 99
    (1, 100, 25_500, 99, 399),
    // 255 * 4095 = 1_044_225; / 256 = 4079.004 -> 4079; 12285 + 4079
    (1, 4095, 1_044_225, 4079, 16_364),
    // 156 * 1 = 156; / 256 -> 0; 3
    (100, 1, 156, 0, 3),
    // 156 * 100 = 15600; / 256 = 60.9 -> 60; 300 + 60
    (100, 100, 15_600, 60, 360),
    // 156 * 4095 = 638_820; / 256 = 2495.4 -> 2495; 12285 + 2495
    (100, 4095, 638_820, 2495, 14_780),
    // 2 * 1 = 2 -> 0; 3
    (254, 1, 2, 0, 3),
    // 2 * 100 = 200 -> 0; 300
    (254, 100, 200, 0, 300),
    // 2 * 4095 = 8190; / 256 = 31.99 -> 31; 12285 + 31
    (254, 4095, 8190, 31, 12_316),
    // 1 * 1 -> 0; 3
    (255, 1, 1, 0, 3),
    // 1 * 100 -> 0; 300
    (255, 100, 100, 0, 300),
    // 1 * 4095 = 4095; / 256 = 15.99 -> 15; 12285 + 15
    (255, 4095, 4095, 15, 12_300),
];

#[test]
fn skew_and_master_down_table() {
    for &(p, i, product, skew, mdi) in TABLE {
        // The hand-written product is the one the formula divides.
        assert_eq!((256 - u32::from(p)) * u32::from(i), product, "p={p} i={i}");
        assert_eq!(skew_time_cs(p, i), skew, "skew p={p} i={i}");
        assert_eq!(master_down_interval_cs(p, i), mdi, "mdi p={p} i={i}");
        assert_eq!(skew_time(p, i), Duration::from_millis(u64::from(skew) * 10));
        assert_eq!(
            master_down_interval(p, i),
            Duration::from_millis(u64::from(mdi) * 10)
        );
    }
}

#[test]
fn higher_priority_never_waits_longer() {
    for i in [1u16, 7, 100, 333, 4095] {
        for p in 1u8..255 {
            assert!(
                master_down_interval_cs(p + 1, i) <= master_down_interval_cs(p, i),
                "p={p} i={i}"
            );
        }
    }
}
