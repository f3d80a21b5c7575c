//! Retry with exponential backoff and jitter.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;
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

    /// Whether `result` is retried, and after which delay; counts the retry.
    #[inline]
    fn next_delay(&mut self, result: &Result<Settlement, BoxError>) -> Option<Duration> {
        let transient = matches!(result, Err(_) | Ok(Settlement::Retry(_)));
        if !transient || self.retries >= self.max_retries {
            return None;
        }
        let delay = self.delay(self.retries);
        self.retries += 1;
        Some(delay)
    }
}

/// The policy on `tower::retry::Retry`, for services that use tower's own retry. [`RetryLayer`]
/// has a service of its own ([`Retry`]) with the same behaviour.
impl Policy<Delivery, Settlement, BoxError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    #[inline]
    fn retry(
        &mut self,
        req: &mut Delivery,
        result: &mut Result<Settlement, BoxError>,
    ) -> Option<Self::Future> {
        let delay = self.next_delay(result)?;
        let attempt = req.count_attempt();
        tracing::debug!(attempt, ?delay, "retrying delivery");
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

    /// The layer's policy, for `tower::retry::Retry::new(policy, service)` where tower's own
    /// retry service is wanted.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: self.policy,
        }
    }
}

/// The service of [`RetryLayer`]: `tower::retry::Retry` with [`RetryPolicy`], in fewer steps.
///
/// A call keeps a clone of the delivery (a reference count) and of the wrapped service, as
/// tower's does, to retry with; a retry waits for its delay, then for the clone to be ready,
/// and calls it with the delivery's next attempt. The backoff's timer is boxed: it is made
/// only for a retry, and every future around this one would otherwise carry it.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S> Retry<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> tower::Service<Delivery> for Retry<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError> + Clone,
{
    type Response = Settlement;
    type Error = BoxError;
    type Future = RetryFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, delivery: Delivery) -> RetryFuture<S> {
        // Cloned after the call, as tower's `Retry` does: a service whose clone copies state
        // that `call` changes (a counter, readiness taken) hands the retry its state after it.
        let future = self.inner.call(delivery.clone());
        RetryFuture {
            state: State::Called { future },
            service: self.inner.clone(),
            delivery,
            policy: self.policy,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Retry`].
    pub struct RetryFuture<S>
    where
        S: tower::Service<Delivery>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        delivery: Delivery,
        policy: RetryPolicy,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt.
        Called {
            #[pin]
            future: F,
        },
        // The delay before the next attempt (`None` once it is over), then the service's
        // readiness for it.
        Backoff {
            sleep: Option<Pin<Box<Sleep>>>,
        },
    }
}

impl<S> std::fmt::Debug for RetryFuture<S>
where
    S: tower::Service<Delivery>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryFuture")
            .field("attempt", &self.delivery.attempt())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S> Future for RetryFuture<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
{
    type Output = Result<Settlement, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = std::task::ready!(future.poll(cx));
                    let Some(delay) = this.policy.next_delay(&result) else {
                        return Poll::Ready(result);
                    };
                    let attempt = this.delivery.count_attempt();
                    tracing::debug!(attempt, ?delay, "retrying delivery");
                    this.state.set(State::Backoff {
                        sleep: Some(Box::pin(tokio::time::sleep(delay))),
                    });
                }
                StateProj::Backoff { sleep } => {
                    if let Some(delay) = sleep {
                        std::task::ready!(delay.as_mut().poll(cx));
                        // Over: the timer is let go before waiting for the service.
                        *sleep = None;
                    }
                    std::task::ready!(this.service.poll_ready(cx))?;
                    let future = this.service.call(this.delivery.clone());
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use tower::limit::ConcurrencyLimitLayer;
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::message::Message;

    /// Fails its first `failures` calls with `failure`, then acks; counts calls and records
    /// the attempt each call saw.
    #[derive(Clone)]
    struct Flaky {
        failures: u32,
        failure: fn() -> Result<Settlement, BoxError>,
        calls: Arc<AtomicU32>,
        attempts: Arc<parking_lot::Mutex<Vec<u32>>>,
    }

    impl Flaky {
        fn new(failures: u32, failure: fn() -> Result<Settlement, BoxError>) -> Self {
            Flaky {
                failures,
                failure,
                calls: Arc::default(),
                attempts: Arc::default(),
            }
        }
    }

    impl Service<Delivery> for Flaky {
        type Response = Settlement;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Settlement, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, delivery: Delivery) -> Self::Future {
            self.attempts.lock().push(delivery.attempt());
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < self.failures {
                (self.failure)()
            } else {
                Ok(Settlement::Ack)
            })
        }
    }

    fn delivery() -> Delivery {
        Delivery::new(Message::builder().topic("t").payload("x").build().unwrap())
    }

    fn failed() -> Result<Settlement, BoxError> {
        Err("down".into())
    }

    /// Transient failures (`Err`, `Settlement::Retry`) are retried after `base * 2^n`, each
    /// attempt counted on the delivery, until one succeeds.
    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_with_backoff_counting_attempts() {
        for failure in [failed as fn() -> _, || {
            Ok(Settlement::Retry("later".into()))
        }] {
            let flaky = Flaky::new(2, failure);
            let layer = RetryLayer::exponential(3, Duration::from_millis(100)).without_jitter();
            let start = tokio::time::Instant::now();
            let d = delivery();
            let result = layer.layer(flaky.clone()).oneshot(d.clone()).await;
            assert!(matches!(result, Ok(Settlement::Ack)), "{result:?}");
            assert_eq!(*flaky.attempts.lock(), [1, 2, 3]);
            assert_eq!(
                d.attempt(),
                3,
                "the attempt count is shared with the caller's clone"
            );
            assert_eq!(start.elapsed(), Duration::from_millis(100 + 200));
        }
    }

    /// After `max_retries` retries the last failure is returned; settlements that are not
    /// transient are never retried.
    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries_and_never_retries_final_settlements() {
        let flaky = Flaky::new(u32::MAX, failed);
        let layer = RetryLayer::exponential(2, Duration::from_millis(10));
        let result = layer.layer(flaky.clone()).oneshot(delivery()).await;
        assert_eq!(result.unwrap_err().to_string(), "down");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3, "1 call + 2 retries");

        let finals: [fn() -> Result<Settlement, BoxError>; 3] = [
            || Ok(Settlement::Poison("bad".into())),
            || Ok(Settlement::DeadLetter("no".into())),
            || Ok(Settlement::Skip),
        ];
        for settlement in finals {
            let flaky = Flaky::new(1, settlement);
            let result = layer.layer(flaky.clone()).oneshot(delivery()).await;
            assert_eq!(result.unwrap(), settlement().unwrap());
            assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
        }
    }

    /// Counts its own calls in a field its clones copy (as a layer keeping a counter in its
    /// service does), fails the first, and fails readiness once `broken` is set.
    #[derive(Clone)]
    struct Counting {
        count: u32,
        seen: Arc<parking_lot::Mutex<Vec<u32>>>,
        broken: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Service<Delivery> for Counting {
        type Response = Settlement;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Settlement, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.broken.load(Ordering::SeqCst) {
                Poll::Ready(Err("not ready".into()))
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn call(&mut self, _: Delivery) -> Self::Future {
            self.seen.lock().push(self.count);
            self.count += 1;
            std::future::ready(if self.count == 1 {
                failed()
            } else {
                Ok(Settlement::Ack)
            })
        }
    }

    /// The service a retry calls is cloned after the first call, as tower's `Retry` clones
    /// it: it carries the state that call left; and a retry whose service fails readiness
    /// ends with that error.
    #[tokio::test(start_paused = true)]
    async fn the_retry_clone_is_taken_after_the_call_and_its_readiness_error_ends_the_retry() {
        let counting = Counting {
            count: 0,
            seen: Arc::default(),
            broken: Arc::default(),
        };
        let layer = RetryLayer::exponential(3, Duration::from_millis(10));
        let result = layer.layer(counting.clone()).oneshot(delivery()).await;
        assert!(matches!(result, Ok(Settlement::Ack)), "{result:?}");
        assert_eq!(*counting.seen.lock(), [0, 1]);

        counting.seen.lock().clear();
        let mut retry = layer.layer(counting.clone());
        let first = retry.ready().await.unwrap().call(delivery());
        counting.broken.store(true, Ordering::SeqCst);
        let result = first.await;
        assert_eq!(result.unwrap_err().to_string(), "not ready");
        assert_eq!(*counting.seen.lock(), [0], "no call without readiness");
    }

    /// The layer's policy drives tower's own `Retry` the same way.
    #[tokio::test(start_paused = true)]
    async fn the_policy_drives_towers_retry() {
        let flaky = Flaky::new(2, failed);
        let layer = RetryLayer::exponential(3, Duration::from_millis(100)).without_jitter();
        let start = tokio::time::Instant::now();
        let d = delivery();
        let tower_retry = tower::retry::Retry::new(layer.policy(), flaky.clone());
        let result = tower_retry.oneshot(d.clone()).await;
        assert!(matches!(result, Ok(Settlement::Ack)), "{result:?}");
        assert_eq!(*flaky.attempts.lock(), [1, 2, 3]);
        assert_eq!(start.elapsed(), Duration::from_millis(100 + 200));
    }

    /// A retry waits for the service to be ready again: a concurrency limit of one inside the
    /// retry is released by the failed attempt before the next one takes it.
    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_for_the_service_to_be_ready() {
        let flaky = Flaky::new(2, failed);
        let limited = ConcurrencyLimitLayer::new(1).layer(flaky.clone());
        let mut retry = RetryLayer::exponential(3, Duration::from_millis(10)).layer(limited);
        let first = retry.ready().await.unwrap().call(delivery());
        let result = tokio::time::timeout(Duration::from_secs(5), first).await;
        assert!(matches!(result, Ok(Ok(Settlement::Ack))), "{result:?}");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        // The limit's permit came back: the service takes the next call.
        let next = retry.ready().await.unwrap().call(delivery()).await;
        assert!(matches!(next, Ok(Settlement::Ack)));
    }

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
