//! Messages: what producers send and consumers receive.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::{ClientError, Result};

mod names;

pub use names::{MessageId, TopicName};

/// Longest topic name accepted (the broker's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A message: topic, optional key, payload, string headers and a timestamp.
///
/// Build one with [`Message::builder`]; consumers receive them with `partition` and `offset`
/// filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Identifies this message: random unless set with [`MessageBuilder::id`]; a received
    /// message's is `topic-partition-offset`, unique for every stored record. Its text is made
    /// when it is displayed, not for every message.
    pub id: MessageId,
    /// Topic the message is sent to or was read from (shared, not copied, by the messages of
    /// a topic: see [`TopicName`]).
    pub topic: TopicName,
    /// Partition: the one it was read from, or an explicit target set with
    /// [`MessageBuilder::partition`].
    pub partition: u32,
    /// Offset in the partition (received messages; 0 before sending).
    pub offset: u64,
    /// Optional key: messages with the same key go to the same partition.
    pub key: Option<Bytes>,
    /// The payload, shared without copying.
    pub payload: Bytes,
    /// Headers.
    pub headers: HashMap<String, String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    pub(crate) explicit_partition: bool,
}

/// Milliseconds since the Unix epoch, now.
///
/// Every message built reads it, so it is cheap: the system clock is read once a second per
/// thread, and in between the time since is taken from the CPU's timestamp counter (`quanta`,
/// where the CPU has a stable one; the monotonic clock otherwise). A system-clock read cost
/// ~50 ns on the VMs we measure on, 5% of W1's time. The counter runs within a fraction of a
/// millisecond per second of the system clock; a step of the system clock (a manual set, not
/// NTP's slewing) shows up to a second late.
pub fn now_ms() -> u64 {
    const RESYNC: std::time::Duration = std::time::Duration::from_secs(1);
    thread_local! {
        // A counter reading and the system time (µs since the epoch) read with it.
        static ANCHOR: std::cell::Cell<Option<(quanta::Instant, u64)>> =
            const { std::cell::Cell::new(None) };
    }
    let now = quanta::Instant::now();
    ANCHOR.with(|anchor| {
        if let Some((at, unix_us)) = anchor.get() {
            let since = now.saturating_duration_since(at);
            if since < RESYNC {
                return (unix_us + since.as_micros() as u64) / 1_000;
            }
        }
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        anchor.set(Some((now, unix_us)));
        unix_us / 1_000
    })
}

impl Message {
    /// Starts building a message.
    ///
    /// ```
    /// use rustmq::Message;
    ///
    /// let message = Message::builder()
    ///     .topic("user-events")
    ///     .key("user-123")
    ///     .payload("hello")
    ///     .header("event-type", "user-registration")
    ///     .build()?;
    /// assert_eq!(message.payload_as_string()?, "hello");
    /// assert_eq!(message.get_header("event-type"), Some(&"user-registration".to_string()));
    /// # Ok::<(), rustmq::ClientError>(())
    /// ```
    #[inline]
    pub fn builder() -> MessageBuilder {
        MessageBuilder::default()
    }

    /// Takes this message's contents, leaving an empty message (no topic, no payload) in its
    /// place: for the producer's rare paths that must own a message it was lent.
    pub(crate) fn take(&mut self) -> Message {
        std::mem::replace(
            self,
            Message {
                id: MessageId::position(TopicName::default(), 0, 0),
                topic: TopicName::default(),
                partition: 0,
                offset: 0,
                key: None,
                payload: Bytes::new(),
                headers: HashMap::new(),
                timestamp: 0,
                explicit_partition: false,
            },
        )
    }

    /// A message read from `topic`/`partition` at `offset` (used by the consumer); its id is
    /// `topic-partition-offset`.
    #[inline(always)]
    pub(crate) fn received(
        topic: TopicName,
        partition: u32,
        offset: u64,
        key: Option<Bytes>,
        payload: Bytes,
        headers: HashMap<String, String>,
        timestamp: u64,
    ) -> Message {
        Message {
            id: MessageId::position(topic.clone(), partition, offset),
            topic,
            partition,
            offset,
            key,
            payload,
            headers,
            timestamp,
            explicit_partition: false,
        }
    }

