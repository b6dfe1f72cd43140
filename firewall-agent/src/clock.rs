//! Wall-clock times ↔ the kernel's CLOCK_MONOTONIC, in one place.
//!
//! The XDP program judges deadlines (an unconfirmed apply's fallback, a
//! rule's `expires_at`) against `bpf_ktime_get_coarse_ns`: CLOCK_MONOTONIC,
//! in nanoseconds since boot. The policy and the operator speak wall-clock
//! time. Every conversion goes through [`MonotonicClock`], which reads both
//! clocks together and converts by their difference at that moment.
//!
//! What that means for an operator: CLOCK_MONOTONIC does not advance while
//! the host is suspended, and is not stepped when the wall clock is (NTP,
//! `date -s`). A deadline written into the kernel falls later in wall-clock
//! time by the length of any suspend after it was written, and keeps its
//! place on the monotonic clock if the wall clock jumps — until the agent
//! writes the tables again (it converts anew each time). Kernel timestamps
//! (last hits, access-log records) are shown as wall-clock times the same
//! way.

use std::time::{Duration, SystemTime};

/// Two deadlines this close are the same deadline: converting one
/// wall-clock time twice gives values a few microseconds apart (the two
/// clocks are read one after the other), and an unchanged policy must
/// compile to unchanged tables.
pub const SAME_DEADLINE: Duration = Duration::from_millis(1);

/// A reading of the wall clock and CLOCK_MONOTONIC taken together, for
/// converting between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonotonicClock {
    wall: SystemTime,
    monotonic_ns: u64,
}

impl MonotonicClock {
    /// Reads both clocks now.
    pub fn now() -> Self {
        let monotonic_ns = read_ns(nix::time::ClockId::CLOCK_MONOTONIC);
        MonotonicClock {
            wall: SystemTime::now(),
            monotonic_ns,
        }
    }

    /// A reading given by hand (tests): at wall-clock `wall` the monotonic
    /// clock read `monotonic_ns`.
    pub fn at(wall: SystemTime, monotonic_ns: u64) -> Self {
        MonotonicClock { wall, monotonic_ns }
    }

    /// The CLOCK_MONOTONIC time, in ns, of wall-clock time `t`: at least 1
    /// (0 means "no deadline" in the kernel's records, and a time before
    /// boot has passed anyway), at most `u64::MAX` (584 years after boot).
    pub fn to_monotonic_ns(&self, t: SystemTime) -> u64 {
        let ns = match t.duration_since(self.wall) {
            Ok(ahead) => self.monotonic_ns.saturating_add(saturating_ns(ahead)),
            Err(behind) => self
                .monotonic_ns
                .saturating_sub(saturating_ns(behind.duration())),
        };
        ns.max(1)
    }

    /// The wall-clock time of CLOCK_MONOTONIC time `ns`.
    pub fn to_wall(&self, ns: u64) -> SystemTime {
        let shifted = if ns >= self.monotonic_ns {
            self.wall
                .checked_add(Duration::from_nanos(ns - self.monotonic_ns))
        } else {
            self.wall
                .checked_sub(Duration::from_nanos(self.monotonic_ns - ns))
        };
        shifted.unwrap_or(self.wall)
    }
}

/// The wall-clock time of CLOCK_MONOTONIC's zero (what `bpf_ktime_get_ns`
/// counts from), so kernel timestamps can be shown as dates. Computed anew
/// each call: the wall clock may be stepped while the agent runs.
pub fn boot_time() -> SystemTime {
    MonotonicClock::now().to_wall(0)
}

/// An RFC 3339 time (`2026-01-31T12:00:00Z` or `…+01:00`), as `--since`
/// travels over the control socket. The error names the value and the form.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    parse_rfc3339(text).map_err(|e| {
        format!("since {text:?}: {e}; give an RFC 3339 time such as 2026-01-31T12:00:00Z")
    })
}

/// `--since` as an operator writes it: a duration back from now (`30s`,
/// `10m`, `2h`) or an RFC 3339 time. The error names the value and both
/// forms.
pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{text:?} reaches before 1970"));
    }
    parse_rfc3339(text).map_err(|_| {
        format!("{text:?}: give a duration (`30s`, `10m`, `2h`) or an RFC 3339 time (`2026-01-31T12:00:00Z`)")
    })
}

/// The forms `--expires-at` takes, as its errors' fix says them.
pub const EXPIRES_AT_FORMS: &str =
    "give an RFC 3339 time (2027-01-31T00:00:00Z) or a duration (8h, 30m)";

