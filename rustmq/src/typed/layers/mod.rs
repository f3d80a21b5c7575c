//! Messaging middleware as tower layers.
//!
//! Layers wrap a handler's `tower::Service<Delivery, Response = Settlement, Error = BoxError>`.
//! On a [`Service`](crate::typed::Service) they are added innermost first, like axum's
//! `Router::layer`: `.layer(TraceLayer::new()).layer(TimeoutLayer::new(d)).layer(RetryLayer::..)
//! .layer(DeadLetterLayer::default())` times out each attempt, retries around the timeout, and
//! dead-letters what the retries could not save.
//!
//! Concurrency limits are tower's own ([`ConcurrencyLimitLayer`]). Retry ([`RetryLayer`]) is
//! `tower::retry`'s behaviour with a messaging policy, in a service of its own; timeouts
//! ([`TimeoutLayer`], tower's semantics and error, with a timer armed only for handlers that
//! wait), dead-lettering, tracing and metrics (`MetricsLayer`, with the `metrics` feature) are
//! ours. Any other tower layer applies too.

mod dead_letter;
#[cfg(feature = "metrics")]
mod metrics;
mod retry;
mod timeout;
mod trace;

pub(crate) use dead_letter::publish_dead_letter;
pub use dead_letter::{
    DeadLetter, DeadLetterLayer, DLQ_HEADER_ATTEMPTS, DLQ_HEADER_ERROR, DLQ_HEADER_KIND,
    DLQ_HEADER_OFFSET, DLQ_HEADER_PARTITION, DLQ_HEADER_TOPIC,
};
#[cfg(feature = "metrics")]
pub use metrics::{Metrics, MetricsLayer};
pub use retry::{Retry, RetryFuture, RetryLayer, RetryPolicy};
pub use timeout::{Elapsed, Timeout, TimeoutFuture, TimeoutLayer};
pub use tower::limit::ConcurrencyLimitLayer;
pub use trace::{Trace, TraceLayer};
