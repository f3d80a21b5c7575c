//! A per-attempt timeout whose timer is only armed for a handler that has to wait.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
pub use tower::timeout::error::Elapsed;

use crate::typed::delivery::Delivery;
use crate::typed::settle::{BoxError, Settlement};

/// Fails a handler call that takes longer than its timeout with [`Elapsed`] (tower's error, so
/// a retry layer outside retries it like any other failure).
///
/// It behaves as `tower::timeout::TimeoutLayer`, the deadline counted from the call, but it
/// registers a timer only when the handler is still pending after its first poll: a handler
/// that settles without waiting (most of them, for most messages) costs one clock read rather
/// than a timer entry made and dropped per message.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A timeout of `timeout` per call.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> tower::Service<Delivery> for Timeout<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
{
    type Response = Settlement;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let start = Instant::now();
        TimeoutFuture {
            inner: self.inner.call(delivery),
            start,
            timeout: self.timeout,
            sleep: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Timeout`].
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        // The deadline is `start + timeout`, added up only for a handler that has to wait.
        start: Instant,
        timeout: Duration,
        // Boxed: armed only for a handler that has to wait, and a `Sleep` is some 100 bytes
        // that every layer around this one would otherwise move with the future.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Settlement, BoxError>>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        let (start, timeout) = (*this.start, *this.timeout);
        let sleep = this.sleep.get_or_insert_with(|| {
            // A timeout too long to add (`Duration::MAX`: "never") waits about thirty years,
            // as tokio's own `sleep` does.
            let deadline = start
                .checked_add(timeout)
                .unwrap_or_else(|| start + Duration::from_secs(86_400 * 365 * 30));
            Box::pin(tokio::time::sleep_until(deadline))
        });
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed::new().into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::message::Message;

    fn delivery() -> Delivery {
        Delivery::new(Message::builder().topic("t").payload("x").build().unwrap())
    }

    /// A handler that settles after `wait` (at once when zero).
    fn waits(
        wait: Duration,
    ) -> impl tower::Service<
        Delivery,
        Response = Settlement,
        Error = BoxError,
        Future = impl Future<Output = Result<Settlement, BoxError>>,
    > {
        tower::service_fn(move |_: Delivery| async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(Settlement::Ack)
        })
    }

    /// A handler slower than the timeout fails with `Elapsed` at the deadline, counted from
    /// the call (not from the first poll); one that waits less, or not at all, settles.
    #[tokio::test(start_paused = true)]
    async fn slow_calls_elapse_at_the_deadline_and_the_others_settle() {
        let layer = TimeoutLayer::new(Duration::from_millis(100));

        let start = Instant::now();
        let mut slow = layer.layer(waits(Duration::from_secs(10)));
        let call = tower::Service::call(&mut slow, delivery());
        // The deadline runs from the call, while nobody polls it yet.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let err = call.await.unwrap_err();
        assert!(err.is::<Elapsed>(), "{err}");
        assert_eq!(start.elapsed(), Duration::from_millis(100));

        let waited = layer
            .layer(waits(Duration::from_millis(99)))
            .oneshot(delivery())
            .await;
        assert!(matches!(waited, Ok(Settlement::Ack)));
        let at_once = layer.layer(waits(Duration::ZERO)).oneshot(delivery()).await;
        assert!(matches!(at_once, Ok(Settlement::Ack)));
        // "Never" is a valid timeout, not an overflow.
        let never = TimeoutLayer::new(Duration::MAX)
            .layer(waits(Duration::from_secs(3_600)))
            .oneshot(delivery())
            .await;
        assert!(matches!(never, Ok(Settlement::Ack)));
    }
}
