//! Retry with exponential backoff and jitter, on `tower::retry`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tower::retry::Policy;

use crate::typed::delivery::Delivery;
use crate::typed::settle::{BoxError, Settlement};

/// Retries transient failures (`Err`, `Settlement::Retry`) of a delivery up to `max_retries`
/// times, waiting `base * 2^n` (capped, with equal jitter) between attempts. Poison messages
/// and explicit dead-letter settlements are never retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    max_retries: u32,
    base: Duration,
    max_delay: Duration,
    jitter: bool,
    retries: u32,
}

impl RetryPolicy {
    /// The delay before retry `n` (0-based).
    pub fn delay(&self, n: u32) -> Duration {
        let nominal = self
            .base
            .checked_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        if self.jitter && !nominal.is_zero() {
            let half = nominal / 2;
            half + (nominal - half).mul_f64(fastrand::f64())
        } else {
            nominal
        }
    }
}

impl Policy<Delivery, Settlement, BoxError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    #[inline]
    fn retry(
        &mut self,
        req: &mut Delivery,
        result: &mut Result<Settlement, BoxError>,
    ) -> Option<Self::Future> {
        let transient = matches!(result, Err(_) | Ok(Settlement::Retry(_)));
        if !transient || self.retries >= self.max_retries {
            return None;
        }
        let delay = self.delay(self.retries);
        self.retries += 1;
        *req = req.next_attempt();
        tracing::debug!(attempt = req.attempt(), ?delay, "retrying delivery");
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    #[inline]
    fn clone_request(&mut self, req: &Delivery) -> Option<Delivery> {
        Some(req.clone())
    }
}

/// The layer of [`RetryPolicy`].
#[derive(Debug, Clone, Copy)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// Up to `max_retries` retries, starting `base` apart and doubling, capped at 30 s, jittered.
    pub fn exponential(max_retries: u32, base: Duration) -> Self {
        Self {
            policy: RetryPolicy {
                max_retries,
                base,
                max_delay: Duration::from_secs(30),
                jitter: true,
                retries: 0,
            },
        }
    }

    /// Caps the delay between attempts.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.policy.max_delay = max;
        self
    }

    /// Turns jitter off (delays exactly `base * 2^n`).
    pub fn without_jitter(mut self) -> Self {
        self.policy.jitter = false;
        self
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = tower::retry::Retry<RetryPolicy, S>;

    fn layer(&self, inner: S) -> Self::Service {
        tower::retry::Retry::new(self.policy, inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let layer = RetryLayer::exponential(5, Duration::from_millis(100))
            .without_jitter()
            .max_delay(Duration::from_millis(350));
        let p = layer.policy;
        let delays: Vec<_> = (0..4).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        let jittered = RetryLayer::exponential(5, Duration::from_millis(100)).policy;
        for _ in 0..100 {
            let d = jittered.delay(1);
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_millis(200),
                "{d:?}"
            );
        }
    }
}
