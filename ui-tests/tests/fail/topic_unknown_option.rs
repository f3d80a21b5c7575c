use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders", partition = 3)]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
