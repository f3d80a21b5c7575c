use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[handler(group = "billing", crate = "rustmq::<T>")]
async fn bill(order: OrderPlaced) {
    let _ = order;
}

#[handler(crate = rustmq)]
async fn audit(order: OrderPlaced) {
    let _ = order;
}

fn main() {}
