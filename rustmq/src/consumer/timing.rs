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

/// The shortest wait between attempts of tasks that retry without end (a consumer's fetches
/// and rejoins, a stream's sessions): a `retry_config` of zero delays would otherwise have them
/// spin against a broker that is down.
pub(crate) const MIN_RETRY_DELAY: Duration = Duration::from_millis(10);

/// The delays between attempts of a failed fetch or (re)join, or of a stream's session: the
/// client's `retry_config` (`base_delay` growing by `multiplier` up to `max_delay`, drawn from
/// the upper half of that unless `jitter` is off, so that the members of a group that lost
/// their broker together do not come back in lockstep), each at least [`MIN_RETRY_DELAY`].
/// These tasks retry until they succeed or their consumer or stream closes: `max_retries`
/// bounds only the calls a user awaits.
pub(crate) fn retry_backoff(retry: &RetryConfig) -> Backoff {
    Backoff::new(retry).with_floor(MIN_RETRY_DELAY)
}

/// [`retry_backoff`], none of its delays longer than `cap` (nor shorter than the floor).
pub(crate) fn retry_backoff_within(retry: &RetryConfig, cap: Duration) -> Backoff {
    retry_backoff(&RetryConfig {
        max_delay: retry.max_delay.min(cap),
        ..retry.clone()
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

    /// The client's retry settings, each delay at least the floor.
    #[test]
    fn retries_back_off_as_the_client_s_retry_config_says() {
        let config = |base: u64, max: u64, jitter| RetryConfig {
            max_retries: 0,
            base_delay: Duration::from_millis(base),
            max_delay: Duration::from_millis(max),
            multiplier: 3.0,
            jitter,
        };
        let exact = retry_backoff(&config(20, 1_000, false));
        let delays: Vec<u128> = (0..6).map(|a| exact.delay(a).as_millis()).collect();
        assert_eq!(delays, [20, 60, 180, 540, 1000, 1000]);
        let jittered = retry_backoff(&config(20, 1_000, true));
        for attempt in 0..6 {
            let nominal = exact.delay(attempt);
            let draws: std::collections::HashSet<Duration> =
                (0..50).map(|_| jittered.delay(attempt)).collect();
            assert!(draws.len() > 1, "attempt {attempt}: no jitter");
            assert!(
                draws.iter().all(|d| *d >= nominal / 2 && *d <= nominal),
                "attempt {attempt}: {draws:?}"
            );
        }
        // A cap below `max_delay` holds too (a stream's fetches).
        let capped = retry_backoff_within(&config(20, 1_000, false), Duration::from_millis(100));
        assert_eq!(capped.delay(1), Duration::from_millis(60));
        assert_eq!(capped.delay(5), Duration::from_millis(100));
        // Zero delays would spin: the floor holds, jittered or not (jitter draws from the
        // upper half of a nominal delay, which may be under twice the floor).
        for jitter in [false, true] {
            let zero = retry_backoff(&config(0, 0, jitter));
            assert!((0..4).all(|a| zero.delay(a) == MIN_RETRY_DELAY));
            let small = retry_backoff(&config(12, 12, jitter));
            assert!((0..200).all(|a| small.delay(a % 4) >= MIN_RETRY_DELAY));
        }
    }
}
