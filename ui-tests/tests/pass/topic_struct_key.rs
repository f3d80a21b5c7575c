//! A struct with every `#[topic]` option, spread over two attributes.

use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "orders", key = "order_id", codec = "json")]
#[topic(partitions = 3, dead_letter = "orders.failed")]
struct OrderPlaced {
    order_id: String,
    amount_cents: u64,
}

/// Keys can be borrowed and raw identifiers name their field without `r#`.
#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "tags", key = "type")]
struct Tagged {
    r#type: u32,
}

/// An `Option` key: `None` is no key at all (the message is spread over partitions), not
/// the empty key, which `Some(String::new())` still is.
#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "visits", key = "customer")]
struct Visit {
    customer: Option<String>,
}

/// No key, no options: only the name.
#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "pings")]
struct Ping;

fn main() {
    assert_eq!(OrderPlaced::NAME, "orders");
    assert_eq!(OrderPlaced::PARTITIONS, Some(3));
    assert_eq!(OrderPlaced::DEAD_LETTER, Some("orders.failed"));
    let order = OrderPlaced {
        order_id: "o-1".into(),
        amount_cents: 5,
    };
    assert_eq!(order.key().as_deref(), Some(&b"o-1"[..]));
    assert_eq!(Tagged { r#type: 42 }.key().as_deref(), Some(&b"42"[..]));
    assert_eq!(Ping.key(), None);
    assert_eq!(Visit { customer: None }.key(), None);
    let some = Visit {
        customer: Some("c-7".into()),
    };
    assert_eq!(some.key().as_deref(), Some(&b"c-7"[..]));
    let empty = Visit {
        customer: Some(String::new()),
    };
    assert_eq!(empty.key().as_deref(), Some(&b""[..]));
    assert_eq!((Ping::PARTITIONS, Ping::DEAD_LETTER), (None, None));
}
