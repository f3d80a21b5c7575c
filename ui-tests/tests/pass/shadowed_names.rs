//! The generated code does not depend on the user's names: prelude types, traits and even
//! `core` are shadowed here, and primitive types in `primitives` (where serde's derives would
//! break, so that module implements serde by hand).

#![allow(dead_code, non_camel_case_types, unused_imports)]

use rustmq::{handler, Metadata, Topic};
use serde::{Deserialize, Serialize};

#[derive(Debug)]
struct MyError;

impl ::std::fmt::Display for MyError {
    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
        f.write_str("my error")
    }
}

impl ::std::error::Error for MyError {}

type Result<T> = ::std::result::Result<T, MyError>;
struct Option;
struct Some;
struct None;
struct Ok;
struct Err;
struct Box;
struct Vec;
struct String;
trait Clone {}
trait Copy {}
trait Send {}
trait Sync {}
trait Sized {}
trait Debug {}
trait Into {}
trait Future {}
mod core {}

#[derive(Serialize, Deserialize, Topic)]
#[topic(
    name = "orders",
    key = "order_id",
    partitions = 2,
    dead_letter = "orders.bad"
)]
struct OrderPlaced {
    order_id: u64,
}

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "events", key = "id")]
enum Event {
    Created { id: u64 },
    Deleted { id: u64 },
}

#[handler(group = "billing", concurrency = 2)]
async fn bill(order: OrderPlaced, meta: Metadata) -> Result<()> {
    let _ = (order, meta);
    ::core::result::Result::Ok(())
}

mod primitives {
    use rustmq::{handler, Topic};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct u32;
    struct usize;
    struct str;
    struct bool;

    #[derive(Topic)]
    #[topic(
        name = "counters",
        key = "id",
        partitions = 4,
        dead_letter = "counters.dlq"
    )]
    pub struct Counter {
        pub id: u64,
    }

    impl Serialize for Counter {
        fn serialize<S: Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
            self.id.serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for Counter {
        fn deserialize<D: Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
            u64::deserialize(d).map(|id| Counter { id })
        }
    }

    #[handler(group = "counting", concurrency = 3)]
    pub async fn count(counter: Counter) {
        let _ = counter.id;
    }
}

fn main() {
    assert_eq!(
        <primitives::Counter as Topic>::PARTITIONS,
        ::core::option::Option::Some(4)
    );
    let counter = primitives::Counter { id: 12 };
    assert!(counter.key().as_deref() == ::core::option::Option::Some(&b"12"[..]));
    let _ = primitives::count;
    assert_eq!(<OrderPlaced as Topic>::NAME, "orders");
    assert!(<OrderPlaced as Topic>::PARTITIONS == ::core::option::Option::Some(2));
    let key = Topic::key(&Event::Deleted { id: 9 });
    assert!(key.as_deref() == ::core::option::Option::Some(&b"9"[..]));
    let _ = bill;
}
