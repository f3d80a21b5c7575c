use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