    /// The payload as UTF-8 text.
    pub fn payload_as_string(&self) -> Result<String> {
        std::str::from_utf8(&self.payload)
            .map(str::to_owned)
            .map_err(|e| ClientError::Deserialization(format!("payload is not utf-8: {e}")))
    }

    /// A header's value.
    pub fn get_header(&self, name: &str) -> Option<&String> {
        self.headers.get(name)
    }

    /// The key as UTF-8 text, if there is a key and it is text.
    pub fn key_as_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// Whether the partition was chosen explicitly by the sender.
    pub fn has_explicit_partition(&self) -> bool {
        self.explicit_partition
    }

    /// Payload plus key plus headers, in bytes: what counts against `max_message_size`.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// A JSON object with every field; the payload and key are strings when they are UTF-8,
    /// otherwise `payload_hex` / `key_hex`.
    pub fn to_json(&self) -> Result<String> {
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), self.id.to_string().into());
        obj.insert("topic".into(), self.topic.to_string().into());
        obj.insert("partition".into(), self.partition.into());
        obj.insert("offset".into(), self.offset.into());
        obj.insert("timestamp".into(), self.timestamp.into());
        for (name, value) in [("key", self.key.as_ref()), ("payload", Some(&self.payload))] {
            match value.map(|v| std::str::from_utf8(v)) {
                None => {
                    obj.insert(name.into(), serde_json::Value::Null);
                }
                Some(Ok(text)) => {
                    obj.insert(name.into(), text.into());
                }
                Some(Err(_)) => {
                    let hex: String = value
                        .into_iter()
                        .flat_map(|v| v.iter())
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    obj.insert(format!("{name}_hex"), hex.into());
                }
            }
        }
        let mut headers: Vec<_> = self.headers.iter().collect();
        headers.sort();
        obj.insert(
            "headers".into(),
            headers
                .into_iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        );
        serde_json::to_string(&obj).map_err(|e| ClientError::Serialization(e.to_string()))
    }
}

/// Bytes a payload or key can be made from: text, byte vectors and slices, and [`Bytes`]
/// (taken without copying).
pub trait IntoPayload {
    /// The bytes.
    fn into_payload(self) -> Bytes;
}

