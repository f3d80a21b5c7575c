//! A tracing span per delivery: topic, partition, offset, group, attempt, and the settlement.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Span;

use crate::typed::delivery::Delivery;
use crate::typed::settle::{BoxError, Settlement};

/// Wraps each delivery in a `handle` span (target `rustmq::handle`) and logs its settlement.
///
/// With the `opentelemetry` feature, the span's parent is the sender's span named by the
/// message's `traceparent` header, so one trace runs from the producer through the handler to
/// whatever the handler produces.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer {
    _private: (),
}

impl TraceLayer {
    /// A trace layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S> Trace<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> tower::Service<Delivery> for Trace<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
{
    type Response = Settlement;
    type Error = BoxError;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let m = delivery.message();
        let span = tracing::info_span!(
            target: "rustmq::handle",
            "handle",
            topic = %m.topic,
            partition = m.partition,
            offset = m.offset,
            group = %delivery.group(),
            handler = delivery.handler_name(),
            attempt = delivery.attempt(),
        );
        #[cfg(feature = "opentelemetry")]
        crate::telemetry::otel::set_parent_from_headers(&span, &m.headers);
        // The handling is timed only if the per-message `settled` event can be recorded (asked
        // inside the span, so that filters on the span apply): at the usual levels (info, warn)
        // the two clock reads per message would measure nothing anybody sees. A failure's
        // warning carries the time when the debug level is on too. The call runs in the span
        // as well: a handler's arguments are extracted (its payload decoded) in its service's
        // call, and what they log belongs to the delivery.
        let (inner, start) = if span.is_disabled() {
            timed_call(&mut self.inner, delivery)
        } else {
            span.in_scope(|| timed_call(&mut self.inner, delivery))
        };
        TraceFuture {
            inner: Some(inner),
            span,
            start,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Trace`]: the inner service's, run inside the delivery's `handle` span
    /// (entered while it is polled and while it is dropped, as `tracing::Instrumented` does,
    /// but only if the span is enabled: a disabled one costs nothing per poll), logging the
    /// settlement.
    #[derive(Debug)]
    pub struct TraceFuture<F> {
        // Emptied only when dropped, inside the span.
        #[pin]
        inner: Option<F>,
        span: Span,
        // Set when the `settled` event is on.
        start: Option<Instant>,
    }

    impl<F> PinnedDrop for TraceFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if !this.span.is_disabled() {
                let _entered = this.span.enter();
                this.inner.set(None);
            }
        }
    }
}

impl<F> Future for TraceFuture<F>
where
    F: Future<Output = Result<Settlement, BoxError>>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            unreachable!("a trace future is only emptied when it is dropped")
        };
        if this.span.is_disabled() {
            poll_logged(inner, *this.start, cx)
        } else {
            let _entered = this.span.enter();
            poll_logged(inner, *this.start, cx)
        }
    }
}

/// Calls `inner`, noting the time first if the `settled` event is on (asked where it is called,
/// inside the span when that is enabled, so that filters on the span apply).
#[inline(always)]
fn timed_call<S: tower::Service<Delivery>>(
    inner: &mut S,
    delivery: Delivery,
) -> (S::Future, Option<Instant>) {
    let debug_on = tracing::enabled!(target: "rustmq::handle", tracing::Level::DEBUG);
    let start = debug_on.then(Instant::now);
    (inner.call(delivery), start)
}

/// Polls the inner future and logs its settlement (inside the span, if it is entered).
#[inline(always)]
fn poll_logged<F>(
    inner: Pin<&mut F>,
    start: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<F::Output>
where
    F: Future<Output = Result<Settlement, BoxError>>,
{
    let result = std::task::ready!(inner.poll(cx));
    let elapsed_us = start.map(|start| start.elapsed().as_micros() as u64);
    match &result {
        Ok(s) => {
            if let Some(elapsed_us) = elapsed_us {
                tracing::debug!(target: "rustmq::handle", settlement = s.kind(), elapsed_us, "settled")
            }
        }
        // The macro checks its own level (within the span, when it is entered).
        Err(e) => {
            tracing::warn!(target: "rustmq::handle", error = %e, elapsed_us, "handler failed")
        }
    }
    Poll::Ready(result)
}
