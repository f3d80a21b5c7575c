//! Handler metrics: deliveries handled by settlement, and the time each took.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{Counter, Histogram};

use crate::telemetry::names::{HANDLER_DURATION, HANDLER_HANDLED};
use crate::typed::delivery::Delivery;
use crate::typed::handler::HandlerFuture;
use crate::typed::settle::{BoxError, Settlement};

/// Settlement labels; `error` stands for a service error (a transient failure that no inner
/// layer turned into a settlement).
const KINDS: [&str; 7] = [
    "ack",
    "skip",
    "retry",
    "dead_letter",
    "poison",
    "dead_lettered",
    "error",
];

/// Records `rustmq_handler_handled_total{topic, group, handler, settlement}` and
/// `rustmq_handler_duration_seconds{topic, group, handler}` for every delivery that passes
/// through it.
///
/// Where it sits decides what it counts: outermost (added last) it sees one settlement per
/// message, after retries and dead-lettering; inside a `RetryLayer` it sees every attempt.
///
/// Available with the `metrics` feature (on by default).
///
/// ```no_run
/// use rustmq::prelude::*;
/// use rustmq::Topic;
///
/// #[derive(Debug, Serialize, Deserialize, Topic)]
/// #[topic(name = "orders")]
/// struct Order {
///     id: String,
/// }
///
/// async fn handle(order: Order) {
///     let _ = order;
/// }
///
/// # async fn demo(client: RustMqClient) -> rustmq::Result<()> {
/// Service::new(client)
///     .layer(TraceLayer::new())
///     .layer(MetricsLayer::new()) // outermost: one settlement per message
///     .handler(handle)
///     .run_until(tokio::signal::ctrl_c())
///     .await
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer {
    _private: (),
}

impl MetricsLayer {
    /// A metrics layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            handles: Arc::default(),
        }
    }
}

/// The service of [`MetricsLayer`]. Available with the `metrics` feature.
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    handles: Arc<OnceLock<Handles>>,
}

/// Handles registered on the first delivery, for its topic, group and handler: a handler
/// almost always sees one topic, so this spares a registry lookup per message.
#[derive(Debug)]
struct Handles {
    topic: String,
    group: String,
    handled: [Counter; KINDS.len()],
    duration: Histogram,
}

impl Handles {
    fn new(topic: &str, group: &str, handler: &'static str) -> Self {
        let labels = [
            ("topic", topic.to_owned()),
            ("group", group.to_owned()),
            ("handler", handler.to_owned()),
        ];
        Self {
            topic: topic.to_owned(),
            group: group.to_owned(),
            handled: KINDS.map(|kind| {
                let mut l = labels.to_vec();
                l.push(("settlement", kind.to_owned()));
                metrics::counter!(HANDLER_HANDLED, &l)
            }),
            duration: metrics::histogram!(HANDLER_DURATION, &labels),
        }
    }

    fn matches(&self, topic: &str, group: &str) -> bool {
        self.topic == topic && self.group == group
    }
}

impl<S> Metrics<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn kind_index(result: &Result<Settlement, BoxError>) -> usize {
    let kind = match result {
        Ok(s) => s.kind(),
        Err(_) => "error",
    };
    KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KINDS.len() - 1)
}

impl<S> tower::Service<Delivery> for Metrics<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Settlement;
    type Error = BoxError;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let (topic, group, handler) = (
            delivery.message().topic.to_string(),
            delivery.group().to_owned(),
            delivery.handler_name(),
        );
        let handles = Arc::clone(&self.handles);
        // Timed from before the call, which extracts the handler's arguments.
        let started = Instant::now();
        let fut = self.inner.call(delivery);
        HandlerFuture::new(async move {
            let result = fut.await;
            let elapsed = started.elapsed().as_secs_f64();
            let cached = handles.get_or_init(|| Handles::new(&topic, &group, handler));
            if cached.matches(&topic, &group) {
                cached.handled[kind_index(&result)].increment(1);
                cached.duration.record(elapsed);
            } else {
                let labels = [
                    ("topic", topic),
                    ("group", group),
                    ("handler", handler.to_owned()),
                ];
                let mut with_kind = labels.to_vec();
                with_kind.push(("settlement", KINDS[kind_index(&result)].to_owned()));
                metrics::counter!(HANDLER_HANDLED, &with_kind).increment(1);
                metrics::histogram!(HANDLER_DURATION, &labels).record(elapsed);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_settlement_has_a_label() {
        let all = [
            Settlement::Ack,
            Settlement::Skip,
            Settlement::Retry(String::new()),
            Settlement::DeadLetter(String::new()),
            Settlement::Poison(String::new()),
            Settlement::DeadLettered {
                topic: String::new(),
                reason: String::new(),
            },
        ];
        for s in all {
            let kind = s.kind();
            assert_eq!(KINDS[kind_index(&Ok(s))], kind);
        }
        assert_eq!(KINDS[kind_index(&Err("x".into()))], "error");
    }
}
