//! The simulated world's clock: the time the simulators date their
//! records by (an event's `occurred_at`, a certificate's issue date, a
//! decision's time, the subsidies system's current month).
//!
//! It runs with the wall clock, shifted by an offset that a rehearsal of
//! several months (`tongban demo --months N`) moves forward a month at a
//! time; it is the wall clock until then. The hub never reads it: leases,
//! retries, signatures and the deadline register keep the hub's own time,
//! and the month a record belongs to comes from the record's own dates, as
//! in production. One clock per process: the simulators of one world.

use std::sync::atomic::{AtomicI64, Ordering};

/// How far the world's clock is ahead of the wall clock, in ms.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The world's time, ms since the epoch.
pub fn now_ms() -> i64 {
    crate::store::now_ms() + OFFSET_MS.load(Ordering::SeqCst)
}

/// The world's time in China (UTC+8).
pub fn china_now() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::from_timestamp_millis(now_ms())
        .unwrap_or_default()
        .with_timezone(&crate::domain::china_tz())
}

/// The world's date in China.
pub fn today() -> chrono::NaiveDate {
    china_now().date_naive()
}

/// The world's month, `YYYY-MM`.
pub fn period() -> String {
    super::period_of(now_ms())
}

/// Moves the world's clock to `day` (China time) at the wall clock's time
/// of day, never backwards: Err names the day if it would be.
pub fn travel_to(day: chrono::NaiveDate) -> Result<(), String> {
    let offset = offset_to(crate::store::now_ms(), day);
    if offset < OFFSET_MS.load(Ordering::SeqCst) {
        return Err(format!("the world's clock does not go back to {day}"));
    }
    OFFSET_MS.store(offset, Ordering::SeqCst);
    Ok(())
}

/// The offset that makes the wall time `wall_ms` fall on `day` in China at
/// the same time of day.
fn offset_to(wall_ms: i64, day: chrono::NaiveDate) -> i64 {
    let wall = chrono::DateTime::from_timestamp_millis(wall_ms)
        .unwrap_or_default()
        .with_timezone(&crate::domain::china_tz())
        .date_naive();
    (day - wall).num_days() * 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_moves_whole_days_in_china_time() {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // 2026-12-07 23:30 in China is 15:30 UTC.
        let wall = chrono::DateTime::parse_from_rfc3339("2026-12-07T23:30:00+08:00")
            .unwrap()
            .timestamp_millis();
        assert_eq!(offset_to(wall, d("2026-12-07")), 0);
        let to = offset_to(wall, d("2027-01-10"));
        assert_eq!(to, 34 * 86_400_000);
        let there = chrono::DateTime::from_timestamp_millis(wall + to)
            .unwrap()
            .with_timezone(&crate::domain::china_tz());
        assert_eq!(there.to_rfc3339(), "2027-01-10T23:30:00+08:00");
        assert_eq!(super::super::period_of(wall + to), "2027-01");
    }
}
