//! [`BoxService`]: a handler's service with its type erased, cheap to clone.
//!
//! `tower::util::BoxCloneService` allocates on every clone, and a layered handler is cloned
//! for every message (the runner's `oneshot`, and tower's `Retry` clones the service it wraps
//! for every call): with four layers that was eight allocations per message before any work.
//! Here the erased service sits behind an `Arc`; cloning is a reference count. A service
//! erased with [`BoxService::new`] is cloned for each call (its fields are themselves
//! `BoxService`s, `Arc`s or plain values) under an uncontended lock, and `poll_ready` and
//! `call` are driven on that clone, so layers that reserve capacity in `poll_ready` (a
//! concurrency limit) work as tower intends. A handler erased with [`BoxService::handler`]
//! (always ready, called through a shared reference) is called directly.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tower::ServiceExt;

use super::delivery::Delivery;
use super::handler::{Handler, HandlerArgs, HandlerFuture, HandlerService};
use super::settle::{BoxError, Settlement};

/// A handler's service once erased: what layers wrap. Cloning it is an `Arc` increment; it is
/// always ready (readiness is checked on each call's own clone of the service inside, when the
/// service needs one).
#[derive(Clone)]
pub struct BoxService {
    inner: Arc<dyn Erased>,
}

impl BoxService {
    /// Erases `service`.
    pub fn new<T>(service: T) -> Self
    where
        T: tower::Service<Delivery, Response = Settlement, Error = BoxError>
            + Clone
            + Send
            + 'static,
        T::Future: Send + 'static,
    {
        BoxService {
            inner: Arc::new(Shared(Mutex::new(service))),
        }
    }

    /// Erases `handler`, called with `state`: what a running [`Service`](super::Service) does
    /// with each handler. Equivalent to `BoxService::new(HandlerService::new(handler, state))`,
    /// but a call goes straight to the handler: a handler is always ready and is called
    /// through a shared reference, so no clone of it is made and no lock taken per call.
    pub fn handler<H, M, S>(handler: H, state: S) -> Self
    where
        H: Handler<M, S>,
        M: HandlerArgs + 'static,
        S: Clone + Send + Sync + 'static,
    {
        BoxService {
            inner: Arc::new(HandlerService::new(handler, state)),
        }
    }
}

impl fmt::Debug for BoxService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxService")
    }
}

impl tower::Service<Delivery> for BoxService {
    type Response = Settlement;
    type Error = BoxError;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, delivery: Delivery) -> HandlerFuture {
        self.inner.call(delivery)
    }
}

trait Erased: Send + Sync {
    fn call(&self, delivery: Delivery) -> HandlerFuture;
}

impl<H, M, S> Erased for HandlerService<H, M, S>
where
    H: Handler<M, S>,
    M: HandlerArgs + 'static,
    S: Clone + Send + Sync + 'static,
{
    fn call(&self, delivery: Delivery) -> HandlerFuture {
        self.call_shared(delivery)
    }
}

struct Shared<T>(Mutex<T>);

impl<T> Erased for Shared<T>
where
    T: tower::Service<Delivery, Response = Settlement, Error = BoxError> + Clone + Send + 'static,
    T::Future: Send + 'static,
{
    fn call(&self, delivery: Delivery) -> HandlerFuture {
        let mut service = self.0.lock().clone();
        // Almost every service here is ready at once (our layers are, when what they wrap is):
        // then call it now and hand on its future, unboxed-again if it is already a
        // `HandlerFuture`. A service that is not ready yet (a concurrency limit) is driven
        // through `ready` in a future of its own, with the real waker; polling `poll_ready`
        // again after `Pending` is allowed.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => into_handler_future(service.call(delivery)),
            Poll::Ready(Err(e)) => HandlerFuture::new(std::future::ready(Err(e))),
            Poll::Pending => HandlerFuture::new(async move { service.oneshot(delivery).await }),
        }
    }
}

/// `future` as a [`HandlerFuture`], without boxing it again if it already is one.
fn into_handler_future<F>(future: F) -> HandlerFuture
where
    F: std::future::Future<Output = Result<Settlement, BoxError>> + Send + 'static,
{
    let mut slot = Some(future);
    let any: &mut dyn std::any::Any = &mut slot;
    match any
        .downcast_mut::<Option<HandlerFuture>>()
        .and_then(Option::take)
    {
        Some(boxed) => boxed,
        None => match slot {
            Some(future) => HandlerFuture::new(future),
            None => unreachable!("the slot is only emptied when it held a HandlerFuture"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tower::limit::ConcurrencyLimitLayer;
    use tower::Layer;

    use super::*;
    use crate::message::Message;

    fn delivery() -> Delivery {
        Delivery::new(Message::builder().topic("t").payload("x").build().unwrap())
    }

    #[derive(Clone)]
    struct Slow(Arc<AtomicUsize>, Arc<AtomicUsize>);

    impl tower::Service<Delivery> for Slow {
        type Response = Settlement;
        type Error = BoxError;
        type Future = HandlerFuture;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Delivery) -> HandlerFuture {
            let (now, peak) = (Arc::clone(&self.0), Arc::clone(&self.1));
            HandlerFuture::new(async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(Settlement::Ack)
            })
        }
    }

    /// Clones share one erased service, and a layer that limits concurrency in `poll_ready`
    /// still limits it across every clone's calls.
    #[tokio::test]
    async fn clones_share_the_service_and_readiness_is_honoured() {
        let peak = Arc::new(AtomicUsize::new(0));
        let inner = Slow(Arc::new(AtomicUsize::new(0)), Arc::clone(&peak));
        let service = BoxService::new(ConcurrencyLimitLayer::new(2).layer(inner));
        let calls = (0..6).map(|_| service.clone().oneshot(delivery()));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(|r| matches!(r, Ok(Settlement::Ack))));
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
