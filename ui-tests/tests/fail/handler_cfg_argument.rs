use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[handler]
async fn bill(order: OrderPlaced, #[cfg(any())] meta: rustmq::typed::Metadata) {
    let _ = order;
}

fn main() {}
