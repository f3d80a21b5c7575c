//! Typed topics: a message type that knows its topic, key and codec.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::Codec;

/// A message type bound to a topic. Derive it with `#[derive(Topic)]`:
///
/// ```
/// use rustmq::Topic;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Topic)]
/// #[topic(name = "orders", key = "order_id", partitions = 3)]
/// struct OrderPlaced {
///     order_id: String,
///     amount_cents: u64,
/// }
///
/// assert_eq!(<OrderPlaced as Topic>::NAME, "orders");
/// let order = OrderPlaced { order_id: "o-1".into(), amount_cents: 5 };
/// assert_eq!(order.key().as_deref(), Some(&b"o-1"[..]));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a RustMQ topic",
    label = "this type has no `#[derive(Topic)]`",
    note = "add `#[derive(Serialize, Deserialize, Topic)]` and `#[topic(name = \"...\")]` to `{Self}`"
)]
pub trait Topic: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The topic name.
    const NAME: &'static str;
    /// The codec of its payloads.
    type Codec: Codec;
    /// Partitions to create the topic with when it does not exist (`None`: broker default).
    const PARTITIONS: Option<u32> = None;
    /// The dead-letter topic (`None`: `"<NAME>.dlq"`).
    const DEAD_LETTER: Option<&'static str> = None;

    /// The message key (`None`: no key, spread over partitions).
    fn key(&self) -> Option<Bytes> {
        None
    }
}

/// What the runtime needs to know of a topic type, without the type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: &'static str,
    /// Partitions for creation.
    pub partitions: Option<u32>,
    /// Dead-letter topic.
    pub dead_letter: String,
    /// Codec name.
    pub codec: &'static str,
}

impl TopicInfo {
    /// The info of `T`.
    pub fn of<T: Topic>() -> Self {
        TopicInfo {
            name: T::NAME,
            partitions: T::PARTITIONS,
            dead_letter: T::DEAD_LETTER.map_or_else(|| format!("{}.dlq", T::NAME), str::to_owned),
            codec: <T::Codec as Codec>::NAME,
        }
    }
}

/// Values usable as a message key. Integers are keyed by their decimal text, so that keys
/// read the same in every language.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a message key",
    note = "keys can be strings, byte vectors, `Bytes` or integers"
)]
pub trait TopicKey {
    /// The key's bytes.
    fn key_bytes(&self) -> Bytes;

    /// The message's key: [`key_bytes`](Self::key_bytes), or none at all (an `Option` field
    /// that is `None`: the message is spread over partitions, as a message without a key).
    /// `#[derive(Topic)]`'s `key()` returns this.
    #[inline]
    fn message_key(&self) -> Option<Bytes> {
        Some(self.key_bytes())
    }
}

impl TopicKey for str {
    fn key_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}
impl TopicKey for String {
    fn key_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}
impl TopicKey for [u8] {
    fn key_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
impl<const N: usize> TopicKey for [u8; N] {
    fn key_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
impl TopicKey for Vec<u8> {
    fn key_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
impl TopicKey for Bytes {
    fn key_bytes(&self) -> Bytes {
        self.clone()
    }
}
impl<T: TopicKey + ?Sized> TopicKey for &T {
    fn key_bytes(&self) -> Bytes {
        (**self).key_bytes()
    }
    fn message_key(&self) -> Option<Bytes> {
        (**self).message_key()
    }
}
impl<T: TopicKey + ?Sized> TopicKey for Box<T> {
    fn key_bytes(&self) -> Bytes {
        (**self).key_bytes()
    }
    fn message_key(&self) -> Option<Bytes> {
        (**self).message_key()
    }
}
/// `None` is no key at all: [`message_key`](TopicKey::message_key) is `None` (and
/// `key_bytes`, which must give bytes, gives the empty key).
impl<T: TopicKey> TopicKey for Option<T> {
    fn key_bytes(&self) -> Bytes {
        self.as_ref().map(TopicKey::key_bytes).unwrap_or_default()
    }
    fn message_key(&self) -> Option<Bytes> {
        self.as_ref().and_then(TopicKey::message_key)
    }
}

macro_rules! int_keys {
    ($($t:ty),*) => {$(
        impl TopicKey for $t {
            fn key_bytes(&self) -> Bytes {
                Bytes::from(self.to_string())
            }
        }
    )*};
}
int_keys!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
