use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders", partitions = 10001)]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
