use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[handler]
async fn bill<T: Send>(order: OrderPlaced) {
    let _ = order;
}

fn main() {}
