use rustmq::Topic;
use serde::{Deserialize, Serialize};

/// A valid name (246 characters), whose default dead-letter topic (`<name>.dlq`) is not.
#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo")]
struct OrderPlaced {
    order_id: String,
}

/// The same name with a dead-letter topic of its own is fine.
#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo", dead_letter = "orders.dlq")]
struct OrderPlacedWithDeadLetter {
    order_id: String,
}

fn main() {}
