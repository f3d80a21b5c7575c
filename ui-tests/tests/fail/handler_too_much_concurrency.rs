use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[handler(concurrency = 1_000_000_000_000)]
async fn bill(order: OrderPlaced) {
    let _ = order;
}

fn main() {}
