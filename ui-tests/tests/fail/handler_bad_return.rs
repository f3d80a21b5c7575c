use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[handler]
async fn bill(order: OrderPlaced) -> i32 {
    order.order_id.len() as i32
}

fn main() {}
