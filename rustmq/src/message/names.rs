//! [`TopicName`] and [`MessageId`]: a message's topic and id, shared and made lazily instead of
//! a `String` allocated (and an id formatted) for every message sent or received.

use std::borrow::{Borrow, Cow};
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// A topic's name. Cloning it is a reference count (or a copy, for a name made with
/// [`TopicName::from_static`]): the messages of one topic share one name (a consumer's
/// messages share its topic's, and messages built with a `TopicName` share that one) instead
/// of each holding its own copy.
///
/// It reads as a `&str` (`Deref`, `AsRef`, `Borrow`, `Display`) and compares with strings:
///
/// ```
/// use rustmq::{Message, TopicName};
///
/// const ORDERS: TopicName = TopicName::from_static("orders");
///
/// let message = Message::builder().topic(ORDERS).payload("x").build()?;
/// assert_eq!(message.topic, "orders");
/// assert!(message.topic.starts_with("ord"));
/// let name: String = message.topic.into();
///
/// // A name known only at run time: made once, shared by every message built with it.
/// let topic = TopicName::from(format!("orders-{}", 7));
/// let message = Message::builder().topic(topic.clone()).build()?;
/// assert!(message.topic.ptr_eq(&topic));
/// # Ok::<(), rustmq::ClientError>(())
/// ```
#[derive(Clone)]
pub struct TopicName(Name);

/// The name, and whether it is a valid topic name (checked once, when the name is made,
/// rather than for every message built with it).
#[derive(Clone)]
enum Name {
    Static(&'static str, bool),
    Shared(Arc<str>, bool),
}

impl Name {
    fn shared(name: Arc<str>) -> Self {
        let valid = is_valid_topic(&name);
        Name::Shared(name, valid)
    }
}

/// Whether `name` is a valid topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(crate) const fn is_valid_topic(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > super::MAX_TOPIC_NAME_LEN {
        return false;
    }
    if matches!(bytes, [b'.'] | [b'.', b'.']) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

