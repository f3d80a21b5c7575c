// Shared by the framework benchmarks: a small JSON payload, a handler, and the layered service
// as `Service` composes it for a running handler (four layers around the handler).

use std::time::Duration;

use rustmq::prelude::*;
use rustmq::typed::{BoxError, BoxService, Delivery, HandlerLayer, Settlement};
use rustmq::Topic;
use tower::layer::util::{Identity, Stack};
use tower::ServiceExt;

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
        // A fixed timestamp: reading the clock would calibrate `quanta`'s counter, a loop whose
        // length depends on timing, and the callgrind counts would vary with it.
        .timestamp(1_700_000_000_000)
        .build()
        .expect("message")
}

/// The handler alone, erased as the runtime erases it.
pub(crate) fn bare() -> BoxService {
    BoxService::handler(handle, ())
}

/// The handler behind trace, timeout, retry and dead-letter layers, composed as
/// `Service::layer` composes them (statically, around the erased handler).
pub(crate) fn layered() -> impl tower::Service<
    Delivery,
    Response = Settlement,
    Error = BoxError,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    Stack::new(
        Stack::new(
            Stack::new(
                Stack::new(Identity::new(), TraceLayer::new()),
                TimeoutLayer::new(Duration::from_secs(5)),
            ),
            RetryLayer::exponential(3, Duration::from_millis(100)),
        ),
        DeadLetterLayer::default(),
    )
    .wrap(bare())
}

/// The same four layers each erased into a `BoxService` (one allocation per layer and
/// message): how `Service::layer` composed them before it stacked them statically.
pub(crate) fn erased_each() -> BoxService {
    let mut svc = bare();
    svc = BoxService::new(tower::Layer::layer(&TraceLayer::new(), svc));
    svc = BoxService::new(tower::Layer::layer(
        &TimeoutLayer::new(Duration::from_secs(5)),
        svc,
    ));
    svc = BoxService::new(tower::Layer::layer(
        &RetryLayer::exponential(3, Duration::from_millis(100)),
        svc,
    ));
    BoxService::new(tower::Layer::layer(&DeadLetterLayer::default(), svc))
}

/// Hands messages to a service one at a time as a handler's runner does: its own service
/// driven (`ready`, then `call`; not a clone per message), each delivery made in the last
/// one's allocation, and a clone kept to settle by.
pub(crate) struct Runner<S> {
    service: S,
    last: Option<Delivery>,
}

impl<S> Runner<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
{
    pub(crate) fn new(service: S) -> Self {
        Self {
            service,
            last: None,
        }
    }

    /// The message's delivery is made before the returned future, which would otherwise hold
    /// (and move) the message until its first poll.
    pub(crate) fn handle(
        &mut self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<Settlement, BoxError>> + '_ {
        let delivery = match self.last.take() {
            Some(last) => last.recycle(message),
            None => Delivery::new(message),
        };
        async move {
            let settled = self.service.ready().await?.call(delivery.clone()).await;
            self.last = Some(delivery);
            settled
        }
    }
}
