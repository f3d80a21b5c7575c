//! Each built-in codec, chosen by name, round-trips its payload.

use rustmq::codec::{Bincode, Codec, Json, Postcard};
use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "as.json")]
struct DefaultJson {
    n: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "as.json.explicit", codec = "json")]
struct ExplicitJson {
    n: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "as.bincode", codec = "bincode")]
struct WithBincode {
    n: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "as.postcard", codec = "postcard")]
struct WithPostcard {
    n: u32,
}

fn same<A: 'static, B: 'static>() -> bool {
    std::any::TypeId::of::<A>() == std::any::TypeId::of::<B>()
}

fn round_trip<T: Topic + std::fmt::Debug + PartialEq>(value: T) {
    let bytes = <T::Codec as Codec>::encode(&value).unwrap();
    assert_eq!(<T::Codec as Codec>::decode::<T>(&bytes).unwrap(), value);
}

fn main() {
    assert!(same::<<DefaultJson as Topic>::Codec, Json>());
    assert!(same::<<ExplicitJson as Topic>::Codec, Json>());
    assert!(same::<<WithBincode as Topic>::Codec, Bincode>());
    assert!(same::<<WithPostcard as Topic>::Codec, Postcard>());
    round_trip(DefaultJson { n: 1 });
    round_trip(ExplicitJson { n: 2 });
    round_trip(WithBincode { n: 3 });
    round_trip(WithPostcard { n: 4 });
}
