use rustmq::{handler, Metadata, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[handler]
async fn bill(order: OrderPlaced, meta: impl Into<Metadata>) {
    let _ = (order, meta.into());
}

fn main() {}
