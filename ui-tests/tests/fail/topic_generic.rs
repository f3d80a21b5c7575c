use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "envelopes")]
struct Envelope<T> {
    inner: T,
}

fn main() {}
