use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders", key = "order_di")]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
