//! Time arithmetic on numbers a tenant writes (deadlines, TTLs): checked, saturating, never a
//! panic. `jiff` panics when `Timestamp + Duration` leaves its range (years -9999 to 9999), and
//! a schema bound alone is no defence: objects stored before a bound existed, or served through
//! a looser schema, still reach the operator.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// `start` plus `seconds` (a negative count counts as 0), or the latest representable time
/// when the sum is beyond it.
pub fn after(start: Timestamp, seconds: i64) -> Timestamp {
    start
        .checked_add(SignedDuration::from_secs(seconds.max(0)))
        .unwrap_or(Timestamp::MAX)
}

/// `start` minus `seconds` (a negative count counts as 0), or the earliest representable time
/// when the difference is before it.
pub fn before(start: Timestamp, seconds: i64) -> Timestamp {
    start
        .checked_sub(SignedDuration::from_secs(seconds.max(0)))
        .unwrap_or(Timestamp::MIN)
}

/// Whole seconds from `now` until `then`, plus one so that a requeue lands after `then`; zero
/// plus one when `then` has passed.
pub fn duration_until(now: Timestamp, then: Timestamp) -> Duration {
    let seconds = then.as_second().saturating_sub(now.as_second()).max(0);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_beyond_the_range_saturate() {
        let start = Timestamp::from_second(1_800_000_000).expect("time");
        assert_eq!(after(start, 300_000_000_000), Timestamp::MAX);
        assert_eq!(after(start, i64::MAX), Timestamp::MAX);
        assert_eq!(after(start, -5), start);
        assert_eq!(after(Timestamp::MAX, 1), Timestamp::MAX);
        assert_eq!(after(start, 60).as_second(), 1_800_000_060);
        assert_eq!(before(start, 60).as_second(), 1_799_999_940);
        assert_eq!(before(start, i64::MAX), Timestamp::MIN);
        assert_eq!(before(start, -5), start);
        assert_eq!(
            duration_until(Timestamp::MIN, Timestamp::MAX).as_secs(),
            (Timestamp::MAX.as_second() - Timestamp::MIN.as_second() + 1) as u64
        );
        assert_eq!(duration_until(Timestamp::MAX, Timestamp::MIN).as_secs(), 1);
    }
}
