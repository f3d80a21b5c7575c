//! An enum's key field is in every variant, wherever it is declared; tuple variants use an index.

use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders.events", key = "order_id")]
enum OrderEvent {
    Placed { order_id: String, amount_cents: u64 },
    Cancelled { reason: String, order_id: String },
}

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "readings", key = 0)]
enum Reading {
    Celsius(String, f64),
    Kelvin(String, f64),
}

/// An enum without a key (unit variants are fine then).
#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "signals")]
enum Signal {
    Start,
    Stop,
}

fn main() {
    let placed = OrderEvent::Placed {
        order_id: "a".into(),
        amount_cents: 1,
    };
    let cancelled = OrderEvent::Cancelled {
        reason: "late".into(),
        order_id: "b".into(),
    };
    assert_eq!(placed.key().as_deref(), Some(&b"a"[..]));
    assert_eq!(cancelled.key().as_deref(), Some(&b"b"[..]));
    assert_eq!(
        Reading::Kelvin("k-1".into(), 3.0).key().as_deref(),
        Some(&b"k-1"[..])
    );
    assert_eq!(
        Reading::Celsius("c-1".into(), 3.0).key().as_deref(),
        Some(&b"c-1"[..])
    );
    assert!(Signal::Start.key().is_none() && Signal::Stop.key().is_none());
}
