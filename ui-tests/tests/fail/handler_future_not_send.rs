use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

async fn audit() {}

#[handler]
async fn bill(order: OrderPlaced) {
    let shared = std::rc::Rc::new(order);
    audit().await;
    let _ = shared;
}

fn main() {}
