use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[handler(group = "billing", group = "invoicing")]
async fn bill(order: OrderPlaced) {
    let _ = order;
}

fn main() {}
