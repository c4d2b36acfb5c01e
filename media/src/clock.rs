//! Wall-clock time for RTCP without reading a clock.
//!
//! RTCP sender reports carry an NTP timestamp (RFC 3550 §4) and round-trip
//! times are computed in its "middle 32 bits" format (§6.4.1). This crate
//! never reads the system clock: the shell reads one `(Instant, SystemTime)`
//! pair when a session starts and hands it to [`WallClock::new`]; every later
//! wall-clock time is that mapping plus the monotonic time elapsed since, so
//! the NTP timestamps of a session never jump when the system clock is
//! stepped.

use std::ops::{Add, Sub};
use std::time::{Duration, Instant};

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A 64-bit NTP timestamp (RFC 3550 §4): seconds since 1900-01-01 in the
/// upper 32 bits, the fraction of a second in the lower 32 bits.
///
/// The seconds wrap in 2036 (NTP era 1); as in RTCP, only differences of
/// nearby timestamps are meaningful, and arithmetic here wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: NtpTime = NtpTime(NTP_UNIX_OFFSET_SECS << 32);

    /// From the time elapsed since the NTP epoch (seconds taken modulo 2^32).
    pub fn from_duration(since_ntp_epoch: Duration) -> NtpTime {
        NtpTime(duration_to_ntp_units(since_ntp_epoch))
    }

    /// The time elapsed since the NTP epoch, within NTP era 0 (to the
    /// nanosecond, rounded).
    pub fn to_duration(self) -> Duration {
        let secs = self.0 >> 32;
        let frac = u128::from(self.0 & 0xffff_ffff);
        // frac / 2^32 seconds, rounded to the nearest nanosecond; < 1e9.
        let nanos = ((frac * NANOS_PER_SEC + (1 << 31)) >> 32) as u64;
        Duration::from_secs(secs) + Duration::from_nanos(nanos)
    }

    /// From the time elapsed since the Unix epoch.
    pub fn from_unix(since_unix_epoch: Duration) -> NtpTime {
        NtpTime::UNIX_EPOCH + since_unix_epoch
    }

    /// Whole seconds (upper 32 bits).
    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Fraction of a second in units of 2^-32 s (lower 32 bits).
    pub fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// The middle 32 bits (16.16 fixed point seconds), as used by the LSR
    /// field of RTCP report blocks (RFC 3550 §6.4.1).
    pub fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// `t + d`, wrapping.
impl Add<Duration> for NtpTime {
    type Output = NtpTime;

    fn add(self, d: Duration) -> NtpTime {
        NtpTime(self.0.wrapping_add(duration_to_ntp_units(d)))
    }
}

/// `t - d`, wrapping.
impl Sub<Duration> for NtpTime {
    type Output = NtpTime;

    fn sub(self, d: Duration) -> NtpTime {
        NtpTime(self.0.wrapping_sub(duration_to_ntp_units(d)))
    }
}

/// A duration in 64-bit NTP units (2^-32 s), rounded to the nearest unit;
/// whole seconds modulo 2^32.
fn duration_to_ntp_units(d: Duration) -> u64 {
    let secs = d.as_secs() & 0xffff_ffff;
    let nanos = u128::from(d.subsec_nanos());
    // nanos·2^32 / 1e9 rounded; at most 2^32 (carries into the seconds).
    let frac = ((nanos << 32) + NANOS_PER_SEC / 2) / NANOS_PER_SEC;
    (secs << 32).wrapping_add(frac as u64)
}

/// A duration as a 32-bit "short" NTP value (16.16 fixed point seconds, the
/// unit of the DLSR field), saturating at `u32::MAX` (~18 h).
pub fn duration_to_short(d: Duration) -> u32 {
    let units = (d.as_nanos() << 16) / NANOS_PER_SEC;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// A 32-bit "short" NTP value (16.16 fixed point seconds) as a duration.
pub fn short_to_duration(v: u32) -> Duration {
    let nanos = (u128::from(v) * NANOS_PER_SEC) >> 16;
    Duration::from_nanos(nanos as u64)
}

/// Maps monotonic instants to NTP wall-clock time from one reading taken by
/// the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    at: Instant,
    ntp: NtpTime,
}

