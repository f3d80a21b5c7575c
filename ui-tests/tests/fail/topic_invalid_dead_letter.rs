use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders", dead_letter = "..")]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