/// Parses an RFC 3339 date-time with `Z` or a `±HH:MM` offset (a space may
/// stand for `T`; fractional seconds are allowed). The error is a reason
/// without the expected form.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let upper = text.to_ascii_uppercase();
    let (local, offset_secs) = if let Some(rest) = upper.strip_suffix('Z') {
        (rest.to_string(), 0i64)
    } else if let Some((rest, offset)) = split_offset(&upper) {
        (rest.to_string(), offset)
    } else {
        return Err("it has no time zone (Z or an offset like +01:00)".into());
    };
    // humantime reads a time without zone as UTC; the offset is applied below.
    let as_utc = humantime::parse_rfc3339_weak(&local)
        .map_err(|e| format!("it is not an RFC 3339 date-time ({e})"))?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    let utc = if offset_secs >= 0 {
        as_utc.checked_sub(shift)
    } else {
        as_utc.checked_add(shift)
    };
    utc.ok_or_else(|| "it is out of the representable range".to_string())
}

/// `…+HH:MM` / `…-HH:MM` → (the rest, offset in seconds east of UTC).
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let split = text.len().checked_sub(6)?;
    if !text.is_char_boundary(split) {
        return None;
    }
    let (rest, offset) = text.split_at(split);
    let b = offset.as_bytes();
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digit = |i: usize| (b[i] as char).to_digit(10).map(i64::from);
    if b[3] != b':' {
        return None;
    }
    let hours = digit(1)? * 10 + digit(2)?;
    let minutes = digit(4)? * 10 + digit(5)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((rest, sign * (hours * 3600 + minutes * 60)))
}

/// CLOCK_MONOTONIC_COARSE now, in ns: exactly the clock the program reads
/// (`bpf_ktime_get_coarse_ns`), so "has the kernel passed this deadline?"
/// gets the kernel's answer.
pub fn kernel_now_ns() -> u64 {
    read_ns(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
}

fn read_ns(clock: nix::time::ClockId) -> u64 {
    // Invariant: CLOCK_MONOTONIC and CLOCK_MONOTONIC_COARSE exist on every
    // Linux (since 2.6.32), far older than the program needs.
    let now = nix::time::clock_gettime(clock).expect("invariant: Linux has monotonic clocks");
    (now.tv_sec() as u64) * 1_000_000_000 + now.tv_nsec() as u64
}

fn saturating_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_with_an_offset_are_the_same_instant_as_in_utc() {
        let utc = parse_rfc3339("2026-01-31T12:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-01-31T13:00:00+01:00"), Ok(utc));
        assert_eq!(parse_rfc3339("2026-01-31T07:30:00-04:30"), Ok(utc));
        assert_eq!(parse_time("2026-01-31T13:00:00+01:00"), Ok(utc));
        assert_eq!(parse_since("2026-01-31T13:00:00+01:00"), Ok(utc));
        assert!(parse_rfc3339("2026-01-31T12:00:00").is_err());
    }

    #[test]
    fn wall_times_convert_by_the_difference_of_the_two_clocks() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = MonotonicClock::at(wall, 5_000_000_000);
        assert_eq!(
            clock.to_monotonic_ns(wall + Duration::from_secs(3)),
            8_000_000_000
        );
        assert_eq!(
            clock.to_monotonic_ns(wall - Duration::from_secs(2)),
            3_000_000_000
        );
        assert_eq!(clock.to_wall(8_000_000_000), wall + Duration::from_secs(3));
        assert_eq!(clock.to_wall(0), wall - Duration::from_secs(5));
    }

    #[test]
    fn a_time_before_boot_is_long_past_never_no_deadline() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = MonotonicClock::at(wall, 5_000_000_000);
        assert_eq!(clock.to_monotonic_ns(wall - Duration::from_secs(3600)), 1);
        assert_eq!(
            clock.to_monotonic_ns(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)),
            u64::MAX
        );
    }

    #[test]
    fn the_kernel_clock_is_the_monotonic_one() {
        let fine = MonotonicClock::now().monotonic_ns;
        let coarse = kernel_now_ns();
        // The coarse clock lags the fine one by at most a tick (≤ 10 ms).
        assert!(
            coarse <= fine + 1_000_000 && fine - coarse.min(fine) < 50_000_000,
            "{coarse} vs {fine}"
        );
    }
}
