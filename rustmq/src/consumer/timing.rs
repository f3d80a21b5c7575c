//! Time arithmetic the consumer's tasks share: deadlines that cannot overflow, and the
//! backoff between attempts of a failed fetch or (re)join.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryConfig;
use crate::transport::backoff::Backoff;

/// What stands in for a span too long for `Instant` arithmetic (a `Duration::MAX` setting
/// meant as "never"): about 30 years, as tokio's own far future.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + after`; a far-future instant where that overflows.
pub(crate) fn deadline(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// A period for `tokio::time::interval`, which adds it to the current instant unchecked.
pub(crate) fn period(every: Duration) -> Duration {
    every.min(FAR_FUTURE)
}

/// The delays between attempts of a failed fetch or (re)join: 100 ms doubling up to 5 s,
/// drawn from the upper half of that unless the client's `retry_config.jitter` is off, so
/// that the members of a group that lost their broker together do not come back in lockstep.
pub(crate) fn retry_backoff(jitter: bool) -> Backoff {
    Backoff::new(&RetryConfig {
        // Unused: the consumer's tasks retry until they succeed or the consumer closes.
        max_retries: 0,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
        multiplier: 2.0,
        jitter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_the_clock_s_range_is_the_far_future() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert_eq!(period(Duration::MAX), FAR_FUTURE);
        assert_eq!(period(Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn retries_back_off_with_jitter_up_to_five_seconds() {
        let exact = retry_backoff(false);
        let delays: Vec<u128> = (0..8).map(|a| exact.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let jittered = retry_backoff(true);
        for attempt in 0..8 {
            let nominal = exact.delay(attempt);
            let draws: std::collections::HashSet<Duration> =
                (0..50).map(|_| jittered.delay(attempt)).collect();
            assert!(draws.len() > 1, "attempt {attempt}: no jitter");
            assert!(
                draws.iter().all(|d| *d >= nominal / 2 && *d <= nominal),
                "attempt {attempt}: {draws:?}"
            );
        }
    }
}
