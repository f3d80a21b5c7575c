//! Exponential backoff with jitter, from a [`RetryConfig`].
//!
//! Attempt `n` (0-based) waits `min(max_delay, base_delay * multiplier^n)`. With `jitter` the
//! wait is drawn uniformly from the upper half of that ("equal jitter"): clients that failed
//! together spread out instead of reconnecting in lockstep, and each still waits at least half
//! the nominal delay, so a flapping broker is not hammered by unlucky draws of zero.

use std::time::Duration;

use crate::config::RetryConfig;

/// Delays between connection attempts and retries.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: bool,
    /// The shortest delay [`Backoff::delay`] gives, jittered or not.
    floor: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        Backoff {
            base: config.base_delay,
            max: config.max_delay,
            multiplier: config.multiplier,
            jitter: config.jitter,
            floor: Duration::ZERO,
        }
    }

    /// The same delays, none shorter than `floor` (after jitter).
    pub(crate) fn with_floor(mut self, floor: Duration) -> Self {
        self.floor = floor;
        self
    }

    /// The nominal (un-jittered) delay before retry `attempt`.
    pub(crate) fn nominal(&self, attempt: u32) -> Duration {
        // Computed in f64 seconds so that large attempts saturate at `max` instead of
        // overflowing; `powi` takes an i32, and beyond a few hundred attempts the cap holds.
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The delay before retry `attempt` (0 for the first retry), jittered if configured.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal(attempt);
        if !self.jitter || nominal.is_zero() {
            return nominal.max(self.floor);
        }
        let half = nominal / 2;
        // Saturating: with a `max_delay` near `Duration::MAX`, float rounding could tip over.
        half.saturating_add((nominal - half).mul_f64(fastrand::f64()))
            .min(nominal)
            .max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: bool) -> Backoff {
        Backoff::new(&RetryConfig {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter,
        })
    }

    #[test]
    fn grows_exponentially_without_jitter() {
        let b = backoff(false);
        let delays: Vec<_> = (0..5).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600]);
    }

    #[test]
    fn is_capped_at_max_delay() {
        let b = backoff(false);
        assert_eq!(b.delay(7), Duration::from_secs(10)); // 12.8 s nominal
        assert_eq!(b.delay(1_000), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = backoff(true);
        for attempt in 0..12 {
            let nominal = b.nominal(attempt);
            for _ in 0..200 {
                let d = b.delay(attempt);
                assert!(
                    d >= nominal / 2 && d <= nominal,
                    "{d:?} outside [{:?}, {nominal:?}]",
                    nominal / 2
                );
            }
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let b = backoff(true);
        let draws: std::collections::HashSet<_> = (0..50).map(|_| b.delay(3)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn multiplier_one_is_constant_and_zero_base_is_immediate() {
        let b = Backoff::new(&RetryConfig {
            multiplier: 1.0,
            jitter: false,
            ..RetryConfig::default()
        });
        assert_eq!(b.delay(0), b.delay(9));
        let b = Backoff::new(&RetryConfig {
            base_delay: Duration::ZERO,
            ..RetryConfig::default()
        });
        assert_eq!(b.delay(4), Duration::ZERO);
    }
}
