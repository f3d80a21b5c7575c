// Shared by the framework benchmarks: a small JSON payload, a handler, and the layered service
// exactly as `Service` builds it for a running handler (four layers around the handler).

use std::time::Duration;

use rustmq::prelude::*;
use rustmq::typed::{BoxService, HandlerService};
use rustmq::Topic;
use tower::Layer;

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "orders", key = "order_id")]
pub(crate) struct OrderPlaced {
    pub(crate) order_id: String,
    pub(crate) amount_cents: u64,
    pub(crate) currency: String,
}

pub(crate) async fn handle(order: OrderPlaced, meta: Metadata) -> Result<(), std::io::Error> {
    std::hint::black_box((&order, &meta));
    Ok(())
}

pub(crate) fn message() -> Message {
    let order = OrderPlaced {
        order_id: "order-000123".into(),
        amount_cents: 12_345,
        currency: "EUR".into(),
    };
    Message::builder()
        .topic("orders")
        .key("order-000123")
        .payload(serde_json::to_vec(&order).expect("json"))
        .build()
        .expect("message")
}

/// The handler alone, erased as the runtime erases it.
pub(crate) fn bare() -> BoxService {
    BoxService::new(HandlerService::new(handle, ()))
}

/// The same four layers composed with `tower::ServiceBuilder` and erased once.
pub(crate) fn stacked() -> BoxService {
    BoxService::new(
        tower::ServiceBuilder::new()
            .layer(DeadLetterLayer::default())
            .layer(RetryLayer::exponential(3, Duration::from_millis(100)))
            .layer(TimeoutLayer::new(Duration::from_secs(5)))
            .layer(TraceLayer::new())
            .service(bare()),
    )
}

/// The handler behind trace, timeout, retry and dead-letter layers, applied as `Service` does.
pub(crate) fn layered() -> BoxService {
    let mut svc = bare();
    svc = BoxService::new(TraceLayer::new().layer(svc));
    svc = BoxService::new(TimeoutLayer::new(Duration::from_secs(5)).layer(svc));
    svc = BoxService::new(RetryLayer::exponential(3, Duration::from_millis(100)).layer(svc));
    BoxService::new(DeadLetterLayer::default().layer(svc))
}