impl TopicName {
    /// A name from a `&'static str`, without an allocation (usable in a `const`).
    pub const fn from_static(name: &'static str) -> Self {
        TopicName(Name::Static(name, is_valid_topic(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(name, _) => name,
            Name::Shared(name, _) => name,
        }
    }

    /// Whether this is a valid topic name (as [`validate_topic`](super::validate_topic)
    /// checks; known since the name was made).
    pub fn is_valid(&self) -> bool {
        match self.0 {
            Name::Static(_, valid) | Name::Shared(_, valid) => valid,
        }
    }

    /// Whether `self` and `other` share one name (then they are equal without comparing their
    /// text).
    pub fn ptr_eq(&self, other: &TopicName) -> bool {
        match (&self.0, &other.0) {
            (Name::Static(a, _), Name::Static(b, _)) => std::ptr::eq(*a, *b),
            (Name::Shared(a, _), Name::Shared(b, _)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Default for TopicName {
    fn default() -> Self {
        TopicName::from_static("")
    }
}

impl PartialEq for TopicName {
    fn eq(&self, other: &TopicName) -> bool {
        self.ptr_eq(other) || self.as_str() == other.as_str()
    }
}

impl Eq for TopicName {}

impl PartialOrd for TopicName {
    fn partial_cmp(&self, other: &TopicName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TopicName {
    fn cmp(&self, other: &TopicName) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for TopicName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Deref for TopicName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: width, fill and precision apply, as they do to a `String`.
        f.pad(self.as_str())
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for TopicName {
    fn from(name: &str) -> Self {
        TopicName(Name::shared(name.into()))
    }
}

impl From<&String> for TopicName {
    fn from(name: &String) -> Self {
        TopicName(Name::shared(name.as_str().into()))
    }
}

impl From<String> for TopicName {
    fn from(name: String) -> Self {
        TopicName(Name::shared(name.into()))
    }
}

impl From<Arc<str>> for TopicName {
    fn from(name: Arc<str>) -> Self {
        TopicName(Name::shared(name))
    }
}

impl From<Box<str>> for TopicName {
    fn from(name: Box<str>) -> Self {
        TopicName(Name::shared(name.into()))
    }
}

impl From<Cow<'_, str>> for TopicName {
    fn from(name: Cow<'_, str>) -> Self {
        TopicName(Name::shared(name.into()))
    }
}

impl From<&TopicName> for TopicName {
    fn from(name: &TopicName) -> Self {
        name.clone()
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> Self {
        name.as_str().to_owned()
    }
}

impl From<TopicName> for Arc<str> {
    fn from(name: TopicName) -> Self {
        match name.0 {
            Name::Static(name, _) => name.into(),
            Name::Shared(name, _) => name,
        }
    }
}

macro_rules! eq_with_strings {
    ($($other:ty),*) => {$(
        impl PartialEq<$other> for TopicName {
            fn eq(&self, other: &$other) -> bool {
                self.as_str() == &**other
            }
        }
        impl PartialEq<TopicName> for $other {
            fn eq(&self, other: &TopicName) -> bool {
                &**self == other.as_str()
            }
        }
    )*};
}
eq_with_strings!(&str, String);

impl PartialEq<str> for TopicName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<TopicName> for str {
    fn eq(&self, other: &TopicName) -> bool {
        self == other.as_str()
    }
}

/// A message's id: for a message built here, 128 random bits (32 hex digits); for a received
/// message, `topic-partition-offset`, unique for every stored record; or the text given to
/// [`MessageBuilder::id`](super::MessageBuilder::id).
///
/// Its text is made only when asked for (`Display`, `to_string`), not for every message. Ids
/// compare (with each other and with strings) and hash by that text.
///
/// ```
/// use rustmq::Message;
///
/// let message = Message::builder().topic("orders").id("order-7").build()?;
/// assert_eq!(message.id, "order-7");
/// assert_eq!(format!("{}", message.id), "order-7");
/// assert_eq!(Message::builder().topic("orders").build()?.id.to_string().len(), 32);
/// # Ok::<(), rustmq::ClientError>(())
/// ```
#[derive(Clone)]
pub struct MessageId(Repr);

#[derive(Clone)]
enum Repr {
    /// 128 random bits, as two words (a `u128` would align the id, and so every `Message`, to
    /// 16 bytes).
    Random(u64, u64),
    Position {
        topic: TopicName,
        partition: u32,
        offset: u64,
    },
    Text(Arc<str>),
}

impl MessageId {
    /// A new random id.
    pub fn random() -> Self {
        MessageId(Repr::Random(fastrand::u64(..), fastrand::u64(..)))
    }

    /// The id of the record at `offset` of `topic`'s `partition`: `topic-partition-offset`.
    pub fn position(topic: TopicName, partition: u32, offset: u64) -> Self {
        MessageId(Repr::Position {
            topic,
            partition,
            offset,
        })
    }

    /// Runs `f` on the id's text, formatted on the stack when it is not stored as text.
    fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match &self.0 {
            Repr::Text(text) => f(text),
            Repr::Random(..) | Repr::Position { .. } => {
                let mut text = StackText::default();
                // Writing to a `StackText` only fails past its capacity, and then it spills.
                let _ = write!(text, "{self}");
                f(text.as_str())
            }
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_some() || f.precision().is_some() {
            // Padded or cut as a `String` would be: the text is made first.
            return self.with_text(|text| f.pad(text));
        }
        match &self.0 {
            Repr::Random(high, low) => write!(f, "{high:016x}{low:016x}"),
            Repr::Position {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}-{partition}-{offset}"),
            Repr::Text(text) => f.write_str(text),
        }
    }
}

impl PartialOrd for MessageId {
    fn partial_cmp(&self, other: &MessageId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By text, as the ids' `String`s compared.
impl Ord for MessageId {
    fn cmp(&self, other: &MessageId) -> std::cmp::Ordering {
        self.with_text(|a| other.with_text(|b| a.cmp(b)))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|text| fmt::Debug::fmt(text, f))
    }
}

impl PartialEq for MessageId {
    fn eq(&self, other: &MessageId) -> bool {
        match (&self.0, &other.0) {
            (Repr::Random(h1, l1), Repr::Random(h2, l2)) => h1 == h2 && l1 == l2,
            (
                Repr::Position {
                    topic: t1,
                    partition: p1,
                    offset: o1,
                },
                Repr::Position {
                    topic: t2,
                    partition: p2,
                    offset: o2,
                },
            ) => p1 == p2 && o1 == o2 && t1 == t2,
            _ => self.with_text(|a| other.with_text(|b| a == b)),
        }
    }
}

impl Eq for MessageId {}

impl Hash for MessageId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.with_text(|text| text.hash(state));
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        self.with_text(|text| text == other)
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.with_text(|text| text == *other)
    }
}

impl PartialEq<String> for MessageId {
    fn eq(&self, other: &String) -> bool {
        self.with_text(|text| text == other)
    }
}

impl PartialEq<MessageId> for str {
    fn eq(&self, other: &MessageId) -> bool {
        other == self
    }
}

impl PartialEq<MessageId> for &str {
    fn eq(&self, other: &MessageId) -> bool {
        other == *self
    }
}

impl PartialEq<MessageId> for String {
    fn eq(&self, other: &MessageId) -> bool {
        other == self
    }
}

impl From<&str> for MessageId {
    fn from(text: &str) -> Self {
        MessageId(Repr::Text(text.into()))
    }
}

impl From<String> for MessageId {
    fn from(text: String) -> Self {
        MessageId(Repr::Text(text.into()))
    }
}

impl From<&String> for MessageId {
    fn from(text: &String) -> Self {
        MessageId(Repr::Text(text.as_str().into()))
    }
}

impl From<Box<str>> for MessageId {
    fn from(text: Box<str>) -> Self {
        MessageId(Repr::Text(text.into()))
    }
}

impl From<Arc<str>> for MessageId {
    fn from(text: Arc<str>) -> Self {
        MessageId(Repr::Text(text))
    }
}

impl From<Cow<'_, str>> for MessageId {
    fn from(text: Cow<'_, str>) -> Self {
        MessageId(Repr::Text(text.into()))
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> Self {
        id.to_string()
    }
}

/// Text formatted on the stack while it fits (every random or position id with a topic of up
/// to ~200 bytes), else on the heap.
struct StackText {
    buf: [u8; 256],
    len: usize,
    spilled: Option<String>,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 256],
            len: 0,
            spilled: None,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        match &self.spilled {
            Some(text) => text,
            // Only whole `&str`s are copied in, so the bytes are UTF-8.
            None => std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default(),
        }
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(text) = &mut self.spilled {
            text.push_str(s);
        } else if let Some(room) = self.buf.get_mut(self.len..self.len + s.len()) {
            room.copy_from_slice(s.as_bytes());
            self.len += s.len();
        } else {
            let mut text = String::with_capacity(self.len + s.len());
            text.push_str(std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default());
            text.push_str(s);
            self.spilled = Some(text);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_read_compare_and_hash_as_their_text() {
        let position = MessageId::position("orders".into(), 3, 42);
        assert_eq!(position.to_string(), "orders-3-42");
        assert_eq!(position, "orders-3-42");
        assert_eq!(position, MessageId::from("orders-3-42"));
        assert_ne!(position, MessageId::position("orders".into(), 3, 43));
        assert_eq!(format!("{position:?}"), "\"orders-3-42\"");
        assert_eq!("orders-3-42", position);
        assert_eq!(
            format!("[{position:>12}] [{position:.6}]"),
            "[ orders-3-42] [orders]"
        );
        let (a, b) = (MessageId::from("a"), MessageId::position("b".into(), 0, 0));
        assert!(a < b);
        assert!(position < MessageId::position("orders".into(), 3, 5));

        let random = MessageId::random();
        let text = random.to_string();
        assert_eq!(text.len(), 32);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(random, MessageId::from(text.clone()));
        assert_ne!(random, MessageId::random());

        let set: HashSet<MessageId> = [position.clone(), MessageId::from("orders-3-42")].into();
        assert_eq!(set.len(), 1);

        // A topic longer than the stack buffer spills to the heap and still reads whole.
        let long = "t".repeat(249);
        let id = MessageId::position(long.as_str().into(), 1, u64::MAX);
        assert_eq!(id, format!("{long}-1-{}", u64::MAX));
    }

    #[test]
    fn topic_names_share_one_allocation_and_read_as_strings() {
        let name = TopicName::from("orders");
        let copy = name.clone();
        assert!(name.ptr_eq(&copy));
        assert!(!name.ptr_eq(&TopicName::from("orders")));
        assert_eq!(name, TopicName::from(String::from("orders")));
        assert_eq!(name, "orders");
        assert_eq!("orders", name);
        assert_eq!(name, String::from("orders"));
        assert_eq!(format!("{name} {name:?}"), "orders \"orders\"");
        assert_eq!(format!("[{name:<8}] [{name:.3}]"), "[orders  ] [ord]");
        let set: HashSet<TopicName> = [name.clone()].into();
        assert!(set.contains("orders"));
        assert_eq!(String::from(copy), "orders");

        const STATIC: TopicName = TopicName::from_static("orders");
        assert!(STATIC.is_valid() && name.is_valid());
        for bad in ["", ".", "..", "a b", "ü"] {
            assert!(!TopicName::from(bad).is_valid(), "{bad:?}");
        }
        assert!(!TopicName::from_static("a/b").is_valid());
        assert!(TopicName::from("..a").is_valid());
        assert!(TopicName::from("t".repeat(249)).is_valid());
        assert!(!TopicName::from("t".repeat(250)).is_valid());
        assert_eq!(STATIC, name);
        assert!(STATIC.ptr_eq(&STATIC.clone()));
        assert!(!STATIC.ptr_eq(&name));
        assert!(set.contains(&STATIC));
    }
}
