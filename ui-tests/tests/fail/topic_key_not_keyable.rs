use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "readings", key = "celsius")]
struct Reading {
    celsius: f64,
}

fn main() {}
