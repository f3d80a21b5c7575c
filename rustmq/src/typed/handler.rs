//! Handlers: async functions whose arguments are extractors and whose return value is a
//! settlement (axum's `Handler`, for messages).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::delivery::Delivery;
use super::extract::{ExtractorKind, FromDelivery};
use super::settle::{BoxError, IntoSettlement, Settlement};
use super::topic::TopicInfo;

pub use super::future::HandlerFuture;

/// Where a handler's group starts reading when it has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest stored message.
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// The most messages a handler may process at once (`#[handler(concurrency = ..)]`): each is
/// a worker task with a queue of its own, made when the service starts.
pub const MAX_CONCURRENCY: usize = 1024;

/// Per-handler settings, from `#[handler(..)]` or set on the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerOptions {
    /// Name (the function's).
    pub name: &'static str,
    /// Consumer group; default `"<topic>.<name>"`.
    pub group: Option<&'static str>,
    /// Messages processed at once (split by key, keeping per-key order); default 1, at most
    /// [`MAX_CONCURRENCY`] (a service with more is refused when it starts).
    pub concurrency: Option<usize>,
    /// Where a new group starts; default the service's setting.
    pub start: Option<StartFrom>,
}

impl HandlerOptions {
    /// Options named `name`, everything else default.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    /// Sets the consumer group.
    pub fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// Sets the concurrency.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// Start from the earliest message.
    pub fn start_earliest(mut self) -> Self {
        self.start = Some(StartFrom::Earliest);
        self
    }

    /// Start from new messages only.
    pub fn start_latest(mut self) -> Self {
        self.start = Some(StartFrom::Latest);
        self
    }
}

/// The arguments of a handler, as a tuple of extractors: finds the payload's topic.
pub trait HandlerArgs {
    /// The topic of the (first) payload argument.
    fn topic() -> Option<TopicInfo>;
    /// How many payload arguments there are.
    fn payloads() -> usize;
}

/// A message handler. Every `async fn` whose arguments are extractors and whose output is a
/// settlement is one; `#[handler]` adds options and clearer compile errors.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a RustMQ handler",
    label = "not a handler",
    note = "a handler is an `async fn` taking a payload (a type that derives `Topic`) and other extractors, returning `()`, a `Settlement` or a `Result`; annotate it with `#[rustmq::handler]` for a precise error"
)]
pub trait Handler<Args: HandlerArgs, S>: Clone + Send + Sync + 'static {
    /// Runs the handler for one delivery.
    fn call(&self, delivery: Delivery, state: S) -> HandlerFuture;

    /// Options of this handler.
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
    }

    /// The topic the handler consumes: its payload's.
    fn topic(&self) -> Option<TopicInfo> {
        Args::topic()
    }
}

/// Calls a handler (used by the code `#[handler]` generates).
pub fn call_handler<H: Handler<M, S>, M: HandlerArgs, S>(
    handler: H,
    delivery: Delivery,
    state: S,
) -> HandlerFuture {
    handler.call(delivery, state)
}

macro_rules! impl_handler {
    ($($t:ident),+) => {
        impl<$($t: ExtractorKind,)+> HandlerArgs for ($($t,)+) {
            fn topic() -> Option<TopicInfo> {
                None $(.or_else($t::payload_topic))+
            }
            fn payloads() -> usize {
                0 $(+ usize::from($t::IS_PAYLOAD))+
            }
        }

        #[allow(non_snake_case)]
        impl<F, Fut, S, $($t,)+> Handler<($($t,)+), S> for F
        where
            F: Fn($($t),+) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: IntoSettlement,
            S: Send + Sync + 'static,
            $($t: FromDelivery<S> + Send + 'static,)+
        {
            fn call(&self, delivery: Delivery, state: S) -> HandlerFuture {
                // The arguments are extracted (the payload decoded) when the handler is called,
                // and only the function's own future is boxed: the box holds neither the
                // delivery nor the state, and no state machine of ours sits around the
                // function's.
                $(
                    let $t = match $t::from_delivery(&delivery, &state) {
                        Ok(v) => v,
                        Err(rejection) => {
                            return HandlerFuture::new(std::future::ready(rejection.into_result()))
                        }
                    };
                )+
                drop(delivery);
                drop(state);
                HandlerFuture::make(|| Settle { future: self($($t),+) })
            }
        }
    };
}

impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);

pin_project_lite::pin_project! {
    /// A handler function's future, its output made a settlement.
    struct Settle<F> {
        #[pin]
        future: F,
    }
}

impl<F> Future for Settle<F>
where
    F: Future,
    F::Output: IntoSettlement,
{
    type Output = Result<Settlement, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .future
            .poll(cx)
            .map(IntoSettlement::into_settlement)
    }
}

/// A handler with its state, as a `tower::Service<Delivery>`.
pub struct HandlerService<H, M, S> {
    handler: H,
    state: S,
    _args: PhantomData<fn() -> M>,
}

impl<H: Clone, M, S: Clone> Clone for HandlerService<H, M, S> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            state: self.state.clone(),
            _args: PhantomData,
        }
    }
}

impl<H, M, S> std::fmt::Debug for HandlerService<H, M, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerService").finish_non_exhaustive()
    }
}

impl<H, M, S> HandlerService<H, M, S> {
    /// Wraps `handler` with the state it is called with.
    pub fn new(handler: H, state: S) -> Self {
        Self {
            handler,
            state,
            _args: PhantomData,
        }
    }

    /// The handler.
    pub fn get_ref(&self) -> &H {
        &self.handler
    }

    /// Calls the handler with a clone of the state (a handler is always ready).
    #[inline]
    pub(crate) fn call_shared(&self, delivery: Delivery) -> HandlerFuture
    where
        H: Handler<M, S>,
        M: HandlerArgs,
        S: Clone,
    {
        self.handler.call(delivery, self.state.clone())
    }
}

impl<H, M, S> tower::Service<Delivery> for HandlerService<H, M, S>
where
    H: Handler<M, S>,
    M: HandlerArgs,
    S: Clone + Send + Sync + 'static,
{
    type Response = Settlement;
    type Error = BoxError;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        self.call_shared(delivery)
    }
}