impl WallClock {
    /// `since_unix_epoch` is the system time read at the same moment as
    /// `at`, e.g. `(Instant::now(), SystemTime::now().duration_since(UNIX_EPOCH))`
    /// in the shell.
    pub fn new(at: Instant, since_unix_epoch: Duration) -> WallClock {
        WallClock {
            at,
            ntp: NtpTime::from_unix(since_unix_epoch),
        }
    }

    /// The NTP time at `now` (earlier instants than the reading work too).
    pub fn ntp(&self, now: Instant) -> NtpTime {
        match now.checked_duration_since(self.at) {
            Some(elapsed) => self.ntp + elapsed,
            None => self.ntp - (self.at - now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_epoch_and_known_date() {
        assert_eq!(NtpTime::UNIX_EPOCH.seconds(), 2_208_988_800);
        assert_eq!(NtpTime::UNIX_EPOCH.fraction(), 0);
        // 2024-01-01T00:00:00.5Z = Unix 1_704_067_200.5
        let t = NtpTime::from_unix(Duration::from_millis(1_704_067_200_500));
        assert_eq!(t.seconds(), 3_913_056_000);
        assert_eq!(t.fraction(), 1 << 31);
        assert_eq!(t.middle32(), ((3_913_056_000u64 << 16) as u32) | 0x8000);
    }

    #[test]
    fn duration_round_trip() {
        for nanos in [0u64, 1, 999_999_999, 123_456_789, 500_000_000] {
            for secs in [0u64, 1, 3_913_056_000, u64::from(u32::MAX)] {
                let d = Duration::new(secs, nanos as u32);
                let back = NtpTime::from_duration(d).to_duration();
                let diff = back.abs_diff(d);
                assert!(diff <= Duration::from_nanos(1), "{d:?} -> {back:?}");
            }
        }
        // Seconds beyond era 0 wrap.
        let d = Duration::from_secs((1 << 32) + 5);
        assert_eq!(NtpTime::from_duration(d).seconds(), 5);
    }

    #[test]
    fn fraction_just_below_a_second_stays_in_that_second() {
        let t = NtpTime::from_duration(Duration::new(7, 999_999_999));
        // 0.999999999 s rounds to 2^32 - 4 units: no carry into the seconds.
        assert_eq!(t.seconds(), 7);
        assert!(t.fraction() > u32::MAX - 5);
    }

    #[test]
    fn short_format() {
        assert_eq!(duration_to_short(Duration::from_secs(1)), 0x1_0000);
        assert_eq!(duration_to_short(Duration::from_millis(500)), 0x8000);
        assert_eq!(short_to_duration(0x1_8000), Duration::from_millis(1500));
        assert_eq!(duration_to_short(Duration::from_secs(100_000)), u32::MAX);
        let d = Duration::from_millis(80);
        let back = short_to_duration(duration_to_short(d));
        assert!(back.abs_diff(d) < Duration::from_micros(16));
    }

    #[test]
    fn wall_clock_follows_the_monotonic_clock() {
        let base = crate::test_epoch();
        let unix = Duration::from_secs(1_700_000_000);
        let c = WallClock::new(base, unix);
        assert_eq!(c.ntp(base), NtpTime::from_unix(unix));
        let later = c.ntp(base + Duration::from_millis(2_250));
        assert_eq!(
            later.to_duration(),
            Duration::from_secs(1_700_000_000 + NTP_UNIX_OFFSET_SECS)
                + Duration::from_millis(2_250)
        );
        // middle32 differences measure elapsed time in 1/65536 s.
        let d = later.middle32().wrapping_sub(c.ntp(base).middle32());
        assert_eq!(short_to_duration(d), Duration::from_millis(2_250));
        // An instant before the reading maps before it.
        let c2 = WallClock::new(base + Duration::from_secs(10), unix);
        assert_eq!(
            c2.ntp(base),
            NtpTime::from_unix(unix - Duration::from_secs(10))
        );
    }
}
