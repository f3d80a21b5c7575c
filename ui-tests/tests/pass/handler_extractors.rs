//! A handler with every extractor, its options, and a call through the generated `Handler`.

use rustmq::typed::{HandlerArgs, StartFrom, TopicInfo};
use rustmq::{
    handler, Attempt, Delivery, Handler, HandlerOptions, Headers, Metadata, RustMqClient, Service,
    Settlement, State, Topic, TypedProducer,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "orders", key = "order_id")]
struct OrderPlaced {
    order_id: String,
    amount_cents: u64,
}

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "receipts", key = "order_id")]
struct Receipt {
    order_id: String,
}

#[derive(Debug, Clone)]
struct AppState {
    max_cents: u64,
}

#[derive(Debug)]
struct BillingError;

impl std::fmt::Display for BillingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("billing failed")
    }
}

impl std::error::Error for BillingError {}

/// Bills each placed order and publishes its receipt.
#[handler(group = "billing", concurrency = 4, start = "earliest")]
async fn bill(
    order: OrderPlaced,
    meta: Metadata,
    headers: Headers,
    state: State<AppState>,
    mut attempt: Attempt,
    receipts: TypedProducer<Receipt>,
) -> Result<(), BillingError> {
    attempt.0 += meta.partition;
    let _ = (headers.get("trace-id"), state.0.max_cents, attempt);
    receipts
        .send(&Receipt {
            order_id: order.order_id,
        })
        .await
        .map_err(|_| BillingError)?;
    Ok(())
}

/// Checks amounts; everything it needs comes without a broker.
#[handler(start = "latest")]
async fn check_amount(
    order: OrderPlaced,
    meta: Metadata,
    attempt: Attempt,
    state: State<AppState>,
) -> Settlement {
    assert_eq!((&*meta.topic, attempt.0), ("orders", 1));
    assert_eq!(state.0.max_cents, 100);
    if order.amount_cents > 100 {
        Settlement::DeadLetter("too expensive".into())
    } else {
        Settlement::Ack
    }
}

/// `_` arguments and the unit return type.
#[handler]
async fn log_order(order: OrderPlaced, _: Headers) {
    let _ = order;
}

fn options_of<H: Handler<M, S>, M: HandlerArgs, S>(handler: &H) -> (HandlerOptions, TopicInfo) {
    (
        handler.options(),
        handler.topic().expect("a payload argument"),
    )
}

/// Generated handlers plug into the service like plain functions.
#[allow(dead_code)]
fn wire(client: RustMqClient) -> Service<AppState> {
    Service::with_state(client, AppState { max_cents: 100 })
        .handler(bill)
        .handler(check_amount)
        .handler(log_order)
}

fn delivery(amount_cents: u64) -> Delivery {
    let order = OrderPlaced {
        order_id: "o-1".into(),
        amount_cents,
    };
    Delivery::new(TypedProducer::to_message(&order).unwrap())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (options, topic) = options_of::<_, _, AppState>(&bill);
    assert_eq!(options.name, "bill");
    assert_eq!(options.group, Some("billing"));
    assert_eq!(options.concurrency, Some(4));
    assert_eq!(options.start, Some(StartFrom::Earliest));
    assert_eq!(topic, TopicInfo::of::<OrderPlaced>());

    let (options, _) = options_of::<_, _, AppState>(&check_amount);
    assert_eq!(options, HandlerOptions::new("check_amount").start_latest());
    let (options, _) = options_of::<_, _, ()>(&log_order);
    assert_eq!(options, HandlerOptions::new("log_order"));

    // `Handler::call` spelled out: `check_amount.call(..)` would also name the unstable
    // `Fn::call` (a future-compatibility warning), as for any callable value.
    let state = AppState { max_cents: 100 };
    let settled = Handler::call(&check_amount, delivery(5), state.clone());
    assert_eq!(settled.await.unwrap(), Settlement::Ack);
    let settled = Handler::call(&check_amount, delivery(500), state.clone());
    assert_eq!(
        settled.await.unwrap(),
        Settlement::DeadLetter("too expensive".into())
    );
    // Producers need a broker: the extractor fails and so the call does.
    assert!(Handler::call(&bill, delivery(5), state).await.is_err());

    // The function itself stays callable.
    let order = OrderPlaced {
        order_id: "o-2".into(),
        amount_cents: 1,
    };
    log_order::handle(order, Headers::default()).await;
    let _: bill = bill.clone();
    assert_eq!(format!("{log_order:?}"), "log_order");
}
