use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(key = "order_id")]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
