//! Handlers named `delivery` and `state`, as the generated code's own parameters once were:
//! the unit struct each `#[handler]` makes is in the value namespace too, so a generated
//! binding of that name was read as a pattern of it (and every `#[derive(Topic)]` and
//! `#[handler]` of the module failed to compile).

#![allow(dead_code, non_camel_case_types)]

use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "deliveries")]
struct DeliveryScheduled {
    id: u64,
}

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "states")]
struct StateChanged {
    id: u64,
}

#[handler]
async fn delivery(e: DeliveryScheduled) {
    let _ = e.id;
}

#[handler]
async fn state(c: StateChanged) {
    let _ = c.id;
}

fn main() {}