impl IntoPayload for Bytes {
    fn into_payload(self) -> Bytes {
        self
    }
}
impl IntoPayload for Vec<u8> {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}
impl IntoPayload for String {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}
impl IntoPayload for &str {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}
impl IntoPayload for &String {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}
impl IntoPayload for &[u8] {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
impl IntoPayload for &Vec<u8> {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
impl<const N: usize> IntoPayload for &[u8; N] {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

/// Builds a [`Message`]; [`MessageBuilder::build`] validates it.
#[derive(Debug, Default, Clone)]
pub struct MessageBuilder {
    topic: Option<TopicName>,
    key: Option<Bytes>,
    payload: Option<Bytes>,
    headers: HashMap<String, String>,
    timestamp: Option<u64>,
    partition: Option<u32>,
    id: Option<MessageId>,
}

impl MessageBuilder {
    /// The topic (required).
    pub fn topic(mut self, topic: impl Into<TopicName>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The key; messages with equal keys land on the same partition.
    pub fn key(mut self, key: impl IntoPayload) -> Self {
        self.key = Some(key.into_payload());
        self
    }

    /// The payload (empty if never set).
    pub fn payload(mut self, payload: impl IntoPayload) -> Self {
        self.payload = Some(payload.into_payload());
        self
    }

    /// Adds a header; a later value for the same name replaces the earlier one.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Adds several headers.
    pub fn headers<K: Into<String>, V: Into<String>>(
        mut self,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.headers
            .extend(headers.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The timestamp in milliseconds since the Unix epoch (default: now).
    #[inline]
    pub fn timestamp(mut self, ms: u64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Sends to this partition, bypassing the partitioner.
    #[inline]
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the id instead of a generated one.
    pub fn id(mut self, id: impl Into<MessageId>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Validates and returns the message.
    #[inline]
    pub fn build(self) -> Result<Message> {
        let topic = self
            .topic
            .ok_or_else(|| ClientError::InvalidMessage("a message needs a topic".into()))?;
        if !topic.is_valid() {
            return Err(invalid_topic(&topic));
        }
        if let Some(name) = self.headers.keys().find(|k| k.is_empty()) {
            return Err(ClientError::InvalidMessage(format!(
                "empty header name (value {:?})",
                self.headers[name]
            )));
        }
        if self.timestamp.is_some_and(|t| t > i64::MAX as u64) {
            return Err(ClientError::InvalidMessage("timestamp out of range".into()));
        }
        Ok(Message {
            id: self.id.unwrap_or_else(MessageId::random),
            topic,
            partition: self.partition.unwrap_or(0),
            offset: 0,
            key: self.key,
            payload: self.payload.unwrap_or_default(),
            headers: self.headers,
            timestamp: self.timestamp.unwrap_or_else(now_ms),
            explicit_partition: self.partition.is_some(),
        })
    }
}

/// Checks a topic name as the broker will: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<()> {
    if names::is_valid_topic(topic) {
        Ok(())
    } else {
        Err(invalid_topic(topic))
    }
}

fn invalid_topic(topic: &str) -> ClientError {
    ClientError::InvalidMessage(format!(
        "invalid topic name {topic:?}: use 1 to {MAX_TOPIC_NAME_LEN} characters of [A-Za-z0-9._-]"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    /// The counter-based clock stays within two milliseconds of the system clock it is
    /// anchored to (truncation and the counter's calibration), on a fresh thread and after a
    /// resynchronisation.
    #[test]
    fn now_ms_follows_the_system_clock() {
        std::thread::spawn(|| {
            for round in 0..3 {
                for _ in 0..1_000 {
                    let before = system_ms();
                    let ours = now_ms();
                    let after = system_ms();
                    assert!(
                        before.saturating_sub(2) <= ours && ours <= after + 2,
                        "round {round}: {before} <= {ours} <= {after}"
                    );
                }
                // Past the one-second resynchronisation.
                std::thread::sleep(std::time::Duration::from_millis(600));
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn ids_are_hex_and_received_ids_name_the_record() {
        let (a, b) = (
            MessageId::random().to_string(),
            MessageId::random().to_string(),
        );
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        let received = |topic: &str, partition, offset| {
            Message::received(
                topic.into(),
                partition,
                offset,
                None,
                Bytes::new(),
                HashMap::new(),
                0,
            )
            .id
            .to_string()
        };
        assert_eq!(
            received("orders", 7, u64::MAX),
            format!("orders-7-{}", u64::MAX)
        );
        assert_eq!(received("t", 0, 0), "t-0-0");
    }

    #[test]
    fn builder_validates() {
        assert!(Message::builder().payload("x").build().is_err());
        assert!(Message::builder().topic("bad topic").build().is_err());
        assert!(Message::builder()
            .topic("t")
            .header("", "v")
            .build()
            .is_err());
        let m = Message::builder().topic("t").build().unwrap();
        assert!(m.payload.is_empty() && m.timestamp > 0 && !m.id.to_string().is_empty());
    }

    #[test]
    fn bytes_payload_is_not_copied() {
        let payload = Bytes::from(vec![7u8; 1024]);
        let m = Message::builder()
            .topic("t")
            .payload(payload.clone())
            .build()
            .unwrap();
        assert_eq!(m.payload.as_ptr(), payload.as_ptr());
    }

    #[test]
    fn json_shows_text_and_hex() {
        let m = Message::builder()
            .topic("t")
            .key(&[0xffu8, 0x00])
            .payload("hi")
            .header("a", "b")
            .timestamp(5)
            .id("m1")
            .build()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&m.to_json().unwrap()).unwrap();
        assert_eq!(v["payload"], "hi");
        assert_eq!(v["key_hex"], "ff00");
        assert_eq!(v["headers"]["a"], "b");
        assert_eq!(v["timestamp"], 5);
    }
}
