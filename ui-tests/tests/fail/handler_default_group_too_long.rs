use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(
    name = "a-topic-whose-name-is-long-enough-that-its-handlers-default-group-name-runs-over-the-limit-of-120-bytes-that-the-broker-sets"
)]
struct LongNamed {
    n: u32,
}

// No `group`: the default, "<topic>.on_long_named", is longer than brokers take.
#[handler]
async fn on_long_named(event: LongNamed) {
    let _ = event;
}

// With a group of its own, the same payload is fine.
#[handler(group = "long-named")]
async fn grouped(event: LongNamed) {
    let _ = event;
}

fn main() {}
