//! When to try again: a schedule of delays with jitter, `Retry-After`
//! honoured within a cap, and the point where a message is given up.

use std::time::Duration;

/// The retry policy of a target.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Delay before retry n (n = 1, 2, …); after the last, the message is dead.
    pub schedule: Vec<Duration>,
    /// Each delay is spread by ± this many percent.
    pub jitter_percent: u8,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            schedule: [5, 30, 120, 600, 1800, 7200, 21600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            jitter_percent: 20,
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt after `failed` attempts have
    /// failed (1 after the first failure), or `None` when the schedule is
    /// exhausted. `retry_after` from the target lengthens the delay, never
    /// shortens it, up to `max_retry_after`. `rand` is a uniform number in
    /// `0..=1_000_000` for the jitter.
    pub fn next_delay(
        &self,
        failed: usize,
        retry_after: Option<Duration>,
        rand: u32,
    ) -> Option<Duration> {
        let base = *self.schedule.get(failed.checked_sub(1)?)?;
        let j = u64::from(self.jitter_percent.min(100));
        let base_ms = base.as_millis() as u64;
        // base × (1 − j% … 1 + j%)
        let spread = base_ms * j / 100;
        let jittered = base_ms - spread + (2 * spread * u64::from(rand.min(1_000_000))) / 1_000_000;
        let mut d = Duration::from_millis(jittered);
        if let Some(ra) = retry_after {
            d = d.max(ra.min(self.max_retry_after));
        }
        Some(d)
    }
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![Duration::from_secs(5), Duration::from_secs(30)],
            jitter_percent: 20,
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn schedule_jitter_and_exhaustion() {
        let p = policy();
        assert_eq!(p.next_delay(1, None, 0), Some(Duration::from_secs(4)));
        assert_eq!(p.next_delay(1, None, 500_000), Some(Duration::from_secs(5)));
        assert_eq!(
            p.next_delay(1, None, 1_000_000),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            p.next_delay(2, None, 500_000),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            p.next_delay(3, None, 500_000),
            None,
            "schedule exhausted: dead"
        );
        assert_eq!(p.next_delay(0, None, 0), None);
    }

    #[test]
    fn retry_after_lengthens_within_the_cap() {
        let p = policy();
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(20)), 500_000),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(1)), 500_000),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(3600)), 500_000),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn retry_after_header_forms() {
        let now = httpdate::parse_http_date("Sun, 22 Nov 2026 10:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
